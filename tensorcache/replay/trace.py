"""Trace reading for replay: validate trace records into Evaluations, and the settings a trace implies."""
from __future__ import annotations

import os
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..trace import read_summary


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
    train_s: float | None = None  # the optional ``train_s`` field: seconds it trained


def parse_records(records: Sequence[Mapping[str, Any]]) -> list[Evaluation]:
    """Validate trace records (see ``trace.FIELDS``) into Evaluations; ValueError names the bad record."""
    out, seen = [], set()
    for n, rec in enumerate(records):
        try:
            model_id = str(rec["model_id"])
            keys = tuple(map(bytes.fromhex, rec["layer_keys"]))
            sizes = tuple(map(int, rec["layer_bytes"]))
            t_start, t_end = float(rec["t_start"]), float(rec["t_end"])
            parent, score, pos = rec.get("parent_id"), rec.get("score"), rec.get("mutation_pos")
            arch = None if rec.get("arch") is None else tuple(map(int, rec["arch"]))
            deps = None if rec.get("layer_deps") is None else tuple(tuple(map(int, d)) for d in rec["layer_deps"])
            revisit = rec.get("revisit")
            train_s = None if rec.get("train_s") is None else float(rec["train_s"])
            if revisit is not None and not isinstance(revisit, bool):
                raise ValueError(f"revisit must be true or false, got {revisit!r}")
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"trace record {n} is not replayable: {exc!r}") from None
        if deps is not None and len(deps) != len(keys):
            raise ValueError(f"trace record {n} ({model_id}): {len(deps)} layer_deps vs {len(keys)} layer keys")
        if train_s is not None and not 0 <= train_s < float("inf"):
            raise ValueError(f"trace record {n} ({model_id}): train_s must be a finite number >= 0, got {train_s}")
        if len(keys) != len(sizes) or any(b < 0 for b in sizes) or t_end < t_start:
            raise ValueError(f"trace record {n} ({model_id}): {len(keys)} layer keys vs {len(sizes)} layer bytes, "
                             f"sizes {list(sizes)[:8]}, t_start {t_start} > t_end {t_end}?")
        if model_id in seen:
            raise ValueError(f"trace record {n}: model_id {model_id!r} appears twice")
        seen.add(model_id)
        out.append(Evaluation(model_id, None if parent is None else str(parent), t_start, t_end,
                              None if score is None else float(score), None if pos is None else int(pos),
                              keys, sizes, arch, deps, revisit, train_s))
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
    settings = read_summary(trace_path).get("settings")
    return settings if isinstance(settings, dict) else {}
