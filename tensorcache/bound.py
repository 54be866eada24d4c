"""Proven upper bounds on the bytes any eviction schedule of one cache tier can serve on a replayed trace.

Replay's cache admits each finished model's layers once (an evicted tensor never comes back) and a lookup
serves one donor's held layers whose keys match the child's. Whichever donor a lookup picks, every byte
it serves is a child layer whose key some held entry has at that moment. So for every schedule that
keeps the capacity:

    served bytes  <=  sum over requests (lookup L, child layer j) of size(j) x [a copy of key k_j is held at L]

where a *request* is a child layer that some schedule could serve (prefix mode: within the unbounded
cache's run; compatible mode: any layer whose key was inserted earlier). Two relaxations of that sum:

* ``lp_bound``, exact LP (small traces): a fraction x[e, t] of each entry held after each event, never
  increasing after its insert, the bytes held <= capacity after every event; a request is served by at
  most the held fraction of its key's copies and, in prefix mode, by at most its previous layer's share.
  Every real schedule is a 0/1 point of it, so its optimum is an upper bound.
* ``interval_bound`` (any size, FOO-style): if a copy of k is held at a request, some copy of k was held
  throughout the interval since the later of k's latest copy arrival and k's previous request. Giving each
  request only the choice of holding its key's bytes over that interval, the constraint "bytes held <=
  capacity at every event" keeps only interval loads, an interval packing LP (a min-cost flow, as in
  Berger, Beckmann and Harchol-Balter, SIGMETRICS 2018). Every LP point maps onto it with the same value,
  so it bounds ``lp_bound`` from above. With one unit of value per byte its optimum is found exactly by a
  sweep that, whenever the load passes the capacity, drops bytes of the intervals that end last (the
  maximum C-colourable subgraph of interval graphs; the tests check it against the LP solver).

``value_bound`` is the same relaxation with each request weighted by what serving it is worth (training
seconds, ``replay.workload.layer_values``) instead of by its bytes: the same argument holds for any
non-negative weights, since a served request still needs its key's bytes held over its interval. With
weights the sweep is no longer exact, so it is solved as FOO's min-cost flow: C units of flow cross the
event slots from the first to the last, each may skip the slots of one request's interval along that
request's arc (at most its bytes, earning its value per byte), so the intervals in use at any slot carry
at most C bytes. The optimum of that network LP (HiGHS) is the optimum of the weighted interval LP.

``which`` picks the requests counted: all, those of revisit children, or transfers (the others).
"""
from __future__ import annotations

import heapq
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .replay import Workload

WHICH = ("all", "transfer", "revisit")


@dataclass(frozen=True)
class Request:
    """One child layer some schedule could serve: its key's bytes, held over event slots [start, end)."""

    key: bytes
    size: int
    lookup: int  # event index of the lookup
    layer: int  # child layer index
    start: int  # event index from which a copy must be held (latest copy arrival or previous request)
    revisit: bool
    value: float = 0.0  # training seconds serving it is worth to the child (``replay.workload.layer_values``)


def key_sizes(workload: Workload) -> dict[bytes, int]:
    """Bytes of each layer key; ValueError naming a key whose copies differ in size (it would name
    different tensors, which the bounds assume never happens)."""
    sizes: dict[bytes, int] = {}
    for e in workload.evaluations:
        for key, size in zip(e.keys, e.sizes):
            if sizes.setdefault(key, size) != size:
                raise ValueError(f"layer key {key.hex()} has copies of {sizes[key]} and {size} bytes")
    return sizes


def requests(workload: Workload, which: str = "all") -> list[Request]:
    """The requests of ``which`` lookups, in lookup order (see the module docstring)."""
    if which not in WHICH:
        raise ValueError(f"which must be one of {WHICH}, got {which!r}")
    sizes = key_sizes(workload)
    arrivals: dict[bytes, list[int]] = {}
    for ev in workload.events:
        if ev.insert:
            for key in ev.evaluation.keys:
                arrivals.setdefault(key, []).append(ev.index)
    revisit = workload.revisit
    values = {m: model.values for m, model in workload.models.items()}
    unbounded = iter(workload.unbounded.served)
    last: dict[bytes, int] = {}  # key -> event index of its previous counted request
    out = []
    for ev in workload.events:
        if ev.insert:
            continue
        e = ev.evaluation
        got = next(unbounded)
        if which != "all" and revisit[e.model_id] != (which == "revisit"):
            continue
        layers = [c for c, _ in got.pairs] if workload.mode == "prefix" else range(len(e.keys))
        for j in layers:
            key = e.keys[j]
            times = arrivals.get(key, ())
            n = bisect_left(times, ev.index)
            if n == 0:
                continue  # no copy exists yet
            start = max(times[n - 1], last.get(key, -1))
            last[key] = ev.index
            out.append(Request(key, sizes[key], ev.index, j, start, revisit[e.model_id], values[e.model_id][j]))
    return out


