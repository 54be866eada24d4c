"""The request stream: the clock Belady's next uses are counted on (and the libCacheSim bench exports).

One object per entry. Each insert is one request per layer of the new model (a miss that admits it);
each lookup requests, in layer order, the layers an *unbounded* cache would serve, as held by the most
recently finished model that holds all of them. An unbounded cache serves the parent's copy, but every
model sharing those layer keys holds an equally good copy, and a bounded cache keeps new copies longer
than old ones; naming the newest copy keeps Belady's "next use" from pinning stale duplicates.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..catalog import Entry
from .report import Served

if TYPE_CHECKING:
    from .workload import Workload


def designate(workload: Workload) -> list[Served]:
    """Per lookup, the layers the unbounded cache served, named on the newest model holding them all."""
    holders: dict[bytes, list[str]] = {}  # layer key -> models holding it, in insert order
    where: dict[str, dict[bytes, int]] = {}  # model -> layer key -> layer index
    served = iter(workload.unbounded.served)
    out = []
    for ev in workload.events:
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
        sizes = workload.models[donor].evaluation.sizes
        out.append(Served(e.model_id, donor, pairs, sum(sizes[j] for _, j in pairs), got.value))
    return out


def clock(workload: Workload) -> list[int]:
    """Per event, the stream position of its first request, plus the stream's length, so event i's
    requests are ``clock[i]:clock[i + 1]``."""
    out, n = [], 0
    requested = iter(workload.requested)
    for ev in workload.events:
        out.append(n)
        n += len(ev.evaluation.sizes) if ev.insert else len(next(requested).pairs)
    return out + [n]


def next_uses(workload: Workload) -> dict[Entry, list[int]]:
    """Stream positions at which each entry is requested by a lookup, ascending."""
    uses: dict[Entry, list[int]] = {}
    lookups = (ev for ev in workload.events if not ev.insert)
    for ev, got in zip(lookups, workload.requested):
        for k, (_, j) in enumerate(got.pairs):
            uses.setdefault((got.donor, j), []).append(workload.clock[ev.index] + k)
    return uses
