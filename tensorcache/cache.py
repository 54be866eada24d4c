"""TensorCache: put trained layers, look up the best donor for a child, warm-start a module.

Tiers are ordered fastest first (device, memory, LMDB, Redis). A put writes to the fastest tier and
through to the widest one (the last), whose log also carries the catalog so other processes see the model.
An entry evicted from a tier moves down to the next tier that lacks it; a hit served from a slower tier is
copied up into the faster ones. Each tier has its own policy instance and byte budget. Layers read from a
process-local tier (device, memory) are decoded once and kept until they leave that tier, so a warm start
from them costs little more than the copy.
"""
from __future__ import annotations

import copy
import logging
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .catalog import Catalog, LayerRecord, ModelRecord, TensorRef, decode_event, encode_event
from .layers import LayerMap
from .payload import PayloadError, decode, encode
from .events import (Donated, EvaluationDone, Inserted, LayerServed, ModelDescribed, Mutated, PolicyEvent,
                     PopulationChanged, Removed)
from .policies import Policy, make_policy
from .sizes import parse_size
from .tiers import DeviceTier, LMDBTier, MemoryTier, RedisTier, Tier
from .transfer import Layer, TransferReport, copy_layers

log = logging.getLogger("tensorcache")

Entry = tuple[str, int]  # (model_id, layer index)


@dataclass
class Hit:
    """One donor's servable layers for a child. ``layers[k]`` belongs to child layer ``indices[k]``.

    Tensors are read-only numpy views, or tensors on the device tier's device when served from there."""

    donor: str
    prefix_len: int
    indices: list[int]
    served: list[Layer] = field(repr=False)  # shared with the cache: read only
    nbytes: int
    tier: str
    seconds: float
    tiers: list[str] = field(default_factory=list, repr=False)  # tier that served each layer, as ``indices``

    @property
    def layers(self) -> list[dict[str, Any]]:
        """Each served layer's tensors by name."""
        return [dict(layer.arrays) for layer in self.served]

    @property
    def dtypes(self) -> list[dict[str, str]]:
        """Each served layer's dtype names by tensor name."""
        return [dict(layer.dtypes) for layer in self.served]

    def tensors(self) -> dict[str, tuple[Any, str]]:
        """All served tensors, name -> (array, dtype name)."""
        return {n: (a, layer.dtypes[n]) for layer in self.served for n, a in layer.arrays.items()}

    def apply(self, module: Any) -> TransferReport:
        """Copy every served tensor into ``module``, or nothing (TransferError names each misfit)."""
        report, _ = copy_layers(module, self.served)
        report.donor, report.tier, report.lookup_seconds = self.donor, self.tier, self.seconds
        return report


@dataclass
class _Slot:
    tier: Tier
    policy: Policy
    refs: dict[bytes, int] = field(default_factory=dict)  # payload digest -> entries of this tier using it
    layers: dict[Entry, Layer] | None = None  # decoded entries, kept for process-local unverified tiers