def interval_bound(workload: Workload, capacity_bytes: int, which: str = "all") -> int:
    """Exact optimum of the interval relaxation: an upper bound on the bytes of ``which`` requests any
    schedule serves with ``capacity_bytes``."""
    return pack_intervals([(r.start, r.lookup, r.size) for r in requests(workload, which) if r.size <= capacity_bytes],
                          capacity_bytes)  # no schedule holds an entry larger than the tier


def value_bound(workload: Workload, capacity_bytes: int, which: str = "all") -> float:
    """Optimum of the interval relaxation with each request worth its training seconds: an upper bound on
    the value (``ReplayResult.value_served``, or its transfer or revisit part) any schedule serves."""
    return pack_weighted([(r.start, r.lookup, r.size, r.value) for r in requests(workload, which)
                          if r.size <= capacity_bytes], capacity_bytes)


def pack_weighted(intervals: Sequence[tuple[int, int, int, float]], capacity: int) -> float:
    """max sum value_i x c_i / size_i, 0 <= c_i <= size_i, with sum of c_i over intervals covering each slot
    <= capacity; interval (start, end, size, value >= 0) covers slots start..end-1. Exact: min-cost flow of
    ``capacity`` units along the slots, each interval an arc that skips its slots (module docstring)."""
    import numpy as np
    from scipy.optimize import linprog
    from scipy.sparse import coo_matrix

    if capacity < 0:
        raise ValueError(f"capacity must be >= 0 bytes, got {capacity}")
    if any(value < 0 for *_, value in intervals):
        raise ValueError("interval values must be >= 0")
    free = sum(value for start, end, size, value in intervals if end <= start or size == 0)  # nothing to hold
    arcs = [(start, end, size, value / size) for start, end, size, value in intervals if end > start and size > 0]
    if not arcs or capacity == 0:
        return free
    nodes = sorted({t for start, end, _, _ in arcs for t in (start, end)})
    at = {t: n for n, t in enumerate(nodes)}
    tails = [*range(len(nodes) - 1), *(at[start] for start, _, _, _ in arcs)]  # slot arcs n -> n + 1, then the
    heads = [*range(1, len(nodes)), *(at[end] for _, end, _, _ in arcs)]  # request arcs start -> end
    n_arcs = len(tails)
    rows = np.concatenate([tails, heads])
    cols = np.concatenate([np.arange(n_arcs), np.arange(n_arcs)])
    signs = np.concatenate([np.ones(n_arcs), -np.ones(n_arcs)])  # out of a node +1, into it -1
    supply = np.zeros(len(nodes))
    supply[0], supply[-1] = capacity, -capacity
    cost = np.concatenate([np.zeros(len(nodes) - 1), [-per_byte for *_, per_byte in arcs]])
    upper = np.concatenate([np.full(len(nodes) - 1, float(capacity)), [size for _, _, size, _ in arcs]])
    res = linprog(cost, A_eq=coo_matrix((signs, (rows, cols)), shape=(len(nodes), n_arcs)).tocsr(), b_eq=supply,
                  bounds=np.stack([np.zeros(n_arcs), upper], axis=1), method="highs")
    if res.status != 0:
        raise RuntimeError(f"the value bound's flow did not solve: {res.message}")
    return free + float(-res.fun)


