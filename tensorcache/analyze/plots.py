"""The report's figures (PNG, readable from 1 to 1024 workers); integer axes where they count things."""
from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..trace import TraceRecord
from .base import MAX_TIMELINE_ROWS, Trace, plural


DPI = 110
TIME_LABEL = "time since the search started (s; simulated for a tabular search)"


def save_figure(fig: Figure, out: str | os.PathLike, name: str) -> None:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(os.path.join(out, name), dpi=DPI)


def bar_plot(out, name, xs, ys, xlabel, ylabel, title) -> None:
    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    ax.bar(list(xs), ys, color="tab:blue")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    save_figure(fig, out, name)


def hist_plot(out, name, series, labels, integer_x, titles, ylabel="count") -> None:
    """One histogram per series, side by side, each with its title; whole-number series get one bar per
    value, centred on it."""
    fig = Figure(figsize=(3.8 * len(series), 3.6))
    for k, (data, label, whole, title) in enumerate(zip(series, labels, integer_x, titles)):
        ax = fig.add_subplot(1, len(series), k + 1)
        if len(data):
            bins = integer_bins(data) if whole else min(30, max(5, len(set(data.tolist()))))
            ax.hist(data, bins=bins, color="tab:blue", edgecolor="white", linewidth=0.5)
        ax.set(xlabel=label, ylabel=ylabel, title=title)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        if whole:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    save_figure(fig, out, name)


def integer_bins(data: np.ndarray) -> np.ndarray:
    """Bin edges half-way between whole numbers, so each bar is centred on its value."""
    lo, hi = int(np.floor(np.min(data))), int(np.ceil(np.max(data)))
    return np.arange(lo, hi + 2) - 0.5


def legend_outside(ax) -> None:
    """The legend to the right of the axes, off the data."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, borderaxespad=0.0)


def _spans(records: Sequence[TraceRecord], warm: bool) -> list[tuple[float, float]]:
    return [(r.t_start, r.t_end - r.t_start) for r in records if (r.bytes_served > 0) == warm]


def timeline_plot(out, tr: Trace) -> None:
    """One row per worker up to MAX_TIMELINE_ROWS; beyond, evenly spaced sample rows plus a panel of how many
    evaluations run at once, so the figure keeps a readable size for any number of workers."""
    shown = tr.workers if len(tr.workers) <= MAX_TIMELINE_ROWS else \
        [tr.workers[round(i)] for i in np.linspace(0, len(tr.workers) - 1, MAX_TIMELINE_ROWS // 2)]
    sampled = len(shown) < len(tr.workers)
    fig = Figure(figsize=(10, (4.0 if sampled else 0) + max(2.6, 1.3 + 0.22 * len(shown))))
    if sampled:
        ax0 = fig.add_subplot(2, 1, 1)
        _concurrency(ax0, tr)
        ax = fig.add_subplot(2, 1, 2)
    else:
        ax = fig.add_subplot()
    rows = {w: i for i, w in enumerate(shown)}
    for w, row in rows.items():
        mine = [r for r in tr.records if r.worker == w]
        ax.broken_barh(_spans(mine, False), (row - 0.4, 0.8), facecolor="tab:gray", edgecolor="white", linewidth=0.3,
                       label="cold" if row == 0 else None)
        ax.broken_barh(_spans(mine, True), (row - 0.4, 0.8), facecolor="tab:orange", edgecolor="white",
                       linewidth=0.3, label="warm-started" if row == 0 else None)
    ax.set_yticks(list(rows.values()), [str(w) for w in rows], fontsize=7 if len(rows) > 16 else 9)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    what = f"{len(shown)} of {len(tr.workers)} workers, evenly spaced" if sampled else plural(len(shown), "worker")
    ax.set(xlabel=TIME_LABEL, ylabel="worker", title=f"Evaluations per worker ({what})")
    legend_outside(ax)
    save_figure(fig, out, "worker_timeline.png")


def _concurrency(ax, tr: Trace) -> None:
    """Evaluations running at each moment, warm-started and cold, stacked."""
    for warm, colour, label in ((False, "tab:gray", "cold"), (True, "tab:orange", "warm-started")):
        events = sorted([(s, 1) for s, _ in _spans(tr.records, warm)] + [(s + d, -1) for s, d in _spans(tr.records, warm)])
        if events:
            t, step = zip(*events)
            ax.step(t, np.cumsum(step), where="post", color=colour, label=label)
    ax.set(xlabel=TIME_LABEL, ylabel="evaluations running", title=f"Evaluations running at once "
           f"({plural(len(tr.workers), 'worker')})")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    legend_outside(ax)


def popularity_plot(out, donors, freq, counts, window) -> None:
    fig = Figure(figsize=(10, 4))
    ax = fig.add_subplot()
    for j, d in enumerate(donors):
        ax.plot(freq[:, j], label=f"{d} ({counts[d]})")
    ax.set(xlabel="evaluation (start order)", ylabel=f"donations in last {window}",
           title="Donor popularity in a sliding window (top 8 donors)")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    if counts:
        legend_outside(ax)
    save_figure(fig, out, "donor_popularity.png")


def quality_plot(out, tr: Trace, pop_stats, best, cut: float) -> None:
    fig = Figure(figsize=(10, 4))
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    lo, med, hi = (np.array(s, float) for s in zip(*pop_stats))
    x = np.arange(len(tr.records))
    ax1.fill_between(x, lo, hi, color="tab:blue", alpha=0.2, label="population min-max")
    ax1.plot(x, med, color="tab:blue", label="population median")
    kids = [(tr.start_index[r.model_id], tr.parent(r).score) for r in tr.children
            if tr.parent(r).score is not None]
    if kids:
        ax1.scatter(*zip(*kids), s=6, color="tab:red", label="donor score")
    if not math.isnan(cut):
        ax1.axhline(cut, color="black", linestyle=":", label="low-quality cut")
    ax1.set(xlabel="evaluation (start order)", ylabel="score", title="Donor vs population")
    ax1.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2)
    ax2.plot(np.arange(1, best.size + 1), best, color="tab:green")
    ax2.set(xlabel="evaluations finished", ylabel="best score", title="Best score so far")
    ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
    save_figure(fig, out, "quality.png")
