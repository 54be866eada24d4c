"""Question 3, popularity: how concentrated donations are in a window, and how long popular donors stay so."""
from __future__ import annotations

import math
import os
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from .base import AGREES, BASELINE_DRAWS, DIFFERS, NOT_MEASURABLE, Finding, Trace, mean_or_nan, median_or_nan
from .plots import popularity_plot


def windowed_counts(n_records: int, donations: Sequence[tuple[int, Any]], window: int,
                    donors: Sequence[Any]) -> np.ndarray:
    """Per evaluation (start order), how often each of ``donors`` donated in the last ``window`` evaluations;
    ``donations`` = (start index of the child, donor)."""
    col = {d: j for j, d in enumerate(donors)}
    hits = np.zeros((n_records, len(donors)))
    for i, d in donations:
        if d in col:
            hits[i, col[d]] += 1
    csum = np.cumsum(hits, axis=0)
    lagged = np.vstack([np.zeros((window, len(donors))), csum[:-window]]) if window < len(csum) else \
        np.zeros_like(csum)
    return csum - lagged[: len(csum)]


def window_top_share(n_records: int, donations: Sequence[tuple[int, Any]], window: int) -> float:
    """Mean, over evaluations whose last ``window`` evaluations saw a donation, of the top donor's share."""
    at: dict[int, list[Any]] = defaultdict(list)
    for i, d in donations:
        at[i].append(d)
    counts: Counter = Counter()
    tally: Counter = Counter()  # how many donors have each count
    top = total = 0
    shares = []
    for j in range(n_records):
        for d in at.get(j, ()):
            tally[counts[d]] -= 1
            counts[d] += 1
            tally[counts[d]] += 1
            top, total = max(top, counts[d]), total + 1
        for d in at.get(j - window, ()):
            tally[counts[d]] -= 1
            if counts[d] == top and tally[top] == 0:
                top -= 1
            counts[d] -= 1
            tally[counts[d]] += 1
            total -= 1
        if total:
            shares.append(top / total)
    return mean_or_nan(np.array(shares))


def concentration(n_records: int, donations: Sequence[tuple[int, Any]], window: int) -> tuple[float, float]:
    """(share of donations taken by the top 10% of donors, mean share of a window's donations by its top donor)."""
    ranked = sorted(Counter(d for _, d in donations).values(), reverse=True)
    total = sum(ranked)
    top10 = sum(ranked[: max(1, math.ceil(0.1 * len(ranked)))]) / total if total else math.nan
    return top10, window_top_share(n_records, donations, window)


def uniform_donors(tr: Trace, rng: np.random.Generator) -> list[list[tuple[int, Any]]]:
    """BASELINE_DRAWS donation lists in which each child's donor is a uniform draw from its population."""
    bounds = np.array([tr.population_bounds(r.t_start) for r in tr.children]).reshape(-1, 2)
    starts = [tr.start_index[r.model_id] for r in tr.children]
    ok = bounds[:, 1] > bounds[:, 0]
    out = []
    for _ in range(BASELINE_DRAWS if tr.children else 0):
        picks = rng.integers(bounds[ok, 0], bounds[ok, 1])
        out.append([(s, tr.finished[k].model_id) for s, k in zip(np.array(starts)[ok], picks)])
    return out


def tournament_donors(tr: Trace, sample: int, rng: np.random.Generator) -> list[list[tuple[int, Any]]]:
    """BASELINE_DRAWS donation lists in which each child's donor is the winner of a tournament of ``sample``
    members drawn without replacement from its population (the same population history, the same scores): the
    member ranked r of n wins with probability C(n-1-r, S-1) / C(n, S)."""
    picks_per_child = []
    for r in tr.children:
        lo, hi = tr.population_bounds(r.t_start)
        if hi <= lo:
            continue
        members = tr.finished[lo:hi]
        ranked = sorted(range(len(members)), key=lambda k: -float(members[k].score))  # stable: older first
        n, s = len(members), min(sample, len(members))
        p = np.array([math.comb(n - 1 - k, s - 1) for k in range(n)], float) / math.comb(n, s)
        draws = np.searchsorted(np.cumsum(p), rng.random(BASELINE_DRAWS) * p.sum(), side="right").clip(0, n - 1)
        picks_per_child.append((tr.start_index[r.model_id], [members[ranked[k]].model_id for k in draws]))
    if not picks_per_child:
        return []
    return [[(start, picks[d]) for start, picks in picks_per_child] for d in range(BASELINE_DRAWS)]


