"""Trace reading for replay: trace records (read by ``tensorcache.trace``) as Evaluations, and the settings a
trace implies."""
from __future__ import annotations

import os
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..trace import TraceRecord, as_records, read_summary, summary_settings


@dataclass(frozen=True)
class Evaluation:
    """The fields of one trace record that replay needs, keys as bytes."""

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
    train_s: float | None = None  # the optional ``train_s`` field: seconds it trained


def parse_records(records: Iterable[TraceRecord | Mapping[str, Any]]) -> list[Evaluation]:
    """Replay's view of trace records (validated as ``TraceRecord``, the one reader; revisits marked as
    ``read_records`` marks them); ValueError names the bad record, a duplicate id or a key that is not hex."""
    out, seen = [], set()
    for n, rec in enumerate(as_records(records)):
        if rec.model_id in seen:
            raise ValueError(f"trace record {n}: model_id {rec.model_id!r} appears twice")
        seen.add(rec.model_id)
        try:
            keys = tuple(map(bytes.fromhex, rec.layer_keys))
        except ValueError as exc:
            raise ValueError(f"trace record {n} ({rec.model_id}): a layer key is not hex ({exc})") from None
        deps = None if rec.layer_deps is None else tuple(map(tuple, rec.layer_deps))
        out.append(Evaluation(rec.model_id, rec.parent_id, rec.t_start, rec.t_end, rec.score, rec.mutation_pos,
                              keys, tuple(rec.layer_bytes), tuple(rec.arch), deps, rec.revisit, rec.train_s))
    return out


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


def trace_settings(trace_path: str | os.PathLike) -> dict[str, Any]:
    """The ``settings`` of the ``summary.json`` that ``run_search`` writes beside its trace ({} if none):
    ``population``, ``sample`` and ``transfer`` (the mode) are what replay and analysis use."""
    return summary_settings(read_summary(trace_path))
