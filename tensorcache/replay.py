"""Replay a recorded search under any eviction policy and cache size, offline and deterministic.

A trace gives, per evaluation, when the child started (``t_start``, its lookup) and finished (``t_end``,
its insert), its layer keys and per-layer bytes. The two kinds of event are merged by time, inserts
before lookups at equal times, ties kept in trace order; so a child only sees models that finished
before it started. A lookup picks the best donor among cached entries exactly as ``TensorCache`` does
(``Catalog.find``: longest unbroken run of matching layers from layer 0, or in ``compatible`` mode the
most matching layers; then the recorded parent, then the better score). An insert admits one entry per
layer, ``(model_id, layer_index)`` of ``layer_bytes[i]`` bytes, in layer order, evicting the policy's
victims until the entry fits, as the cache's memory tier does; an entry larger than the whole capacity
is not admitted.

Request stream (what ``requests`` exports for libCacheSim and Belady's next uses come from; one object
per entry, ids from 1 in order of first insert): each insert is one request per layer of the new model
(a miss that admits it); each lookup requests, in layer order, the layers an *unbounded* cache would
serve, as held by the most recently finished model that holds all of them. An unbounded cache serves
the parent's copy, but every model sharing those layer keys holds an equally good copy, and a bounded
cache keeps new copies longer than old ones; naming the newest copy keeps Belady's "next use" from
pinning stale duplicates. All requests of one event carry that event's time.
"""
from __future__ import annotations

import csv
import json
import math
import os
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .catalog import Catalog, Entry, LayerRecord, ModelRecord
from .layers import MODES
from .metrics import mark_revisits, positional, ratio
from .events import (ClockMoved, Donated, Inserted, LayerServed, ModelDescribed, PolicyEvent, Removed,
                     evaluation_news)
from .policies import Policy, make_policy


@dataclass(frozen=True)
class Evaluation:
    """The fields of one trace record that replay needs."""

    model_id: str
    parent_id: str | None
    t_start: float
    t_end: float
    score: float | None
    mutation_pos: int | None
    keys: tuple[bytes, ...]
    sizes: tuple[int, ...]
    arch: tuple[int, ...] | None = None
    deps: tuple[tuple[int, ...], ...] | None = None  # per layer, from the optional ``layer_deps`` field
    revisit: bool | None = None  # the optional ``revisit`` field (None: worked out from the archs)


@dataclass(frozen=True)
class Event:
    """A lookup (child starts) or an insert (model finishes); ``index`` is its place in the stream."""

    index: int
    time: float
    insert: bool
    evaluation: Evaluation


class Served(NamedTuple):
    """What one lookup got: the donor (None on a miss) and its [(child layer, donor layer)] pairs."""

    model_id: str
    donor: str | None
    pairs: tuple[tuple[int, int], ...]
    nbytes: int


class ObjectRequest(NamedTuple):
    """One object request of the stream fed to libCacheSim; ``insert`` marks the admitting requests."""

    time: float
    key_id: int
    size: int
    insert: bool


def parse_records(records: Sequence[Mapping[str, Any]]) -> list[Evaluation]:
    """Validate trace records (see ``trace.FIELDS``) into Evaluations; ValueError names the bad record."""
    out, seen = [], set()
    for n, rec in enumerate(records):
        try:
            model_id = str(rec["model_id"])
            keys = tuple(bytes.fromhex(k) for k in rec["layer_keys"])
            sizes = tuple(int(b) for b in rec["layer_bytes"])
            t_start, t_end = float(rec["t_start"]), float(rec["t_end"])
            parent, score, pos = rec.get("parent_id"), rec.get("score"), rec.get("mutation_pos")
            arch = None if rec.get("arch") is None else tuple(int(a) for a in rec["arch"])
            deps = None if rec.get("layer_deps") is None else tuple(tuple(int(p) for p in d) for d in rec["layer_deps"])
            revisit = rec.get("revisit")
            if revisit is not None and not isinstance(revisit, bool):
                raise ValueError(f"revisit must be true or false, got {revisit!r}")
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"trace record {n} is not replayable: {exc!r}") from None
        if deps is not None and len(deps) != len(keys):
            raise ValueError(f"trace record {n} ({model_id}): {len(deps)} layer_deps vs {len(keys)} layer keys")
        if len(keys) != len(sizes) or any(b < 0 for b in sizes) or t_end < t_start:
            raise ValueError(f"trace record {n} ({model_id}): {len(keys)} layer keys vs {len(sizes)} layer bytes, "
                             f"sizes {list(sizes)[:8]}, t_start {t_start} > t_end {t_end}?")
        if model_id in seen:
            raise ValueError(f"trace record {n}: model_id {model_id!r} appears twice")
        seen.add(model_id)
        out.append(Evaluation(model_id, None if parent is None else str(parent), t_start, t_end,
                              None if score is None else float(score), None if pos is None else int(pos),
                              keys, sizes, arch, deps, revisit))
    return out