def popularity(tr: Trace, out: str | os.PathLike, window: int, rng: np.random.Generator,
               sample: int | None = None) -> list[Finding]:
    """Donor frequency in a sliding window and concentration on top donors, against the null the algorithm
    implies: tournaments of ``sample`` (S) over the same population history (uniform choice when S is unknown)."""
    S = "Popularity"
    donations = [(tr.start_index[r.model_id], r.parent_id) for r in tr.children]
    counts = Counter(d for _, d in donations)
    top10, window_top = concentration(len(tr.records), donations, window)
    null_draws = tournament_donors(tr, sample, rng) if sample else uniform_donors(tr, rng)
    null = (f"tournament selection alone (best of S = {sample} from each child's population)" if sample else
            "each child's donor a uniform pick from its population (S unknown: give --sample or a summary.json)")
    chance = np.array([concentration(len(tr.records), d, window) for d in null_draws]).reshape(-1, 2)
    top8 = sorted(counts, key=counts.get, reverse=True)[:8]
    freq = windowed_counts(len(tr.records), donations, window, top8)
    starts = defaultdict(list)
    for i, d in donations:
        starts[d].append(i)
    spans = np.array([max(v) - min(v) + 1 for v in starts.values() if len(v) > 1], float)
    if not chance.size:
        tiering = (NOT_MEASURABLE, "no donations")
    else:
        lo, hi = float(np.percentile(chance[:, 0], 2.5)), float(np.percentile(chance[:, 0], 97.5))
        against = f"{chance[:, 0].mean():.1%} [{lo:.1%}, {hi:.1%}] under the null: {null}"
        tiering = (AGREES, f"the top 10% of donors take {top10:.1%} of donations, more than {against}")\
            if top10 > hi else (DIFFERS, f"the top 10% of donors take {top10:.1%} of donations, no more than "
                                         f"{against}: the selection rule explains the concentration")
    span_max = float(spans.max()) if spans.size else math.nan
    longest = f"longest here {span_max:.0f}" if spans.size else "no model donated twice here"
    lasting = (NOT_MEASURABLE, f"a model leaves the population after P = {tr.P} newer evaluations (aging), so a "
                               f"donor's span is capped near P ({longest}); 'staying popular' "
                               "cannot outlast that in regularized evolution")
    popularity_plot(out, top8, freq, counts, window)
    return [
        Finding(S, "donors", "models that donated at least once", len(counts), "{:.0f}"),
        Finding(S, "donor_fraction", "share of all evaluated models that ever donated",
                len(counts) / len(tr.records), "{:.1%}"),
        Finding(S, "top10_share", f"donations taken by the top 10% of donors (baseline: {null})", top10, "{:.1%}", mean_or_nan(chance[:, 0]) if chance.size else math.nan,
                *tiering),
        Finding(S, "max_donations", "donations of the most popular model", max(counts.values(), default=0),
                "{:.0f}"),
        Finding(S, "window_top_share", f"mean share of a {window}-evaluation window's donations taken by its "
                "top donor (same null)", window_top, "{:.1%}",
                mean_or_nan(chance[:, 1]) if chance.size else math.nan),
        Finding(S, "popular_span_median", "median evaluations between a donor's first and last donation "
                "(donors with >= 2)", median_or_nan(spans), "{:.1f}", float(tr.P), *lasting),
        Finding(S, "popular_span_max", "longest such span (evaluations)", span_max, "{:.0f}"),
    ]
