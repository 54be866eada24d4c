"""TensorCache: put trained layers, look up the best donor for a child, warm-start a module.

A thin facade over parts that each own one piece of state:

* ``Catalog`` (catalog.py): model records and residency, which tier holds which entry;
* ``TierStack`` (stack.py): the tiers fastest first (device, memory, LMDB, Redis), each with its policy;
  every byte movement: admits, reads and checks, promotes a hit from a slower tier, demotes an evicted
  entry, and keeps process-local tiers' decoded layers;
* the tiers (tiers/): byte stores that keep their own books; a shared one (LMDB, Redis) changes them in
  the payloads' transaction and logs each change;
* ``Follower`` (follower.py): reads those logs to learn other processes' work;
* policies hear typed events (events.py), the same ones ``replay`` feeds them.

A put writes to the fastest tier and through to the widest one (the last). Layers read from a
process-local tier are decoded once and kept until they leave that tier.
"""
from __future__ import annotations

import copy
import logging
import time
import uuid
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from .catalog import Catalog, LayerRecord, ModelRecord, check_arch
from .config import CacheConfig
from .events import Donated, EvaluationDone, ModelDescribed, Mutated, PolicyEvent, PopulationChanged
from .follower import Follower
from .hit import Hit, Stored
from .layers import LayerMap
from .payload import encode_parts
from .policies import Policy, make_policy
from .stack import Moves, TierStack
from .tiers import DeviceTier, LMDBTier, MemoryTier, RedisTier, Tier
from .transfer import TransferReport

log = logging.getLogger("tensorcache")

MAX_MODEL_ID_BYTES = 256


