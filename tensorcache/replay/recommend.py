"""Which eviction policy to use for a search like the one a trace recorded: replay it under each candidate
policy at each capacity, score each by the training seconds its served layers are worth
(``workload.layer_values``), and name the best with its margin over the runner-up and a bootstrap interval
of that margin over the trace's lookups.

Each replay's CPU time is kept beside its score: the engine's work is the same for every policy, so the
differences are what the policies themselves cost to run, to weigh against the training seconds they serve.

The interval resamples lookups with replacement and re-adds what each policy served them, holding each
replay's decisions fixed: it says how much the verdict rests on a few lookups of this trace, not how a
different search would go (replay traces of other seeds for that).
"""
from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..bound import value_bound
from ..policies.registry import POLICIES
from .engine import run
from .report import ReplayResult
from .stores import PolicyStore
from .workload import Workload

SCORES = ("all", "transfer", "revisit")  # which children's served layers count
CANDIDATES = ("fifo", "lru", "lfu", "donor-window", "evolution-aware")  # the built-in online policies


@dataclass(frozen=True)
class Verdict:
    """One capacity's ranking: every policy's score, the pick, its margin over the runner-up and the
    bootstrap interval of that margin (seconds), how often the pick stayed best, the bound's score, and the
    CPU seconds each policy's replay took."""

    capacity_bytes: int
    scores: dict[str, float]  # policy -> training seconds served (of the children ``score`` counts)
    best: str
    runner_up: str | None
    margin: float
    low: float  # bootstrap percentiles of the margin (NaN without a runner-up)
    high: float
    wins: float  # share of resamples in which ``best`` served the most
    bound: float  # value_bound: no schedule of this capacity serves more
    cpu_s: dict[str, float] = field(default_factory=dict)  # policy -> CPU seconds of its replay (when timed)


def per_lookup(result: ReplayResult, workload: Workload, score: str) -> np.ndarray:
    """Training seconds served to each lookup, in stream order, of the children ``score`` counts (0 elsewhere)."""
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    revisit = workload.revisit
    return np.array([s.value if score == "all" or revisit[s.model_id] == (score == "revisit") else 0.0
                     for s in result.served])


def verdict(results: dict[str, ReplayResult], workload: Workload, capacity_bytes: int, score: str = "all",
            resamples: int = 1000, seed: int = 0, confidence: float = 0.95,
            cpu_s: Mapping[str, float] | None = None) -> Verdict:
    """Rank the replays of one capacity (policy -> result) and bootstrap the pick's margin; ``cpu_s``: what
    each replay took, kept as given."""
    if not results:
        raise ValueError("no policy to rank")
    if resamples < 1 or not 0 < confidence < 1:
        raise ValueError(f"need resamples >= 1 and 0 < confidence < 1, got {resamples}, {confidence}")
    names = list(results)
    table = np.stack([per_lookup(results[n], workload, score) for n in names])  # policies x lookups
    totals = table.sum(axis=1)
    order = np.argsort(-totals, kind="stable")
    best = names[order[0]]
    bound = value_bound(workload, capacity_bytes, score)
    scores = dict(zip(names, totals.tolist()))
    cpu = dict(cpu_s or {})
    if len(names) == 1:
        return Verdict(capacity_bytes, scores, best, None, float("nan"), float("nan"), float("nan"), 1.0, bound, cpu)
    rng = np.random.default_rng(seed)
    lookups = table.shape[1]
    draws = np.stack([np.bincount(rng.integers(0, lookups, lookups), minlength=lookups)
                      for _ in range(resamples)]) if lookups else np.zeros((resamples, 0))
    sampled = draws @ table.T  # resamples x policies
    others = np.delete(sampled, order[0], axis=1).max(axis=1)
    margins = sampled[:, order[0]] - others
    tail = (1 - confidence) / 2 * 100
    return Verdict(capacity_bytes, scores, best, names[order[1]], float(totals[order[0]] - totals[order[1]]),
                   float(np.percentile(margins, tail)), float(np.percentile(margins, 100 - tail)),
                   float(np.mean(margins >= 0)), bound, cpu)


def overall(verdicts: Sequence[Verdict]) -> str | None:
    """The policy to recommend across the capacities: the most picks, then the highest mean share of each
    capacity's best score; None when no policy served anything at any capacity (nothing to choose on)."""
    if not any(v.scores[v.best] > 0 for v in verdicts):
        return None
    picks = [v.best for v in verdicts]
    names = verdicts[0].scores.keys()

    def standing(name: str) -> tuple[int, float]:
        shares = [v.scores[name] / v.scores[v.best] if v.scores[v.best] > 0 else 1.0 for v in verdicts]
        return picks.count(name), float(np.mean(shares))

    return max(names, key=standing)


def recommend(workload: Workload, capacities: Sequence[int], population_size: int, sample_size: int,
              policies: Sequence[str] = CANDIDATES, score: str = "all", inflight: bool = False,
              resamples: int = 1000, seed: int = 0) -> list[Verdict]:
    """One Verdict per capacity (bytes): every policy replayed as a search runs it (W = 4P for the windowed
    ones, as ``run_search`` sets), ranked by the training seconds it served, with each replay's CPU time."""
    for name in policies:
        if name not in POLICIES:
            raise ValueError(f"unknown policy {name!r}; known: {', '.join(sorted(POLICIES))}")
        if name == "belady":
            raise ValueError("belady needs the trace's future: it is a reference, not a policy a search can run")
    # the reference, the request stream and the schedule, made once here for every replay below: no policy's
    # CPU time includes them
    workload.unbounded, workload.clock, workload.steps(population_size, sample_size, inflight)  # noqa: B018
    out = []
    for capacity in capacities:
        results, cpu_s = {}, {}
        for name in policies:
            cls = POLICIES[name]
            policy = cls(window=4 * population_size) if "window" in cls.options else cls()
            started = time.process_time()
            results[name] = run(workload, PolicyStore(policy, capacity), name, capacity, population_size,
                                sample_size, inflight=inflight)
            cpu_s[name] = time.process_time() - started
        out.append(verdict(results, workload, capacity, score, resamples, seed, cpu_s=cpu_s))
    return out