def merge_events(evaluations: Sequence[Evaluation]) -> list[Event]:
    """Inserts at t_end and lookups at t_start in time order; inserts first at equal times."""
    order = sorted([(e.t_end, 0, n) for n, e in enumerate(evaluations)] +
                   [(e.t_start, 1, n) for n, e in enumerate(evaluations)])
    return [Event(i, t, kind == 0, evaluations[n]) for i, (t, kind, n) in enumerate(order)]


def infer_population_size(evaluations: Sequence[Evaluation]) -> int:
    """Regularized evolution's P seen from a trace: the models finished when the first mutated child
    started (children are random until P finished), and at least every parent's age + 1."""
    ends = sorted(e.t_end for e in evaluations)
    end_of = {e.model_id: e.t_end for e in evaluations}
    children = [e for e in evaluations if e.parent_id in end_of]
    if not children:
        return max(1, len(evaluations))
    first = min(children, key=lambda e: e.t_start)
    ages = [bisect_right(ends, e.t_start) - bisect_right(ends, end_of[e.parent_id]) for e in children]
    return max(bisect_right(ends, first.t_start), max(ages) + 1, 1)


class Store:
    """A set of cached entries that replay drives; it hears the same typed policy events a live cache tier
    does. ``exact`` stores report every eviction from ``insert``; others are checked entry by entry with
    ``contains`` at lookup time."""

    exact = True

    def contains(self, entry: Entry) -> bool:
        raise NotImplementedError

    def insert(self, entry: Entry, size: int, model_id: str, deps: tuple[int, ...]) -> tuple[bool, list[Entry]]:
        """Admit ``entry``; returns (admitted, entries evicted to make room)."""
        raise NotImplementedError

    def handle(self, event: PolicyEvent) -> None:
        """Hear one policy event other than an insert or removal (ignored unless the store has a policy)."""


class UnboundedStore(Store):
    """Keeps everything: the reference every yield is measured against."""

    def contains(self, entry: Entry) -> bool:
        return True

    def insert(self, entry: Entry, size: int, model_id: str, deps: tuple[int, ...]) -> tuple[bool, list[Entry]]:
        return True, []


class PolicyStore(Store):
    """One byte budget managed by one of our policies, the way a cache tier uses it."""

    def __init__(self, policy: Policy, capacity_bytes: int) -> None:
        if capacity_bytes < 0:
            raise ValueError(f"capacity must be >= 0 bytes, got {capacity_bytes}")
        self.policy = policy
        self.capacity = int(capacity_bytes)
        self.sizes: dict[Entry, int] = {}
        self.used = 0
        self.max_used = 0
        self.evictions = 0

    def contains(self, entry: Entry) -> bool:
        return entry in self.sizes

    def insert(self, entry: Entry, size: int, model_id: str, deps: tuple[int, ...]) -> tuple[bool, list[Entry]]:
        if size > self.capacity:
            return False, []
        evicted = []
        while self.used + size > self.capacity and len(self.policy):
            victim = self.policy.victim()
            if victim not in self.sizes:
                raise RuntimeError(f"policy {self.policy.name!r} named victim {victim!r}, which it was never "
                                   "given or which was already removed")
            self.policy.handle(Removed(victim))
            self.used -= self.sizes.pop(victim)
            self.evictions += 1
            evicted.append(victim)
        if self.used + size > self.capacity:
            return False, evicted
        self.policy.handle(Inserted(entry, size, model_id, deps))
        self.sizes[entry] = size
        self.used += size
        self.max_used = max(self.max_used, self.used)
        return True, evicted

    def handle(self, event: PolicyEvent) -> None:
        self.policy.handle(event)