class TensorCache:
    """A tiered cache of trained layer tensors keyed by architecture prefixes: ``put`` a trained model's layers,
    ``warm_start`` (or ``lookup`` + ``apply``) a new model from its best donor, the model sharing the longest
    prefix of its architecture, its parent first.

    Tiers, fastest first; each is used only when given:

    - ``memory``: bytes (``"2GB"``, an int) of this process's memory; ``0`` or None for none.
    - ``disk`` / ``disk_capacity``: an LMDB folder shared by the processes of one node, and its size.
    - ``redis`` / ``redis_capacity``: a ``redis://host:port/db`` URL shared by several nodes, and its size.
      ``redis_required`` True raises ``ConnectionError`` when the server cannot be reached; by default the
      cache warns and goes on with its other tiers.
    - ``device_memory`` / ``device``: a tier on a torch device (hits copy device to device, no host round
      trip; for single-node GPU searches). ``device="auto"`` is the GPU when torch sees one, else the CPU;
      it only matters when ``device_memory`` > 0.

    Eviction: ``policy`` is a registered name (``"donor-window"``, ``"evolution-aware"``, ``"lru"``, ...), a
    ``Policy`` subclass or instance (copied per tier); ``policy_options`` are its options (e.g. ``window``).
    ``namespace`` separates searches sharing a disk or Redis tier. ``pinned`` True keeps the memory tier in
    page-locked memory for faster copies to a GPU; ``verify_memory`` True checks every memory hit's digest as
    the other tiers always do. These are the fields of ``CacheConfig``, which holds their defaults (and the
    dict and URL forms): ``TensorCache(config)`` or ``TensorCache(memory=..., ...)``.
    """

    def __init__(self, config: CacheConfig | None = None, /, **settings: Any) -> None:
        """Open the tiers ``config`` describes, or those of ``CacheConfig.from_settings(settings)``: the
        config's fields by name (``memory``, ``disk``, ``redis``, ``policy``, ``policy_options``, ...), whose
        defaults are the only ones. ValueError names a bad value, TypeError an unknown setting."""
        if config is None:
            config = CacheConfig.from_settings(settings)
        elif settings or not isinstance(config, CacheConfig):
            raise TypeError(f"TensorCache takes one CacheConfig or settings by name, got {config!r:.80} and "
                            f"{sorted(settings)}")
        self.config = config
        self.namespace = namespace = config.namespace
        self.verify_memory = config.verify_memory
        sizes = config.capacities()
        mem_size, disk_size, redis_size, device_size = (sizes["memory"], sizes["disk_capacity"],
                                                        sizes["redis_capacity"], sizes["device_memory"])
        disk, redis = config.disk_path, config.redis
        if mem_size <= 0 and device_size <= 0 and disk is None and redis is None:
            raise ValueError("no tier to store into: give memory > 0, device_memory > 0, a disk path or a redis URL")
        tiers: list[Tier] = []
        refused = ""
        try:
            if device_size > 0:
                tiers.append(DeviceTier(device_size, _tier_device(config.device)))
            if mem_size > 0:
                tiers.append(MemoryTier(mem_size, pinned=config.pinned))
            if disk is not None:
                try:
                    tiers.append(LMDBTier(disk, disk_size, namespace=namespace))
                except OSError as exc:  # a damaged file, a path it cannot use: the search goes on without it
                    refused = str(exc)
                    log.error("LMDB tier refused: %s; continuing without it", exc)
            if redis is not None:
                tiers.append(RedisTier(redis, redis_size, namespace=namespace, required=config.redis_required))
        except BaseException:  # e.g. a required Redis is down: release the tiers already opened
            for tier in tiers:
                tier.close()
            raise
        if not tiers:
            raise ValueError(f"no tier could be opened: {refused}")
        # each tier needs its own bookkeeping: a policy object given by the user is copied per tier
        policy, options = config.policy, config.policy_options
        policies = [copy.deepcopy(policy) if isinstance(policy, Policy) else make_policy(policy, **options) for _ in tiers]
        self._catalog = Catalog()
        self._stack = TierStack(tiers, policies, self._catalog, uuid.uuid4().hex, verify=config.verify_memory)
        self._counts = {k: 0 for k in ("puts", "lookups", "hits", "misses", "layers_served", "bytes_served",
                                        "bytes_stored", "corrupt", "dropped_puts", "promotions", "demotions")}
        self._evictions: dict[str, int] = {}
        self._seconds = {"put": 0.0, "lookup": 0.0, "apply": 0.0}
        self._served_by: dict[str, int] = {}
        self._follower = Follower(self._stack)
        self._left_out: set[str] = set()

    # ------------------------------------------------------------------ public API
    @property
    def tiers(self) -> tuple[Tier, ...]:
        """The tiers, fastest first (to inspect them; the cache alone changes what they hold)."""
        return tuple(slot.tier for slot in self._stack.slots)

    def put(self, model_id: str, arch: Sequence[int], layers: Sequence[Mapping[str, Any]] | Mapping[str, Any],
            score: float | None = None, parent: str | None = None, layer_map: LayerMap | None = None) -> Stored:
        """Store a trained model's layers: a list of per-layer ``{name: tensor}`` dicts, or a state dict that
        ``layer_map`` splits. Re-putting a known id with the same tensors stores nothing (``written`` 0); with other
        tensors it is a ValueError, as is any bad input, and nothing is stored."""
        t0 = time.perf_counter()
        arch = check_arch(arch)
        lmap = layer_map if layer_map is not None else LayerMap.generic(len(arch))
        per_layer, left_out = _split(lmap, layers)
        _check_model_id(model_id)
        self._warn_left_out(left_out)
        if score is not None:
            score = float(score)
            if score != score:  # NaN ranks last, as no score does
                score = None
        keys = lmap.keys(self.namespace, arch)
        self._follower.sync()
        blobs: dict[bytes, bytes] = {}
        records = []
        for key, spec, tensors in zip(keys, lmap.layers, per_layer):
            refs, sizes = [], []
            for name, tensor in tensors.items():
                digest, blob, dtype, shape, nbytes, kind = encode_parts(tensor)
                blobs[digest] = blob
                refs.append((name, digest, dtype, shape, nbytes, kind))
                sizes.append(len(blob))
            records.append(LayerRecord.of(key, tuple(refs), spec.depends_on, tuple(sizes)))
        record = ModelRecord(model_id, arch, score, parent, tuple(records), lmap.mode)
        known = self._catalog.record(model_id)
        if known is not None:
            if not known.same_tensors(record):
                raise _other_tensors(model_id, "this cache")
            return Stored(model_id, keys, [layer.blob_bytes for layer in known.layers],
                          [layer.depends_on for layer in known.layers], 0)
        if not record.nbytes:  # a model with no bytes would win lookups and serve nothing: never a donor
            log.warning("model %r has no tensor bytes; not stored", model_id)
            return Stored(model_id, keys, [layer.blob_bytes for layer in records],
                          [layer.depends_on for layer in records], 0)
        self._stack.tell(ModelDescribed(model_id, arch, lmap.mode, len(records), score))
        moves = Moves()
        self._stack.admit(0, record, range(len(records)), blobs, moves)  # the fastest tier
        for i in range(len(self._stack.slots) - 1, 0, -1):  # through to the widest tier that takes it: a shared
            if self._stack.admit(i, record, range(len(records)), blobs, moves):  # tier down leaves it on LMDB
                break
        conflict = next((tier for tier, reason in moves.refused if reason == "conflict"), None)
        if conflict is not None:  # another process put this id with other tensors meanwhile: keep none of ours
            for t in range(len(self._stack.slots)):
                for index in range(len(records)):
                    if self._catalog.holds((model_id, index), t):
                        self._stack.release(t, (model_id, index), "conflict", moves)
            self._count(moves)
            raise _other_tensors(model_id, f"the {conflict} tier")
        self._count(moves)
        self._counts["puts"] += 1
        self._counts["bytes_stored"] += moves.written
        self._seconds["put"] += time.perf_counter() - t0
        return Stored(model_id, keys, [layer.blob_bytes for layer in records],
                      [layer.depends_on for layer in records], moves.written)

    def lookup(self, arch: Sequence[int], parent: str | None = None, layer_map: LayerMap | None = None) -> Hit | None:
        """The best single donor's servable layers for ``arch``, or None on a miss."""
        t0 = time.perf_counter()
        arch = check_arch(arch)
        lmap = layer_map if layer_map is not None else LayerMap.generic(len(arch))
        self._follower.sync()
        self._counts["lookups"] += 1
        hit = self._fetch(lmap.keys(self.namespace, arch), parent, lmap.mode)
        seconds = time.perf_counter() - t0
        self._seconds["lookup"] += seconds
        if hit is None:
            self._counts["misses"] += 1
            return None
        hit.seconds = seconds
        self._counts["hits"] += 1
        self._counts["layers_served"] += len(hit.indices)
        self._counts["bytes_served"] += hit.nbytes
        self._served_by[hit.slowest_tier] = self._served_by.get(hit.slowest_tier, 0) + 1
        return hit

    def best_donor(self, arch: Sequence[int], parent: str | None = None,
                   layer_map: LayerMap | None = None) -> str | None:
        """The donor ``lookup`` would choose now, from the catalog alone (no payload read, no counters):
        lets a scheduler send the child to the worker that already holds that donor."""
        arch = check_arch(arch)
        lmap = layer_map if layer_map is not None else LayerMap.generic(len(arch))
        self._follower.sync()
        found = self._catalog.find(lmap.keys(self.namespace, arch), parent, lmap.mode)
        return None if found is None else found[0]

    def get(self, model_id: str) -> Hit | None:
        """Every layer of a stored model, e.g. a search's best, to keep or load (``hit.state_dict()``,
        ``hit.apply(module)``); None when the model is unknown or one of its layers is no longer held."""
        _check_model_id(model_id)
        t0 = time.perf_counter()
        self._follower.sync()
        record = self._catalog.record(model_id)
        if record is None:
            return None
        hit = self._serve(record, [(i, i) for i in range(len(record.layers))], stop=True)
        if hit is None or len(hit.indices) < len(record.layers):
            log.warning("model %r is no longer whole: a layer of it was evicted or unreadable", model_id)
            return None
        hit.seconds = time.perf_counter() - t0
        return hit

    def warm_start(self, module: Any, arch: Sequence[int], parent: str | None = None,
                   layer_map: LayerMap | None = None, cast: bool = True) -> TransferReport:
        """``lookup`` + ``Hit.apply``: the served layers that fit ``module`` are copied into it, each whole or
        not at all, and the others named in ``report.skipped`` (in prefix mode also every layer after the
        first misfit). ``.layers == 0`` on a miss. ``cast``: a floating-point donor of another dtype (bf16
        into float32) is cast as ``load_state_dict`` does and named in ``report.casts``; False leaves such
        layers out."""
        hit = self.lookup(arch, parent=parent, layer_map=layer_map)
        return TransferReport() if hit is None else hit.apply(module, cast=cast)

    def observe(self, event: PolicyEvent) -> None:
        """Give every tier's policy one typed event (see ``tensorcache.events``)."""
        self._stack.tell(event)

    def notify_evaluation(self) -> None:
        """One evaluation finished: advances sliding windows of the policies."""
        self._stack.tell(EvaluationDone())

    def update_population(self, members: Sequence[tuple[str, float]], population_size: int, sample_size: int) -> None:
        """Tell population-aware policies the evolution's state (members oldest first)."""
        self._stack.tell(PopulationChanged(tuple(members), population_size, sample_size))

    def observe_mutation(self, position: int) -> None:
        """Tell population-aware policies where a child's mutation landed."""
        self._stack.tell(Mutated(position))

    def stats(self) -> dict[str, Any]:
        """Counters: hits, misses, bytes, evictions by tier and reason, seconds spent in calls and CPU seconds of
        the tiers' own threads (``background_cpu_s``), per-tier usage."""
        c: dict[str, Any] = dict(self._counts)
        c["corrupt"] += self._follower.malformed
        c["resyncs"] = self._follower.resyncs
        c["hit_ratio"] = c["hits"] / c["lookups"] if c["lookups"] else 0.0
        c["evictions"] = dict(self._evictions)
        c["served_by_tier"] = dict(self._served_by)
        c["seconds"] = dict(self._seconds)
        c["tiers"] = {s.tier.name: {"used_bytes": s.tier.used_bytes(), "capacity": s.tier.capacity,
                                    "entries": len(s.policy)} for s in self._stack.slots}
        c["models"] = len(self._catalog.models)
        c["background_cpu_s"] = sum(s.tier.background_cpu_s for s in self._stack.slots)
        return c

    def local_models(self) -> frozenset[str]:
        """Ids of the models with a layer in this process's own tiers (memory, device) now: what a scheduler
        places a child near (the worker whose cache reported the child's donor), read from the catalog."""
        local = {i for i, slot in enumerate(self._stack.slots) if not slot.tier.shares_books}
        return frozenset(model for model, _ in self._catalog.held_in(local))

    def check_invariants(self) -> list[str]:
        """Problems found in the cache's bookkeeping, empty when whole: the catalog's own, each tier's books
        against its store (used bytes equal what is held, no orphans), and each process-local tier's
        residency against its policy and decoded layers."""
        self._follower.sync()
        problems = [f"catalog: {p}" for p in self._catalog.check()]
        problems += self._stack.check()
        return problems

    def close(self) -> None:
        """Close every tier (what shared tiers hold stays there)."""
        self._stack.close()

    def __enter__(self) -> TensorCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals
    def _warn_left_out(self, names: list[str]) -> None:
        """Warn once per name about state-dict entries the layer map leaves out (they are never cached)."""
        new = [name for name in names if name not in self._left_out]
        if new:
            self._left_out.update(new)
            warnings.warn(f"the layer map leaves out state-dict entries, which are never cached: {new[:8]}"
                          f"{' ...' if len(new) > 8 else ''} (give a layer_map that names them)", stacklevel=3)

    def _count(self, moves: Moves) -> None:
        for tier, _, reason in moves.released:
            key = f"{tier}:{reason}"
            self._evictions[key] = self._evictions.get(key, 0) + 1
        for tier, reason in moves.refused:
            if reason == "dropped":
                self._counts["dropped_puts"] += 1
            else:
                key = f"{tier}:{reason}"
                self._evictions[key] = self._evictions.get(key, 0) + 1
        self._counts["demotions"] += moves.demotions
        self._counts["promotions"] += moves.promotions
        self._counts["corrupt"] += moves.corrupt

    def _fetch(self, keys: list[bytes], parent: str | None, mode: str) -> Hit | None:
        """The best donor's servable layers; a donor none of whose asked layers could be served (dropped as bad
        or missing, or in a tier that cannot be read now) is passed over for the next best, each at most once."""
        tried: set[str] = set()
        while True:
            found = self._catalog.find(keys, parent, mode, skip=tried)
            if found is None:
                return None
            donor, pairs = found
            record = self._catalog.record(donor)
            assert record is not None
            hit = self._serve(record, pairs, stop=mode == "prefix")
            if hit is not None:
                self._stack.tell(Donated(donor))
                return hit
            tried.add(donor)

    def _serve(self, record: ModelRecord, pairs: Sequence[tuple[int, int]], stop: bool) -> Hit | None:
        """A Hit of ``record``'s readable layers for the (child layer, donor layer) ``pairs`` (``stop``: none
        after the first unreadable one), None if none is readable."""
        layers, indices, tiers, served, slowest = [], [], [], [], 0
        names = [slot.tier.name for slot in self._stack.slots]
        records, nbytes = record.layers, 0
        moves = Moves()
        for (child_index, donor_index), got in zip(pairs, self._stack.read_many(record, [d for _, d in pairs], moves)):
            if got is None:
                if stop:
                    break
                continue
            layer, tier_index = got
            layers.append(layer)
            indices.append(child_index)
            tiers.append(names[tier_index])
            served.append(records[donor_index])
            nbytes += layer.nbytes
            if tier_index > slowest:
                slowest = tier_index
        self._count(moves)
        if not indices:
            return None
        return Hit(record.model_id, _run_length(indices), indices, layers, served, nbytes, names[slowest], 0.0, tiers,
                   stop, self._applied)

    def _applied(self, seconds: float) -> None:
        """A hit of this cache was copied into a module in ``seconds`` (counted as the cache's apply time)."""
        self._seconds["apply"] += seconds