class TensorCache:
    """A tiered cache of trained layer tensors keyed by architecture prefixes (see README)."""

    def __init__(self, memory: int | str | None = "2GB", disk: str | os.PathLike | None = None,
                 disk_capacity: int | str = "20GB", redis: str | None = None,
                 redis_capacity: int | str = "100GB", policy: str | Policy | type = "donor-window",
                 namespace: str = "default", policy_kwargs: Mapping[str, Any] | None = None,
                 redis_required: bool = False, pinned: bool = False, verify_memory: bool = False,
                 device_memory: int | str = 0, device: str = "cuda") -> None:
        if not isinstance(namespace, str) or not namespace:
            raise ValueError(f"namespace must be a non-empty string, got {namespace!r}")
        self.namespace = namespace
        self.verify_memory = verify_memory
        kw = dict(policy_kwargs or {})
        make_policy(policy, **kw)  # fail fast on bad arguments before any tier is opened
        mem_size, disk_size, redis_size, device_size = (parse_size(memory, what="memory size"),
                                                        parse_size(disk_capacity, what="disk capacity"),
                                                        parse_size(redis_capacity, what="redis capacity"),
                                                        parse_size(device_memory, what="device memory size"))
        if mem_size <= 0 and device_size <= 0 and disk is None and redis is None:
            raise ValueError("no tier to store into: give memory > 0, device_memory > 0, a disk path or a redis URL")
        tiers: list[Tier] = []
        try:
            if device_size > 0:
                tiers.append(DeviceTier(device_size, device))
            if mem_size > 0:
                tiers.append(MemoryTier(mem_size, pinned=pinned))
            if disk is not None:
                tiers.append(LMDBTier(os.fspath(disk), disk_size))
            if redis is not None:
                tiers.append(RedisTier(redis, redis_size, namespace=namespace, required=redis_required))
        except BaseException:  # e.g. a required Redis is down: release the tiers already opened
            for tier in tiers:
                tier.close()
            raise
        # each tier needs its own bookkeeping: a policy object given by the user is copied per tier
        self._slots = [_Slot(t, copy.deepcopy(policy) if isinstance(policy, Policy) else make_policy(policy, **kw),
                             layers=None if t.shared or verify_memory else {}) for t in tiers]
        self._where: dict[Entry, set[int]] = {}
        self._catalog = Catalog()
        self._origin = uuid.uuid4().hex
        self._log_pos = 0
        self._counts = {k: 0 for k in ("puts", "lookups", "hits", "misses", "layers_served", "bytes_served",
                                        "bytes_stored", "corrupt", "dropped_puts", "promotions", "demotions")}
        self._evictions: dict[str, int] = {}
        self._seconds = {"put": 0.0, "lookup": 0.0, "apply": 0.0}
        self._served_by: dict[str, int] = {}

    # ------------------------------------------------------------------ public API
    def put(self, model_id: str, arch: Sequence[int], layers: Sequence[Mapping[str, Any]] | Mapping[str, Any],
            score: float | None = None, parent: str | None = None, layer_map: LayerMap | None = None) -> int:
        """Store a trained model's layers; returns payload bytes written. Re-putting a known id is a no-op."""
        t0 = time.perf_counter()
        arch = _check_arch(arch)
        lmap = layer_map if layer_map is not None else LayerMap.generic(len(arch))
        per_layer = lmap.split(layers) if isinstance(layers, Mapping) else list(layers)
        if len(per_layer) != len(lmap):
            raise ValueError(f"got {len(per_layer)} layer dicts for a layer map of {len(lmap)} layers")
        if not isinstance(model_id, str) or not model_id:
            raise ValueError(f"model_id must be a non-empty string, got {model_id!r}")
        self._sync()
        if model_id in self._catalog.models:
            return 0
        keys = lmap.keys(self.namespace, arch)
        blobs: dict[bytes, bytearray] = {}
        records = []
        for key, spec, tensors in zip(keys, lmap.layers, per_layer):
            refs = {}
            for name, tensor in tensors.items():
                digest, blob, ref = encode(tensor)
                blobs[digest] = blob
                refs[name] = TensorRef(digest, ref["dtype"], tuple(ref["shape"]), ref["nbytes"])
            records.append(LayerRecord(key, refs, spec.depends_on))
        record = ModelRecord(model_id, arch, None if score is None else float(score), parent, tuple(records))
        self._catalog.add(record)
        self._catalog.pin(model_id)
        self._describe(record, lmap.mode)
        written = 0
        try:
            for i in sorted({0, len(self._slots) - 1}):
                for index in range(len(records)):
                    written += self._admit(i, (model_id, index), blobs)
        finally:
            self._catalog.unpin(model_id)
        last = len(self._slots) - 1
        held = [k for k in range(len(records)) if last in self._where.get((model_id, k), ())]
        self._slots[last].tier.append_log(encode_event({"op": "put", "origin": self._origin, "mode": lmap.mode,
                                                        "record": record.to_json(), "held": held}))
        self._counts["puts"] += 1
        self._counts["bytes_stored"] += written
        self._seconds["put"] += time.perf_counter() - t0
        return written

    def lookup(self, arch: Sequence[int], parent: str | None = None, layer_map: LayerMap | None = None) -> Hit | None:
        """The best single donor's servable layers for ``arch``, or None on a miss."""
        t0 = time.perf_counter()
        arch = _check_arch(arch)
        lmap = layer_map if layer_map is not None else LayerMap.generic(len(arch))
        self._sync()
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
        self._served_by[hit.tier] = self._served_by.get(hit.tier, 0) + 1
        return hit

    def best_donor(self, arch: Sequence[int], parent: str | None = None,
                   layer_map: LayerMap | None = None) -> str | None:
        """The donor ``lookup`` would choose now, from the catalog alone (no payload read, no counters):
        lets a scheduler send the child to the worker that already holds that donor."""
        arch = _check_arch(arch)
        lmap = layer_map if layer_map is not None else LayerMap.generic(len(arch))
        self._sync()
        found = self._catalog.find(lmap.keys(self.namespace, arch), parent, lmap.mode)
        return None if found is None else found[0]

    def warm_start(self, module: Any, arch: Sequence[int], parent: str | None = None,
                   layer_map: LayerMap | None = None) -> TransferReport:
        """Lookup + copy into ``module``. Layers whose tensors misfit the module are left out (a prefix
        run stops at the first one); the rest is copied all-or-nothing. ``.layers == 0`` on a miss."""
        lmap = layer_map if layer_map is not None else LayerMap.generic(len(arch))
        hit = self.lookup(arch, parent=parent, layer_map=lmap)
        if hit is None:
            return TransferReport()
        report, _ = copy_layers(module, hit.served, "stop" if lmap.mode == "prefix" else "skip")
        report.donor, report.tier, report.lookup_seconds = hit.donor, hit.tier, hit.seconds
        self._seconds["apply"] += report.seconds
        return report

    def notify_evaluation(self) -> None:
        """One evaluation finished: advances sliding windows of the policies."""
        self._tell(EvaluationDone())

    def update_population(self, members: Sequence[tuple[str, float]], population_size: int, sample_size: int) -> None:
        """Tell population-aware policies the evolution's state (members oldest first)."""
        self._tell(PopulationChanged(tuple(members), population_size, sample_size))

    def observe_mutation(self, position: int) -> None:
        """Tell population-aware policies where a child's mutation landed."""
        self._tell(Mutated(position))

    def _describe(self, record: ModelRecord, mode: str) -> None:
        """Tell population-aware policies a model's arch, size and score before its layers arrive."""
        self._tell(ModelDescribed(record.model_id, record.arch, mode, len(record.layers), record.score))

    def _tell(self, event: PolicyEvent) -> None:
        """Give ``event`` to every tier's policy."""
        for slot in self._slots:
            slot.policy.handle(event)

    def stats(self) -> dict[str, Any]:
        """Counters: hits, misses, bytes, evictions by tier and reason, seconds spent, per-tier usage."""
        c = dict(self._counts)
        c["hit_ratio"] = c["hits"] / c["lookups"] if c["lookups"] else 0.0
        c["evictions"] = dict(self._evictions)
        c["served_by_tier"] = dict(self._served_by)
        c["seconds"] = dict(self._seconds)
        c["tiers"] = {s.tier.name: {"used_bytes": s.tier.used_bytes(), "capacity": s.tier.capacity,
                                    "entries": len(s.policy)} for s in self._slots}
        c["models"] = len(self._catalog.models)
        return c

    def close(self) -> None:
        for slot in self._slots:
            if slot.layers is not None:
                slot.layers.clear()
            slot.tier.close()

    def __enter__(self) -> TensorCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals
    def _entry_blobs(self, entry: Entry) -> list[TensorRef]:
        return list(self._catalog.models[entry[0]].layers[entry[1]].tensors.values())

    def _admit(self, i: int, entry: Entry, blobs: Mapping[bytes, bytes | bytearray | memoryview]) -> int:
        """Put ``entry`` into tier ``i``, evicting to make room; returns bytes written (0 if not admitted)."""
        slot = self._slots[i]
        where = self._where.setdefault(entry, set())
        if i in where:
            return 0
        refs = self._entry_blobs(entry)
        size = sum(len(blobs[r.digest]) for r in refs)
        if size > slot.tier.capacity:
            self._count_eviction(slot, "too_large")
            return 0
        while slot.tier.used_bytes() + size > slot.tier.capacity and len(slot.policy):
            self._evict(i, slot.policy.victim(), "capacity")
        if slot.tier.used_bytes() + size > slot.tier.capacity:  # a shared tier filled by other processes
            self._count_eviction(slot, "no_room")
            return 0
        missing = {r.digest: blobs[r.digest] for r in refs if slot.refs.get(r.digest, 0) == 0}
        if missing and not slot.tier.put_many(list(missing.items())):
            self._counts["dropped_puts"] += 1
            if not slot.tier.shared:  # a shared store may hold the same payload for another process
                for digest in missing:
                    slot.tier.delete(digest)
            return 0
        written = sum(len(v) for v in missing.values())
        for ref in refs:
            slot.refs[ref.digest] = slot.refs.get(ref.digest, 0) + 1
        self._where.setdefault(entry, set()).add(i)  # not ``where``: the evictions above may have replaced it
        model = self._catalog.models[entry[0]]
        slot.policy.handle(Inserted(entry, size, entry[0], model.layers[entry[1]].deps))
        self._catalog.hold(*entry)
        return written

    def _unref(self, slot: _Slot, digest: bytes) -> None:
        n = slot.refs.get(digest, 0) - 1
        if n <= 0:
            slot.refs.pop(digest, None)
            slot.tier.delete(digest)
        else:
            slot.refs[digest] = n

    def _evict(self, i: int, entry: Entry, reason: str, demote: bool = True) -> None:
        """Remove ``entry`` from tier ``i``; move it to the next tier down that lacks it."""
        slot = self._slots[i]
        slot.policy.handle(Removed(entry))
        self._count_eviction(slot, reason)
        where = self._where.get(entry, set())
        refs = self._entry_blobs(entry)
        if demote and i + 1 < len(self._slots) and (i + 1) not in where:
            blobs = {}
            for ref in refs:
                raw = slot.tier.get(ref.digest)
                if raw is None:
                    break
                blobs[ref.digest] = raw
            else:
                if self._admit(i + 1, entry, blobs):
                    self._counts["demotions"] += 1
        where.discard(i)
        if slot.layers is not None:
            slot.layers.pop(entry, None)
        for ref in refs:
            self._unref(slot, ref.digest)
        if not where:
            self._where.pop(entry, None)
            self._catalog.release(*entry)
            if i == len(self._slots) - 1 and slot.tier.shared:
                slot.tier.append_log(encode_event({"op": "drop", "origin": self._origin,
                                                   "model_id": entry[0], "layer": entry[1]}))

    def _count_eviction(self, slot: _Slot, reason: str) -> None:
        key = f"{slot.tier.name}:{reason}"
        self._evictions[key] = self._evictions.get(key, 0) + 1

    def _fetch(self, keys: list[bytes], parent: str | None, mode: str) -> Hit | None:
        while True:
            found = self._catalog.find(keys, parent, mode)
            if found is None:
                return None
            donor, pairs = found
            layers, indices, tiers, slowest, broken = [], [], [], 0, False
            for child_index, donor_index in pairs:
                got = self._read_entry((donor, donor_index))
                if got is None:
                    broken = True
                    if mode == "prefix":
                        break
                    continue
                layer, tier_index = got
                layers.append(layer)
                indices.append(child_index)
                tiers.append(self._slots[tier_index].tier.name)
                slowest = max(slowest, tier_index)
            if not indices and broken:
                continue  # every layer of that donor was unreadable and is now dropped: ask again
            if not indices:
                return None
            self._tell(Donated(donor))
            if self._slots[-1].tier.shared:
                self._slots[-1].tier.append_log(encode_event({"op": "donate", "origin": self._origin,
                                                              "model_id": donor}))
            prefix_len = len(indices) if mode == "prefix" else _run_length(indices)
            nbytes = sum(layer.nbytes for layer in layers)
            return Hit(donor, prefix_len, indices, layers, nbytes, self._slots[slowest].tier.name, 0.0, tiers)

    def _read_entry(self, entry: Entry) -> tuple[Layer, int] | None:
        """Read and verify one entry from the fastest tier holding it; bad copies are dropped."""
        for i in sorted(self._where.get(entry, ())):
            slot = self._slots[i]
            layer = None if slot.layers is None else slot.layers.get(entry)
            raw_blobs: dict[bytes, Any] = {}
            if layer is None or i:  # a kept layer needs no reading, unless its bytes go up a tier
                try:
                    layer, raw_blobs = self._load(slot, entry, layer)
                except PayloadError as exc:
                    self._counts["corrupt"] += exc.args[0] != "missing payload"
                    log.warning("dropping %s layer %d from %s: %s", entry[0], entry[1], slot.tier.name, exc)
                    self._evict(i, entry, "corrupt" if exc.args[0] != "missing payload" else "missing", demote=False)
                    continue
                if slot.layers is not None:
                    slot.layers[entry] = layer
            slot.policy.handle(LayerServed(entry))
            self._catalog.pin(entry[0])  # evictions the promotion cascades may take the copy it reads from
            try:
                for faster in range(i):
                    if self._admit(faster, entry, raw_blobs):
                        self._counts["promotions"] += 1
            finally:
                self._catalog.unpin(entry[0])
            return layer, i
        return None

    def _load(self, slot: _Slot, entry: Entry, kept: Layer | None) -> tuple[Layer, dict[bytes, Any]]:
        """Decode ``entry`` from ``slot`` (``kept``: decoded already, only its raw payloads are wanted) and
        the raw payloads read; PayloadError if one is missing or does not match the model record."""
        arrays, dtypes, raw_blobs = {}, {}, {}
        views = isinstance(slot.tier, DeviceTier) and not self.verify_memory
        verify = slot.tier.shared or self.verify_memory or not isinstance(slot.tier, MemoryTier)
        refs = self._catalog.models[entry[0]].layers[entry[1]].tensors
        digests = [ref.digest for ref in refs.values()]
        for (name, ref), got in zip(refs.items(), map(slot.tier.view, digests) if views else
                                    slot.tier.get_many(digests)):
            if got is None:
                raise PayloadError("missing payload")
            if views:
                arr, dtype = got
            else:
                raw_blobs[ref.digest] = got
                if kept is not None:
                    continue
                arr, dtype = decode(ref.digest, got, verify=verify, max_nbytes=ref.nbytes,
                                    expect=(ref.dtype, ref.shape, ref.nbytes))
            if dtype != ref.dtype or tuple(arr.shape) != ref.shape:
                raise PayloadError("payload header disagrees with the model record")
            arrays[name], dtypes[name] = arr, dtype
        return kept or Layer(arrays, dtypes), raw_blobs

    def _sync(self) -> None:
        """Replay catalog events other processes appended to the widest tier's log."""
        i = len(self._slots) - 1
        slot = self._slots[i]
        if not slot.tier.shared:
            return
        events, self._log_pos = slot.tier.read_log(self._log_pos)
        for raw in events:
            try:
                event = decode_event(raw)
                if event.get("origin") == self._origin:
                    continue
                self._apply_event(i, slot, event)
            except (PayloadError, ValueError, KeyError, TypeError, IndexError) as exc:
                self._counts["corrupt"] += 1
                log.warning("ignoring malformed catalog event: %s", exc)

    def _apply_event(self, i: int, slot: _Slot, event: dict[str, Any]) -> None:
        op = event.get("op")
        if op == "put":
            record = ModelRecord.from_json(event["record"])
            if record.model_id in self._catalog.models:
                return
            self._catalog.add(record)
            self._describe(record, str(event.get("mode", "prefix")))
            for index in event.get("held", range(len(record.layers))):
                layer = record.layers[index]
                entry = (record.model_id, index)
                self._where.setdefault(entry, set()).add(i)
                for ref in layer.tensors.values():
                    slot.refs[ref.digest] = slot.refs.get(ref.digest, 0) + 1
                slot.policy.handle(Inserted(entry, layer.nbytes, record.model_id, layer.deps))
                self._catalog.hold(*entry)
        elif op == "drop":
            entry = (str(event["model_id"]), int(event["layer"]))
            if i in self._where.get(entry, ()):
                slot.policy.handle(Removed(entry))
                where = self._where[entry]
                where.discard(i)
                for ref in self._entry_blobs(entry):
                    n = slot.refs.get(ref.digest, 0) - 1
                    if n <= 0:
                        slot.refs.pop(ref.digest, None)
                    else:
                        slot.refs[ref.digest] = n
                if not where:
                    self._where.pop(entry, None)
                    self._catalog.release(*entry)
        elif op == "donate":
            if str(event["model_id"]) in self._catalog.models:
                slot.policy.handle(Donated(str(event["model_id"])))


def _check_arch(arch: Sequence[int]) -> tuple[int, ...]:
    try:
        out = tuple(int(a) for a in arch)
    except (TypeError, ValueError):
        raise ValueError(f"arch must be a sequence of small non-negative ints, got {arch!r}") from None
    if not out or any(a < 0 for a in out) or any(float(a) != float(b) for a, b in zip(arch, out)):
        raise ValueError(f"arch must be a non-empty sequence of non-negative ints, got {arch!r}")
    return out


def _run_length(indices: Sequence[int]) -> int:
    n = 0
    for n, index in enumerate(indices):
        if index != n:
            return n
    return len(indices)