@dataclass
class ReplayResult:
    """Counters of one replay; ratios are properties (NaN when their denominator is 0). Bytes served are
    split into transfer and revisit bytes (``tensorcache.metrics``); ``hits`` counts lookups that served a
    layer depending on an arch position, ``lookups_served`` those that served any layer."""

    policy: str
    capacity_bytes: int
    lookups: int = 0
    hits: int = 0
    lookups_served: int = 0
    bytes_served: int = 0
    bytes_unbounded: int = 0
    transfer_bytes_served: int = 0
    transfer_bytes_unbounded: int = 0
    revisit_bytes_served: int = 0
    revisit_bytes_unbounded: int = 0
    bytes_requested: int = 0
    entries_served: int = 0
    entries_unbounded: int = 0
    evictions: int = 0
    max_used_bytes: int = 0
    served: list[Served] = field(default_factory=list, repr=False)

    @property
    def transfer_yield(self) -> float:
        """The headline: bytes served to children of a new architecture / what an unbounded cache serves them."""
        return ratio(self.transfer_bytes_served, self.transfer_bytes_unbounded)

    @property
    def revisit_yield(self) -> float:
        """Bytes served to revisit children / what an unbounded cache serves them."""
        return ratio(self.revisit_bytes_served, self.revisit_bytes_unbounded)

    @property
    def total_yield(self) -> float:
        """All bytes served / all bytes an unbounded cache serves on the same stream."""
        return ratio(self.bytes_served, self.bytes_unbounded)

    @property
    def hit_ratio(self) -> float:
        """Lookups that served a layer depending on an arch position / lookups."""
        return ratio(self.hits, self.lookups)

    @property
    def byte_hit_ratio(self) -> float:
        """Bytes served / bytes of every child's full model."""
        return ratio(self.bytes_served, self.bytes_requested)

    @property
    def object_hit_ratio(self) -> float:
        """Entries served / entries requested (those an unbounded cache serves)."""
        return ratio(self.entries_served, self.entries_unbounded)

    def metrics(self) -> dict[str, Any]:
        """Flat dict for CSV rows and JSON."""
        out = {k: v for k, v in self.__dict__.items() if k != "served"}
        out.update(transfer_yield=self.transfer_yield, revisit_yield=self.revisit_yield,
                   total_yield=self.total_yield, hit_ratio=self.hit_ratio, byte_hit_ratio=self.byte_hit_ratio,
                   object_hit_ratio=self.object_hit_ratio)
        return out