def pack_intervals(intervals: Sequence[tuple[int, int, int]], capacity: int) -> int:
    """max sum c_i, 0 <= c_i <= size_i, with sum of c_i over intervals covering each slot <= capacity;
    interval (start, end, size) covers slots start..end-1. Exact: a sweep that drops the bytes ending last."""
    if capacity < 0:
        raise ValueError(f"capacity must be >= 0 bytes, got {capacity}")
    order = sorted(range(len(intervals)), key=lambda i: intervals[i][0])
    ends: list[tuple[int, int]] = []  # (end, interval) of those being held, soonest end first
    far: list[tuple[int, int]] = []  # (-end, interval), for dropping the ones that end last
    held: dict[int, int] = {}  # interval -> bytes still held
    load = served = 0
    for i in order:
        start, end, size = intervals[i]
        while ends and ends[0][0] <= start:  # served: its request came before this interval starts
            _, k = heapq.heappop(ends)
            got = held.pop(k, 0)
            served += got
            load -= got
        if end <= start:
            served += size  # a request at the very event its copy was last needed costs no slot
            continue
        held[i] = size
        load += size
        heapq.heappush(ends, (end, i))
        heapq.heappush(far, (-end, i))
        while load > capacity:
            _, k = far[0]
            if k not in held:
                heapq.heappop(far)
                continue
            cut = min(held[k], load - capacity)
            held[k] -= cut
            load -= cut
            if held[k] == 0:
                del held[k]
                heapq.heappop(far)
    return served + sum(held.values())


def lp_bound(workload: Workload, capacity_bytes: int, which: str = "all", max_variables: int = 200_000) -> float:
    """Optimum of the exact LP relaxation (module docstring) with scipy's HiGHS; for small traces
    (ValueError above ``max_variables``). An upper bound on the bytes any schedule serves."""
    import numpy as np
    from scipy.optimize import linprog
    from scipy.sparse import coo_matrix

    reqs = requests(workload, which)
    if not reqs:
        return 0.0
    horizon = max(r.lookup for r in reqs)  # slots 0..horizon-1 matter
    entries = [(ev.index, key, size) for ev in workload.events if ev.insert and ev.index < horizon
               for key, size in zip(ev.evaluation.keys, ev.evaluation.sizes)]
    copies: dict[bytes, list[int]] = {}  # key -> entry numbers
    col: list[int] = []  # first variable of each entry: its slots insert..horizon-1
    n = 0
    for k, (a, key, _) in enumerate(entries):
        col.append(n)
        n += horizon - a
        copies.setdefault(key, []).append(k)
    y0 = n
    n += len(reqs)
    if n > max_variables:
        raise ValueError(f"the LP would have {n} variables (> {max_variables}); use interval_bound")
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    rhs: list[float] = []

    def constraint(terms: Sequence[tuple[int, float]], bound: float) -> None:
        r = len(rhs)
        for c, v in terms:
            rows.append(r)
            cols.append(c)
            vals.append(v)
        rhs.append(bound)

    for t in range(horizon):  # bytes held after event t <= capacity
        constraint([(col[k] + t - a, size) for k, (a, _, size) in enumerate(entries) if a <= t], capacity_bytes)
    for k, (a, _, _) in enumerate(entries):  # never re-admitted: x[e, t+1] <= x[e, t]
        for t in range(a, horizon - 1):
            constraint([(col[k] + t + 1 - a, 1.0), (col[k] + t - a, -1.0)], 0.0)
    previous: dict[tuple[int, int], int] = {}
    for q, r in enumerate(reqs):
        held = [(col[k] + r.lookup - 1 - entries[k][0], -1.0) for k in copies.get(r.key, ())
                if entries[k][0] < r.lookup]
        constraint([(y0 + q, 1.0)] + held, 0.0)
        previous[(r.lookup, r.layer)] = y0 + q
        if workload.mode == "prefix" and (r.lookup, r.layer - 1) in previous:
            constraint([(y0 + q, 1.0), (previous[(r.lookup, r.layer - 1)], -1.0)], 0.0)
    cost = np.zeros(n)
    cost[y0:] = [-r.size for r in reqs]
    matrix = coo_matrix((vals, (rows, cols)), shape=(len(rhs), n)).tocsr()
    upper = np.ones(n)  # no schedule holds an entry larger than the tier
    for k, (a, _, size) in enumerate(entries):
        if size > capacity_bytes:
            upper[col[k]: col[k] + horizon - a] = 0.0
    res = linprog(cost, A_ub=matrix, b_ub=np.array(rhs), bounds=np.stack([np.zeros(n), upper], axis=1),
                  method="highs")
    if res.status != 0:
        raise RuntimeError(f"the bound's LP did not solve: {res.message}")
    return float(-res.fun)
