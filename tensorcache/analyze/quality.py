"""Question 4, quality: how long low-quality models persist, and when the best score stops improving."""
from __future__ import annotations

import math
import os

import numpy as np

from .base import (AGREES, BASELINE_DRAWS, BY_CONSTRUCTION, DIFFERS, LOW_QUANTILE, NOT_MEASURABLE, Finding, RunFacts,
                   Trace, mean_or_nan)
from .plots import quality_plot


def quality(tr: Trace, out: str | os.PathLike, facts: RunFacts) -> list[Finding]:
    """Donor score against the population, persistence of low-quality models, and best score over time."""
    S = "Quality"
    scored = [r for r in tr.records if r.score is not None]
    cut, source = facts.low_cut, facts.low_cut_source
    if cut is None:
        start = [r.score for r in scored if r.parent_id is None]
        cut = float(np.percentile(start, LOW_QUANTILE)) if len(start) >= 10 else math.nan
        source = (f"{LOW_QUANTILE}th percentile of the {len(start)} random initial architectures (a uniform "
                  "sample of the space)")
    pct, pop_stats = [], []
    for r in tr.records:
        pop = [m.score for m in tr.population_at(r.t_start) if m.score is not None]
        pop_stats.append((np.min(pop), np.median(pop), np.max(pop)) if pop else (math.nan,) * 3)
        if r.model_id in tr.child_ids and pop and tr.parent(r).score is not None:
            pct.append(np.mean(np.array(pop) <= tr.parent(r).score))
    low_share = np.array([np.mean([m.score is not None and m.score < cut
                                   for m in tr.population_at(r.t_end)]) for r in tr.finished])
    quarter = max(1, len(low_share) // 4)
    late = mean_or_nan(low_share[-quarter:])
    if not tr.children:
        persist = (NOT_MEASURABLE, "no mutated children: evolution never replaced a random initial model")
    elif math.isnan(cut):
        persist = (NOT_MEASURABLE, "no absolute cut: fewer than 10 random initial architectures and none given")
    elif late * tr.P >= 1:
        persist = (AGREES, f"the last quarter's populations hold {late * tr.P:.1f} models below {cut:.4g} on average")
    else:
        persist = (DIFFERS, f"the last quarter's populations hold {late * tr.P:.2f} models below {cut:.4g} on "
                            "average: evolution has pushed them out")
    best = np.maximum.accumulate([r.score for r in tr.finished if r.score is not None]) \
        if scored else np.zeros(0)
    gain = _late_gain(best)
    start = np.array([r.score for r in scored if r.parent_id is None], float)
    rng = np.random.default_rng(0)
    null = np.array([_late_gain(np.maximum.accumulate(rng.choice(start, best.size))) for _ in range(BASELINE_DRAWS)]
                    ) if len(start) >= 10 and best.size >= 2 else np.zeros(0)
    null = null[~np.isnan(null)]
    made = f"the second half of the search made {gain:.1%} of the best score's total improvement"
    if math.isnan(gain):
        returns = (NOT_MEASURABLE, "the best score never improved")
    elif not null.size:
        returns = (NOT_MEASURABLE, f"{made}; fewer than 10 random initial architectures to build the null "
                                   "(random search) from")
    else:
        lo, hi = float(np.percentile(null, 2.5)), float(np.percentile(null, 97.5))
        against = (f"{null.mean():.1%} [{lo:.1%}, {hi:.1%}] under the null: random search over the same space "
                   f"(as many draws from the {len(start)} random initial architectures' scores)")
        returns = (AGREES, f"{made}, less than {against}") if gain < lo else \
            (DIFFERS, f"{made}, more than {against}") if gain > hi else \
            (BY_CONSTRUCTION, f"{made}, like {against}: a running best flattens in any search")
    quality_plot(out, tr, pop_stats, best, cut)
    return [
        Finding(S, "donor_percentile", "mean percentile of a donor's score within the population when its "
                "child starts", mean_or_nan(np.array(pct)), "{:.1%}"),
        Finding(S, "low_cut", f"'low quality' cut: {source}", cut),
        Finding(S, "low_population_early", "share of the population below the cut, first quarter of the search",
                mean_or_nan(low_share[:quarter]), "{:.1%}"),
        Finding(S, "low_population_late", "same, last quarter of the search", late, "{:.1%}", None, *persist),
        Finding(S, "low_residence", "mean evaluations a model below the cut stays in the population",
                _residence(tr, cut), "{:.1f}"),
        Finding(S, "low_donations", "donations taken by models below the cut",
                mean_or_nan(np.array([tr.parent(r).score < cut for r in tr.children
                                if tr.parent(r).score is not None], float)), "{:.1%}"),
        Finding(S, "best_score", "best score found", float(best[-1]) if best.size else math.nan),
        Finding(S, "eval_to_90pct_improvement", "share of the evaluations needed to reach 90% of the total "
                "improvement of the best score", _reach(best, 0.9), "{:.1%}"),
        Finding(S, "last_half_improvement", "share of the total improvement made in the second half (baseline: "
                "random search)", gain, "{:.1%}", mean_or_nan(null), *returns),
    ]


def _residence(tr: Trace, threshold: float) -> float:
    """Mean number of completions a model below ``threshold`` stays in the last-P population."""
    n = len(tr.finished)
    stays = [min(tr.P, n - i) for i, r in enumerate(tr.finished) if r.score is not None and
             r.score < threshold]
    return float(np.mean(stays)) if stays else math.nan


def _reach(best: np.ndarray, level: float) -> float:
    """Fraction of evaluations after which the running best first reaches ``level`` of its total gain."""
    if best.size < 2 or best[-1] == best[0]:
        return math.nan
    target = best[0] + level * (best[-1] - best[0])
    return (int(np.argmax(best >= target)) + 1) / best.size


def _late_gain(best: np.ndarray) -> float:
    if best.size < 2 or best[-1] == best[0]:
        return math.nan
    return float((best[-1] - best[(best.size - 1) // 2]) / (best[-1] - best[0]))
