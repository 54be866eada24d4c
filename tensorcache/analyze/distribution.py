"""Question 2, distribution: whether workers reread the tensors they touched, against shuffled assignments."""
from __future__ import annotations

import math
import os
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .base import (AGREES, BASELINE_DRAWS, DIFFERS, NOT_MEASURABLE, Finding, Trace, mean_or_nan, median_or_nan,
    percentile_or_nan)
from .plots import hist_plot, timeline_plot


def reuse_pairs(tr: Trace) -> list[tuple[int, int]]:
    """Per donation: (record index of the previous touch of the donor's tensors, record index of the child).
    The first touch is the donor's own insert; later ones are its earlier children's reads."""
    by_parent: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in tr.children:
        by_parent[r["parent_id"]].append(r)
    out = []
    for pid, kids in by_parent.items():
        prev = pid
        for kid in kids:
            out.append((tr.start_index[prev], tr.start_index[kid["model_id"]]))
            prev = kid["model_id"]
    return out


def reuse_events(tr: Trace) -> list[tuple[float, int, bool]]:
    """Per donation: (time since the donor's tensors were last touched, evaluations started since then,
    same worker as that last touch). The first touch is the donor's own insert at t_end."""
    out = []
    for a, b in reuse_pairs(tr):
        prev, kid = tr.records[a], tr.records[b]
        prev_t = prev["t_end"] if kid["parent_id"] == prev["model_id"] else prev["t_start"]
        prev_i = int(np.searchsorted(tr.starts, prev_t)) if kid["parent_id"] == prev["model_id"] else a
        out.append((kid["t_start"] - prev_t, max(0, b - prev_i), kid["worker"] == prev["worker"]))
    return out


def shuffled_same_worker(tr: Trace, pairs: Sequence[tuple[int, int]], rng: np.random.Generator) -> np.ndarray:
    """Same-worker share of successive reads when evaluations are dealt to workers at random (same counts)."""
    if not pairs:
        return np.zeros(0)
    codes = np.array([tr.workers.index(r["worker"]) for r in tr.records])
    a, b = np.array(pairs).T
    return np.array([np.mean(perm[a] == perm[b]) for perm in (rng.permutation(codes) for _ in range(BASELINE_DRAWS))])


def distribution(tr: Trace, out: str | os.PathLike, rng: np.random.Generator) -> list[Finding]:
    """Worker timelines, cross-worker donations, reuse distance, and per-worker locality against chance."""
    S = "Distribution"
    workers = Counter(r["worker"] for r in tr.records)
    shares = np.array(list(workers.values()), float) / len(tr.records)
    cross = np.array([r["worker"] != tr.parent(r)["worker"] for r in tr.children], float)
    reuse = reuse_events(tr)
    dt = np.array([d for d, _, _ in reuse], float)
    dn = np.array([n for _, n, _ in reuse], float)
    same = mean_or_nan(np.array([s for _, _, s in reuse], float))
    chance = shuffled_same_worker(tr, reuse_pairs(tr), rng)
    if len(workers) == 1 or not chance.size:
        verdict = (NOT_MEASURABLE, "one worker: every read is on the same worker" if len(workers) == 1 else
                   "no donations")
    else:
        hi = float(np.percentile(chance, 97.5))
        verdict = (AGREES, f"{same:.1%} of successive reads stay on one worker against {mean_or_nan(chance):.1%} "
                           f"(95% up to {hi:.1%}) when evaluations are dealt to workers at random") if same > hi else \
            (DIFFERS, f"{same:.1%} of successive reads stay on one worker, no more than {mean_or_nan(chance):.1%} "
                      f"(95% up to {hi:.1%}) with a random assignment: the scheduler does not keep donors local")
    cache_donor = [r for r in tr.children if r.get("donor_id") is not None]
    timeline_plot(out, tr)
    hist_plot(out, "reuse_distance.png", [dt, dn], ["seconds since the donor's tensors were last touched",
                                                "evaluations started since the last touch"], integer_x=[False, True],
              titles=["Reuse distance in time", "Reuse distance in evaluations"], ylabel="transfers")
    span = max(r["t_end"] for r in tr.records) - min(r["t_start"] for r in tr.records)
    busy = sum(r["t_end"] - r["t_start"] for r in tr.records)
    return [
        Finding(S, "workers", "workers", len(workers), "{:.0f}"),
        Finding(S, "utilisation", "busy worker time / (workers x search span)",
                busy / (len(workers) * span) if span > 0 else math.nan, "{:.1%}"),
        Finding(S, "cross_worker_share", "children run on a different worker than their parent",
                mean_or_nan(cross), "{:.1%}", 1 - float((shares ** 2).sum())),
        Finding(S, "reuse_time_median", "median time between successive reads of a donor's tensors",
                median_or_nan(dt), "{:.3g}"),
        Finding(S, "reuse_time_p90", "90th percentile of that time", percentile_or_nan(dt, 90), "{:.3g}"),
        Finding(S, "reuse_evals_median", "median evaluations started between successive reads",
                median_or_nan(dn), "{:.1f}"),
        Finding(S, "same_worker_reuse", "successive reads of a donor's tensors on the same worker (baseline: "
                "evaluations dealt to workers at random)", same, "{:.1%}", mean_or_nan(chance), *verdict),
        Finding(S, "cache_donor_is_parent", "children whose recorded cache donor is their parent",
                mean_or_nan(np.array([r["donor_id"] == r["parent_id"] for r in cache_donor], float)), "{:.1%}"),
    ]