class Workload:
    """A parsed trace, its merged event stream and what an unbounded cache serves on it (reused across
    policies and capacities)."""

    def __init__(self, records: Sequence[Mapping[str, Any]], mode: str = "prefix") -> None:
        if mode not in MODES:
            raise ValueError(f"unknown transfer mode {mode!r}; expected one of {MODES}")
        self.mode = mode
        self.evaluations = parse_records(records)
        self.events = merge_events(self.evaluations)
        self.total_bytes = sum(sum(e.sizes) for e in self.evaluations)
        self.sizes = {e.model_id: e.sizes for e in self.evaluations}
        self.deps = {e.model_id: e.deps or tuple(tuple(range(i + 1)) if mode == "prefix" else ()
                                                 for i in range(len(e.keys))) for e in self.evaluations}
        self.revisit = mark_revisits((e.model_id, e.arch, e.t_start, e.revisit) for e in self.evaluations)
        self.unbounded: ReplayResult | None = None
        self.clock = [0] * (len(self.events) + 1)  # set below, once the request stream is known
        self.unbounded = run(self, UnboundedStore(), "unbounded")
        self.requested = self._designate()
        self.clock = self._clock()

    def _designate(self) -> list[Served]:
        """Per lookup, the layers the unbounded cache served, named on the newest model holding them all."""
        assert self.unbounded is not None
        holders: dict[bytes, list[str]] = {}  # layer key -> models holding it, in insert order
        where: dict[str, dict[bytes, int]] = {}  # model -> layer key -> layer index
        served = iter(self.unbounded.served)
        out = []
        for ev in self.events:
            e = ev.evaluation
            if ev.insert:
                where[e.model_id] = {k: i for i, k in enumerate(e.keys)}
                for k in where[e.model_id]:
                    holders.setdefault(k, []).append(e.model_id)
                continue
            got = next(served)
            if got.donor is None:
                out.append(got)
                continue
            wanted = [e.keys[c] for c, _ in got.pairs]
            donor = next(m for m in reversed(holders[wanted[-1]]) if all(k in where[m] for k in wanted))
            pairs = tuple((c, where[donor][k]) for (c, _), k in zip(got.pairs, wanted))
            out.append(Served(e.model_id, donor, pairs, sum(self.sizes[donor][j] for _, j in pairs)))
        return out

    def next_uses(self) -> dict[Entry, list[int]]:
        """Stream positions (indices into ``requests()``) at which each entry is requested, ascending."""
        uses: dict[Entry, list[int]] = {}
        lookups = (ev for ev in self.events if not ev.insert)
        for ev, got in zip(lookups, self.requested):
            for k, (_, j) in enumerate(got.pairs):
                uses.setdefault((got.donor, j), []).append(self.clock[ev.index] + k)
        return uses

    def requests(self) -> list[ObjectRequest]:
        """The object request stream (see the module docstring)."""
        ids = self.entry_ids()
        requested = iter(self.requested)
        out = []
        for ev in self.events:
            e = ev.evaluation
            if ev.insert:
                out.extend(ObjectRequest(ev.time, ids[(e.model_id, i)], size, True) for i, size in enumerate(e.sizes))
            else:
                got = next(requested)
                out.extend(ObjectRequest(ev.time, ids[(got.donor, j)], self.sizes[got.donor][j], False)
                           for _, j in got.pairs)
        return out

    def entry_ids(self) -> dict[Entry, int]:
        """The key_id of every entry in the request stream."""
        ids: dict[Entry, int] = {}
        for ev in self.events:
            if ev.insert:
                for i in range(len(ev.evaluation.sizes)):
                    ids[(ev.evaluation.model_id, i)] = len(ids) + 1
        return ids

    def _clock(self) -> list[int]:
        """Per event, the stream position of its first request (the clock Belady and libCacheSim share),
        plus the stream's length, so event i's requests are ``clock[i]:clock[i + 1]``."""
        clock, n = [], 0
        requested = iter(self.requested)
        for ev in self.events:
            clock.append(n)
            n += len(ev.evaluation.sizes) if ev.insert else len(next(requested).pairs)
        return clock + [n]


