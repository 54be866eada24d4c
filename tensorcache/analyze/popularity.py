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
    bounds = np.array([tr.population_bounds(r["t_start"]) for r in tr.children]).reshape(-1, 2)
    starts = [tr.start_index[r["model_id"]] for r in tr.children]
    ok = bounds[:, 1] > bounds[:, 0]
    out = []
    for _ in range(BASELINE_DRAWS if tr.children else 0):
        picks = rng.integers(bounds[ok, 0], bounds[ok, 1])
        out.append([(s, tr.finished[k]["model_id"]) for s, k in zip(np.array(starts)[ok], picks)])
    return out


def popularity(tr: Trace, out: str | os.PathLike, window: int, rng: np.random.Generator) -> list[Finding]:
    """Donor frequency in a sliding window and concentration on top donors, against uniform donor choice."""
    S = "Popularity"
    donations = [(tr.start_index[r["model_id"]], r["parent_id"]) for r in tr.children]
    counts = Counter(d for _, d in donations)
    top10, window_top = concentration(len(tr.records), donations, window)
    chance = np.array([concentration(len(tr.records), d, window) for d in uniform_donors(tr, rng)]).reshape(-1, 2)
    top8 = sorted(counts, key=counts.get, reverse=True)[:8]
    freq = windowed_counts(len(tr.records), donations, window, top8)
    starts = defaultdict(list)
    for i, d in donations:
        starts[d].append(i)
    spans = np.array([max(v) - min(v) + 1 for v in starts.values() if len(v) > 1], float)
    if not chance.size:
        tiering = (NOT_MEASURABLE, "no donations")
    else:
        hi = float(np.percentile(chance[:, 0], 97.5))
        tiering = (AGREES, f"the top 10% of donors take {top10:.1%} of donations against {chance[:, 0].mean():.1%} "
                           f"(95% up to {hi:.1%}) if each child's donor were a uniform pick from its population")\
            if top10 > hi else (DIFFERS, f"the top 10% of donors take {top10:.1%} of donations, no more than "
                                         f"{chance[:, 0].mean():.1%} (95% up to {hi:.1%}) with uniform donor choice")
    span_max = float(spans.max()) if spans.size else math.nan
    lasting = (NOT_MEASURABLE, f"a model leaves the population after P = {tr.P} newer evaluations (aging), so a "
                               f"donor's span is capped near P (longest here {span_max:.0f}); 'staying popular' "
                               "cannot outlast that in regularized evolution")
    popularity_plot(out, top8, freq, counts, window)
    return [
        Finding(S, "donors", "models that donated at least once", len(counts), "{:.0f}"),
        Finding(S, "donor_fraction", "share of all evaluated models that ever donated",
                len(counts) / len(tr.records), "{:.1%}"),
        Finding(S, "top10_share", "donations taken by the top 10% of donors (baseline: each child's donor a uniform "
                "pick from its population)", top10, "{:.1%}", mean_or_nan(chance[:, 0]) if chance.size else math.nan,
                *tiering),
        Finding(S, "max_donations", "donations of the most popular model", max(counts.values(), default=0),
                "{:.0f}"),
        Finding(S, "window_top_share", f"mean share of a {window}-evaluation window's donations taken by its "
                "top donor (same baseline)", window_top, "{:.1%}",
                mean_or_nan(chance[:, 1]) if chance.size else math.nan),
        Finding(S, "popular_span_median", "median evaluations between a donor's first and last donation "
                "(donors with >= 2)", median_or_nan(spans), "{:.1f}", float(tr.P), *lasting),
        Finding(S, "popular_span_max", "longest such span (evaluations)", span_max, "{:.0f}"),
    ]
