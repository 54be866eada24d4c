"""What a served byte counts as, defined once for replay, the search summary and trace analyses.

A child is a *revisit* when its architecture was evaluated before (an earlier-issued evaluation had the
same arch): bytes served to it are *revisit* bytes, which a search that reuses the earlier score never
needs. Bytes served to any other child are *transfer* bytes, the cache's real saving; the headline
metric is the transfer yield (transfer bytes served / transfer bytes an unbounded cache serves), with the
revisit yield beside it. A lookup is a *hit* only when it serves a layer that depends on at least one
arch position: a stem or head that every model shares says nothing about the cache.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def positional(deps: Iterable[Sequence[int]]) -> bool:
    """True when one of the served layers (given by their dependency positions) depends on a position."""
    return any(len(d) > 0 for d in deps)


def mark_revisits(evaluations: Iterable[tuple[str, Sequence[int] | None, float, bool | None]]) -> dict[str, bool]:
    """model_id -> revisit, from (model_id, arch, t_start, recorded flag) in trace order: a recorded flag
    wins; else the arch was seen in an evaluation that started earlier (ties: earlier in the trace)."""
    items = list(evaluations)
    order = sorted(range(len(items)), key=lambda n: (items[n][2], n))
    seen: set[tuple[int, ...]] = set()
    out: dict[str, bool] = {}
    for n in order:
        model_id, arch, _, flag = items[n]
        key = None if arch is None else tuple(arch)
        out[model_id] = bool(flag) if flag is not None else (key is not None and key in seen)
        if key is not None:
            seen.add(key)
    return out


def ratio(a: float, b: float) -> float:
    """a / b, NaN when b is 0."""
    return a / b if b else math.nan


def summarize_records(records: Sequence[Mapping[str, Any]], mode: str = "prefix") -> dict[str, Any]:
    """Live-search figures from trace records: children, revisits, hits (a served layer depends on a
    position) and bytes served split into transfer and revisit, for a finished trace (``tensorcache analyze``;
    the running search counts the same one record at a time, ``nas_integration.tally``).

    Which layers a record was served comes from ``served_layers`` when present; else prefix mode serves
    the first ``transfer_layers`` layers, and compatible mode counts a hit only when more layers were served
    than the child has position-free ones (distinct served layers must then include a positional one).
    """
    revisit = mark_revisits((str(r["model_id"]), r.get("arch"), float(r.get("t_start", 0.0)), r.get("revisit"))
                            for r in records)
    out = {"children": 0, "revisits": 0, "hits": 0, "transfer_bytes": 0, "revisit_bytes": 0}
    for r in records:
        again = revisit[str(r["model_id"])]
        out["children"] += 1
        out["revisits"] += again
        out["revisit_bytes" if again else "transfer_bytes"] += int(r.get("transfer_bytes") or 0)
        out["hits"] += is_hit(r, mode)
    out["hit_ratio"] = ratio(out["hits"], out["children"])
    out["revisit_fraction"] = ratio(out["revisits"], out["children"])
    return out


def is_hit(record: Mapping[str, Any], mode: str) -> bool:
    """Whether a trace record's lookup served a layer that depends on a position (``mode``: prefix or compatible)."""
    n = int(record.get("transfer_layers") or 0)
    deps = record.get("layer_deps")
    if n == 0:
        return False
    if deps is None:
        return True  # no dependencies recorded: every layer counts as positional
    served = record.get("served_layers")
    if served is not None:
        return positional(deps[i] for i in served)
    if mode == "prefix":
        return positional(deps[:n])
    return n > sum(1 for d in deps if not d)