def write_requests_csv(requests: Sequence[ObjectRequest], path: str | os.PathLike) -> None:
    """CSV with header ``time,obj_id,obj_size,insert`` (libCacheSim's csv reader takes the first three)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["time", "obj_id", "obj_size", "insert"])
        w.writerows((r.time, r.key_id, r.size, int(r.insert)) for r in requests)


def run(workload: Workload, store: Store, name: str, capacity_bytes: int = 0, population_size: int = 1,
        sample_size: int = 1, progress: Callable[[int, int], None] | None = None,
        inflight: bool = False) -> ReplayResult:
    """Drive ``store`` through the workload's event stream and count what each lookup got;
    ``progress(done, total)`` hears how many events are done every 1000 events and at the end;
    ``inflight``: each child is described (``ModelDescribed`` without a score) at its lookup, as a driver
    that tells its cache about the children it issues does."""
    reference = workload.unbounded
    result = ReplayResult(name, capacity_bytes)
    catalog = Catalog()
    population: deque[tuple[str, float]] = deque(maxlen=population_size)
    prefix = workload.mode == "prefix"
    n_lookup = 0
    for ev in workload.events:
        if progress is not None and ev.index % 1000 == 0:
            progress(ev.index, len(workload.events))
        e = ev.evaluation
        store.handle(ClockMoved(workload.clock[ev.index], workload.clock[ev.index + 1]))
        if ev.insert:
            deps = e.deps or [tuple(range(i + 1)) if prefix else () for i in range(len(e.keys))]
            if e.arch is not None:
                store.handle(ModelDescribed(e.model_id, e.arch, workload.mode, len(e.keys), e.score))
            record = ModelRecord(e.model_id, (), e.score, e.parent_id,
                                 tuple(LayerRecord(k, {}, d) for k, d in zip(e.keys, deps)))
            for i, size in enumerate(e.sizes):
                admitted, evicted = store.insert((e.model_id, i), size, e.model_id, deps[i])
                for victim in evicted:
                    catalog.release(victim, 0)
                if admitted:
                    catalog.hold(record, i, 0)
            population.append((e.model_id, e.score if e.score is not None else -math.inf))
            for news in evaluation_news(e.mutation_pos, list(population), population_size, sample_size):
                store.handle(news)  # at the child's finish, as a live search tells its cache
            continue
        if inflight and e.arch is not None:  # the driver tells its cache which child it just issued
            store.handle(ModelDescribed(e.model_id, e.arch, workload.mode, len(e.keys), None))
        got = _lookup(catalog, store, e, workload)
        result.served.append(got)
        result.lookups += 1
        result.bytes_requested += sum(e.sizes)
        again = workload.revisit[e.model_id]
        if reference is not None:
            ref = reference.served[n_lookup]
            result.bytes_unbounded += ref.nbytes
            result.entries_unbounded += len(ref.pairs)
            if again:
                result.revisit_bytes_unbounded += ref.nbytes
            else:
                result.transfer_bytes_unbounded += ref.nbytes
        n_lookup += 1
        if got.donor is None:
            continue
        for _, j in got.pairs:
            store.handle(LayerServed((got.donor, j)))
        store.handle(Donated(got.donor))
        result.lookups_served += 1
        result.hits += positional(workload.deps[got.donor][j] for _, j in got.pairs)
        result.bytes_served += got.nbytes
        if again:
            result.revisit_bytes_served += got.nbytes
        else:
            result.transfer_bytes_served += got.nbytes
        result.entries_served += len(got.pairs)
    if progress is not None:
        progress(len(workload.events), len(workload.events))
    if isinstance(store, PolicyStore):
        result.evictions, result.max_used_bytes = store.evictions, store.max_used
    return result


def _lookup(catalog: Catalog, store: Store, e: Evaluation, workload: Workload) -> Served:
    """The best donor among cached entries; entries a non-exact store lost are dropped and it asks again."""
    while True:
        found = catalog.find(e.keys, e.parent_id, workload.mode)
        if found is None:
            return Served(e.model_id, None, (), 0)
        donor, pairs = found
        if not store.exact:
            missing = [j for _, j in pairs if not store.contains((donor, j))]
            if missing:
                for j in missing:
                    catalog.release((donor, j), 0)
                continue
        sizes = workload.sizes[donor]
        return Served(e.model_id, donor, tuple(pairs), sum(sizes[j] for _, j in pairs))


def replay(records: Sequence[Mapping[str, Any]] | Workload, policy: str | Policy, capacity_bytes: int,
           mode: str = "prefix", population_size: int | None = None, sample_size: int | None = None,
           policy_kwargs: Mapping[str, Any] | None = None,
           progress: Callable[[int, int], None] | None = None, inflight: bool = False) -> ReplayResult:
    """Re-run a trace's lookups and inserts under ``policy`` with ``capacity_bytes`` (see module doc).

    ``policy`` is a name for ``make_policy`` (``"belady"`` gets the trace's next uses) or a Policy object.
    P and S feed population-aware policies; P defaults to ``infer_population_size``, S to max(1, P // 4).
    """
    workload = records if isinstance(records, Workload) else Workload(records, mode)
    P, S = population_params(workload, population_size, sample_size)
    if isinstance(policy, str):
        kw = dict(policy_kwargs or {})
        if policy == "belady":
            kw.setdefault("next_uses", workload.next_uses())
        policy = make_policy(policy, **kw)
    store = PolicyStore(policy, capacity_bytes)
    return run(workload, store, policy.name, capacity_bytes, P, S, progress, inflight)


def population_params(workload: Workload, population_size: int | None, sample_size: int | None) -> tuple[int, int]:
    """(P, S) from the arguments, else inferred from the trace (S = max(1, P // 4))."""
    P = population_size if population_size is not None else infer_population_size(workload.evaluations)
    S = sample_size if sample_size is not None else max(1, P // 4)
    if P < 1 or not 1 <= S <= P:
        raise ValueError(f"need population size >= 1 and 1 <= sample size <= it, got P={P}, S={S}")
    return P, S


def trace_settings(trace_path: str | os.PathLike) -> dict[str, Any]:
    """The ``settings`` of the ``summary.json`` that ``run_search`` writes beside its trace ({} if none):
    ``population``, ``sample`` and ``transfer`` (the mode) are what replay and analysis use."""
    path = os.path.join(os.path.dirname(os.fspath(trace_path)), "summary.json")
    try:
        with open(path, encoding="utf-8") as f:
            settings = json.load(f).get("settings")
    except (OSError, ValueError, AttributeError):
        return {}
    return settings if isinstance(settings, dict) else {}
