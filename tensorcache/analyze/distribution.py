"""Question 2, distribution: whether workers reread the tensors they touched, against shuffled assignments."""
from __future__ import annotations

import math
import os
from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np

from ..trace import TraceRecord
from .base import (AGREES, BASELINE_DRAWS, DIFFERS, NOT_MEASURABLE, OCCUPANCY_DRAWS, Finding, Trace, mean_or_nan,
                   median_or_nan, percentile_or_nan)
from .plots import hist_plot, timeline_plot


def reuse_pairs(tr: Trace) -> list[tuple[int, int]]:
    """Per donation: (record index of the previous touch of the donor's tensors, record index of the child).
    The first touch is the donor's own insert; later ones are its earlier children's reads."""
    by_parent: dict[str, list[TraceRecord]] = defaultdict(list)
    for r in tr.children:
        by_parent[r.parent_id].append(r)
    out = []
    for pid, kids in by_parent.items():
        prev = pid
        for kid in kids:
            out.append((tr.start_index[prev], tr.start_index[kid.model_id]))
            prev = kid.model_id
    return out


def reuse_events(tr: Trace) -> list[tuple[float, int, bool]]:
    """Per donation: (time since the donor's tensors were last touched, evaluations started since then,
    same worker as that last touch). The first touch is the donor's own insert at t_end."""
    out = []
    for a, b in reuse_pairs(tr):
        prev, kid = tr.records[a], tr.records[b]
        prev_t = prev.t_end if kid.parent_id == prev.model_id else prev.t_start
        prev_i = int(np.searchsorted(tr.starts, prev_t)) if kid.parent_id == prev.model_id else a
        out.append((kid.t_start - prev_t, max(0, b - prev_i), kid.worker == prev.worker))
    return out


def shuffled_same_worker(tr: Trace, pairs: Sequence[tuple[int, int]], rng: np.random.Generator) -> np.ndarray:
    """Same-worker share of successive reads when evaluations are dealt to workers at random (same counts)."""
    if not pairs:
        return np.zeros(0)
    codes = np.array([tr.workers.index(r.worker) for r in tr.records])
    a, b = np.array(pairs).T
    return np.array([np.mean(perm[a] == perm[b]) for perm in (rng.permutation(codes) for _ in range(BASELINE_DRAWS))])


def occupancy_same_worker(tr: Trace, pairs: Sequence[tuple[int, int]], rng: np.random.Generator,
                          draws: int = OCCUPANCY_DRAWS) -> np.ndarray:
    """Same-worker share of successive reads when each evaluation, at its recorded start, goes to a worker
    picked at random among those free then (a worker runs one job at a time; none free: the first to free up)."""
    if not pairs:
        return np.zeros(0)
    starts = np.array([r.t_start for r in tr.records], float)
    ends = np.array([r.t_end for r in tr.records], float)
    a, b = np.array(pairs).T
    out = np.empty(draws)
    for n in range(draws):
        free_at = np.full(len(tr.workers), -np.inf)
        assign = np.empty(len(starts), int)
        for i, (t0, t1) in enumerate(zip(starts, ends)):
            free = np.flatnonzero(free_at <= t0)
            k = int(free[rng.integers(free.size)]) if free.size else int(np.argmin(free_at))
            assign[i], free_at[k] = k, t1
        out[n] = np.mean(assign[a] == assign[b])
    return out


def distribution(tr: Trace, out: str | os.PathLike, rng: np.random.Generator) -> list[Finding]:
    """Worker timelines, cross-worker donations, reuse distance, and per-worker locality against chance."""
    S = "Distribution"
    workers = Counter(r.worker for r in tr.records)
    shares = np.array(list(workers.values()), float) / len(tr.records)
    cross = np.array([r.worker != tr.parent(r).worker for r in tr.children], float)
    reuse = reuse_events(tr)
    dt = np.array([d for d, _, _ in reuse], float)
    dn = np.array([n for _, n, _ in reuse], float)
    same = mean_or_nan(np.array([s for _, _, s in reuse], float))
    shuffled = shuffled_same_worker(tr, reuse_pairs(tr), rng)
    chance = occupancy_same_worker(tr, reuse_pairs(tr), rng) if len(workers) > 1 else shuffled
    if len(workers) == 1 or not chance.size:
        verdict = (NOT_MEASURABLE, "one worker: every read is on the same worker" if len(workers) == 1 else
                   "no donations")
    else:
        lo, hi = float(np.percentile(chance, 2.5)), float(np.percentile(chance, 97.5))
        against = (f"{mean_or_nan(chance):.1%} [{lo:.1%}, {hi:.1%}] under the null: each evaluation goes to a "
                   "random worker among those free when it starts (a worker runs one job at a time)")
        verdict = (AGREES, f"{same:.1%} of successive reads stay on one worker, more than {against}") if same > hi \
            else (DIFFERS, f"{same:.1%} of successive reads stay on one worker, no more than {against}: which "
                           "worker is free explains it, the scheduler does not keep donors local")
    cache_donor = [r for r in tr.children if r.donor_id is not None]
    timeline_plot(out, tr)
    hist_plot(out, "reuse_distance.png", [dt, dn], ["seconds since the donor's tensors were last touched",
                                                "evaluations started since the last touch"], integer_x=[False, True],
              titles=["Reuse distance in time", "Reuse distance in evaluations"], ylabel="transfers")
    span = max(r.t_end for r in tr.records) - min(r.t_start for r in tr.records)
    busy = sum(r.t_end - r.t_start for r in tr.records)
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
                "a random free worker at each start)", same, "{:.1%}", mean_or_nan(chance), *verdict),
        Finding(S, "same_worker_reuse_shuffled", "the same share if evaluations were dealt to workers at random, "
                "ignoring that a worker runs one job at a time (a weaker null, for comparison)",
                mean_or_nan(shuffled), "{:.1%}"),
        Finding(S, "cache_donor_is_parent", "children whose recorded cache donor is their parent",
                mean_or_nan(np.array([r.donor_id == r.parent_id for r in cache_donor], float)), "{:.1%}"),
    ]