def _split(lmap: LayerMap, layers: Sequence[Mapping[str, Any]] | Mapping[str, Any]
           ) -> tuple[list[Mapping[str, Any]], list[str]]:
    """Per-layer tensor dicts from a list of them or a state dict, and the state-dict entries no layer
    claims; ValueError naming what does not fit."""
    left_out: list[str] = []
    if isinstance(layers, Mapping):
        try:
            per_layer, left_out = lmap.split(layers)
        except KeyError as exc:
            raise ValueError(exc.args[0]) from None
    else:
        per_layer = list(layers)
    if len(per_layer) != len(lmap):
        raise ValueError(f"got {len(per_layer)} layer dicts for a layer map of {len(lmap)} layers")
    for n, tensors in enumerate(per_layer):
        if not isinstance(tensors, Mapping):
            raise ValueError(f"layer {n} must be a dict of tensors by name, got {type(tensors).__name__}")
    on_meta = [name for tensors in per_layer for name, t in tensors.items() if getattr(t, "is_meta", False)]
    if on_meta:
        raise ValueError(f"tensors on the meta device have no values to cache: {on_meta[:8]}"
                         f"{' ...' if len(on_meta) > 8 else ''} (materialise the model first)")
    return per_layer, left_out


def _other_tensors(model_id: str, where: str) -> ValueError:
    """The error of a put whose model id is stored already with other content (nothing of it is kept)."""
    return ValueError(f"model id {model_id!r} is already stored in {where} with other tensors or architecture; "
                      f"model ids must be unique within a namespace (nothing was stored)")


def _check_model_id(model_id: Any) -> None:
    if not isinstance(model_id, str) or not model_id:
        raise ValueError(f"model_id must be a non-empty string, got {model_id!r}")
    if len(model_id.encode()) > MAX_MODEL_ID_BYTES or "\x00" in model_id:
        raise ValueError(f"model_id must be at most {MAX_MODEL_ID_BYTES} bytes without NUL, got {model_id!r:.80}")


def _run_length(indices: Sequence[int]) -> int:
    n = 0
    for n, index in enumerate(indices):
        if index != n:
            return n
    return len(indices)


def _tier_device(device: str) -> str:
    """The device tier's device: ``"auto"`` is the GPU when torch sees one, else the CPU."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
