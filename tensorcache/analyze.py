"""``tensorcache analyze``: the study's four questions answered on a search trace, as numbers and plots.

Underwood et al. (2023) ask how architectures evolve under regularized evolution (structure), how
evolution looks across distributed workers (distribution), when donors become and stop being popular
(popularity), and how model quality changes (quality). ``analyze`` computes each finding from the trace
(one record per evaluation, see ``tensorcache.trace``) and writes ``report.md`` plus PNG plots.

Conventions: the *donor* of a child is its regularized-evolution parent (the model whose prefix layers it
inherits); the cache's own ``donor_id`` is compared against it. Evaluations are numbered in start
order; the population at a time is the last P models finished by then (P from the caller, else inferred).
"""
from __future__ import annotations

import math
import os
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .replay import infer_population_size, parse_records

SECTIONS = ("Structure", "Distribution", "Popularity", "Quality")

# What the study's summary (arXiv:2309.12576) states per question, in our words; it gives no numbers.
STUDY = {
    "middle_third_share": "mutations often land in the middle of the architecture sequence",
    "layers_transferable": "regularized evolution leaves a limited number of transferable layers",
    "reuse_evals_median": "workers show temporal locality in which model tensors they access",
    "top10_share": "a clear tiering: a few models dominate as donors while others fade quickly",
    "window_top_share": "popularity = how often a model is a donor within a sliding window",
    "popular_span_median": "once a model becomes popular it tends to stay relevant for longer",
    "bottom_quartile_population_late": "low-quality models persist throughout the search",
    "eval_to_90pct_improvement": "high-performing models show diminishing returns as the search goes on",
}


@dataclass(frozen=True)
class Finding:
    """One number of the report: its section, key, label, value and a format for the value."""

    section: str
    key: str
    label: str
    value: float
    fmt: str = "{:.3g}"

    def text(self) -> str:
        return "n/a" if self.value is None or math.isnan(self.value) else self.fmt.format(self.value)


class Trace:
    """Trace records indexed for the analyses: start order, completion order, ids, populations."""

    def __init__(self, records: Sequence[Mapping[str, Any]], population_size: int | None = None) -> None:
        if not records:
            raise ValueError("the trace has no records")
        parse_records(records)  # validates ids, times and layer fields
        self.records = sorted(records, key=lambda r: (r["t_start"], r["t_end"]))
        self.by_id = {r["model_id"]: r for r in self.records}
        self.start_index = {r["model_id"]: i for i, r in enumerate(self.records)}
        self.starts = [r["t_start"] for r in self.records]
        self.finished = sorted(self.records, key=lambda r: r["t_end"])
        self.ends = [r["t_end"] for r in self.finished]
        self.P = population_size or infer_population_size(parse_records(self.records))
        self.children = [r for r in self.records if r.get("parent_id") in self.by_id]
        self.child_ids = {r["model_id"] for r in self.children}

    def parent(self, r: Mapping[str, Any]) -> Mapping[str, Any]:
        return self.by_id[r["parent_id"]]

    def population_at(self, t: float) -> list[Mapping[str, Any]]:
        """The last P models finished at or before ``t``, oldest first."""
        n = int(np.searchsorted(self.ends, t, side="right"))
        return self.finished[max(0, n - self.P):n]


def analyze(records: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike, population_size: int | None = None,
            window: int | None = None, title: str = "trace") -> list[Finding]:
    """Write ``out_dir/report.md`` and its PNGs; return the findings."""
    os.makedirs(out_dir, exist_ok=True)
    tr = Trace(records, population_size)
    window = window or tr.P
    findings = structure(tr, out_dir) + distribution(tr, out_dir) + popularity(tr, out_dir, window) + \
        quality(tr, out_dir)
    with open(os.path.join(out_dir, "report.md"), "w", encoding="utf-8") as f:
        f.write(render(tr, findings, window, title))
    return findings


# ---------------------------------------------------------------------------------------------- 1. structure
def shared_prefix(a: Sequence[Any], b: Sequence[Any]) -> int:
    """Length of the common leading run of two sequences."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def structure(tr: Trace, out: str | os.PathLike) -> list[Finding]:
    """Mutation positions, shared prefix with the parent, and what a child could inherit."""
    S = "Structure"
    muts = [(r["mutation_pos"], len(r["arch"])) for r in tr.records if r.get("mutation_pos") is not None]
    rel = np.array([p / (n - 1) if n > 1 else 0.5 for p, n in muts])
    uniform = [np.mean([1 / 3 <= q / (n - 1) <= 2 / 3 for q in range(n)]) if n > 1 else 1.0 for _, n in muts]
    prefix = np.array([shared_prefix(r["arch"], tr.parent(r)["arch"]) for r in tr.children])
    layers, nbytes, compat, actual = [], [], [], []
    for r in tr.children:
        pk, own, sizes = tr.parent(r)["layer_keys"], r["layer_keys"], r["layer_bytes"]
        run = shared_prefix(own, pk)
        total = sum(sizes) or 1
        layers.append(run / max(1, len(own)))
        nbytes.append(sum(sizes[:run]) / total)
        keys = set(pk)
        compat.append(sum(b for k, b in zip(own, sizes) if k in keys) / total)
        actual.append((r.get("transfer_bytes") or 0) / total)
    seen: set[tuple[int, ...]] = set()
    repeats = 0
    for r in tr.records:
        repeats += tuple(r["arch"]) in seen
        seen.add(tuple(r["arch"]))
    n_pos = max((n for _, n in muts), default=max(len(r["arch"]) for r in tr.records))
    hist = np.bincount([p for p, _ in muts], minlength=n_pos) if muts else np.zeros(n_pos, int)
    _bar(out, "mutation_positions.png", range(n_pos), hist, "mutation position", "children",
         "Where mutations land")
    _hist(out, "shared_prefix.png", [prefix, np.array(nbytes)], ["shared prefix length (positions)",
                                                                "fraction of bytes transferable from parent"])
    return [
        Finding(S, "mutations", "children with a recorded mutation", len(muts), "{:.0f}"),
        Finding(S, "middle_third_share", "share of mutations in the middle third of the sequence "
                "(position / (length - 1) in [1/3, 2/3])", _mean(((rel >= 1 / 3) & (rel <= 2 / 3)).astype(float)),
                "{:.1%}"),
        Finding(S, "middle_third_uniform", "same, if mutations were uniform over positions", _mean(np.array(uniform)),
                "{:.1%}"),
        Finding(S, "mean_relative_position", "mean mutation position / (length - 1)", _mean(rel), "{:.2f}"),
        Finding(S, "shared_prefix_mean", "mean shared prefix with the parent (positions)", _mean(prefix), "{:.2f}"),
        Finding(S, "layers_transferable", "mean fraction of layers transferable from the parent (prefix rule)",
                _mean(np.array(layers)), "{:.1%}"),
        Finding(S, "bytes_transferable", "mean fraction of bytes transferable from the parent (prefix rule)",
                _mean(np.array(nbytes)), "{:.1%}"),
        Finding(S, "bytes_key_matching", "mean fraction of bytes whose layer key the parent holds anywhere "
                "(compatible rule)", _mean(np.array(compat)), "{:.1%}"),
        Finding(S, "bytes_transferred", "mean fraction of bytes the recorded run actually transferred (from "
                "any cached donor)", _mean(np.array(actual)), "{:.1%}"),
        Finding(S, "repeated_arch_share", "evaluations of an architecture that an earlier evaluation already had",
                repeats / len(tr.records), "{:.1%}"),
    ]


# ------------------------------------------------------------------------------------------- 2. distribution
def reuse_events(tr: Trace) -> list[tuple[float, int, bool]]:
    """Per donation: (time since the donor's tensors were last touched, evaluations started since then,
    same worker as that last touch). The first touch is the donor's own insert at t_end."""
    by_parent: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in tr.children:
        by_parent[r["parent_id"]].append(r)
    out = []
    for pid, kids in by_parent.items():
        prev = tr.by_id[pid]
        prev_t, prev_i = prev["t_end"], int(np.searchsorted(tr.starts, prev["t_end"]))
        for kid in kids:
            i = tr.start_index[kid["model_id"]]
            out.append((kid["t_start"] - prev_t, max(0, i - prev_i), kid["worker"] == prev["worker"]))
            prev, prev_t, prev_i = kid, kid["t_start"], i
    return out


def distribution(tr: Trace, out: str | os.PathLike) -> list[Finding]:
    """Worker timelines, cross-worker donations, and reuse distance of donor tensors."""
    S = "Distribution"
    workers = Counter(r["worker"] for r in tr.records)
    shares = np.array(list(workers.values()), float) / len(tr.records)
    cross = np.array([r["worker"] != tr.parent(r)["worker"] for r in tr.children], float)
    reuse = reuse_events(tr)
    dt = np.array([d for d, _, _ in reuse], float)
    dn = np.array([n for _, n, _ in reuse], float)
    same = np.array([s for _, _, s in reuse], float)
    cache_donor = [r for r in tr.children if r.get("donor_id") is not None]
    _timeline(out, tr)
    _hist(out, "reuse_distance.png", [dt, dn], ["time since the donor's tensors were last touched",
                                                "evaluations started since the last touch"])
    span = max(r["t_end"] for r in tr.records) - min(r["t_start"] for r in tr.records)
    busy = sum(r["t_end"] - r["t_start"] for r in tr.records)
    return [
        Finding(S, "workers", "workers", len(workers), "{:.0f}"),
        Finding(S, "utilisation", "busy worker time / (workers x search span)",
                busy / (len(workers) * span) if span > 0 else math.nan, "{:.1%}"),
        Finding(S, "cross_worker_share", "children run on a different worker than their parent",
                _mean(cross), "{:.1%}"),
        Finding(S, "cross_worker_random", "same, if workers were assigned at random", 1 - float((shares ** 2).sum()),
                "{:.1%}"),
        Finding(S, "reuse_time_median", "median time between successive reads of a donor's tensors",
                _median(dt), "{:.3g}"),
        Finding(S, "reuse_time_p90", "90th percentile of that time", _pct(dt, 90), "{:.3g}"),
        Finding(S, "reuse_evals_median", "median evaluations started between successive reads",
                _median(dn), "{:.1f}"),
        Finding(S, "same_worker_reuse", "successive reads of a donor's tensors on the same worker",
                _mean(same), "{:.1%}"),
        Finding(S, "cache_donor_is_parent", "children whose recorded cache donor is their parent",
                _mean(np.array([r["donor_id"] == r["parent_id"] for r in cache_donor], float)), "{:.1%}"),
    ]


# --------------------------------------------------------------------------------------------- 3. popularity
def windowed_counts(tr: Trace, window: int) -> tuple[list[str], np.ndarray]:
    """Donors and, per evaluation (start order), how often each donated in the last ``window`` evaluations."""
    donors = sorted({r["parent_id"] for r in tr.children})
    col = {d: j for j, d in enumerate(donors)}
    hits = np.zeros((len(tr.records), len(donors)))
    for r in tr.children:
        hits[tr.start_index[r["model_id"]], col[r["parent_id"]]] = 1
    csum = np.cumsum(hits, axis=0)
    lagged = np.vstack([np.zeros((window, len(donors))), csum[:-window]]) if window < len(csum) else \
        np.zeros_like(csum)
    return donors, csum - lagged[: len(csum)]


def popularity(tr: Trace, out: str | os.PathLike, window: int) -> list[Finding]:
    """Donor frequency in a sliding window, concentration on top donors, and how long donors stay popular."""
    S = "Popularity"
    counts = Counter(r["parent_id"] for r in tr.children)
    ranked = sorted(counts.values(), reverse=True)
    total = sum(ranked)

    def top_share(frac: float) -> float:
        return sum(ranked[: max(1, math.ceil(frac * len(ranked)))]) / total if total else math.nan

    donors, freq = windowed_counts(tr, window)
    starts = defaultdict(list)
    for r in tr.children:
        starts[r["parent_id"]].append(tr.start_index[r["model_id"]])
    spans = np.array([max(v) - min(v) + 1 for v in starts.values() if len(v) > 1], float)
    in_window = freq.sum(axis=1) if freq.size else np.zeros(0)
    top = (freq.max(axis=1) if freq.size else np.zeros(0))[in_window > 0] / in_window[in_window > 0]
    _popularity_plot(out, donors, freq, counts, window)
    return [
        Finding(S, "donors", "models that donated at least once", len(ranked), "{:.0f}"),
        Finding(S, "donor_fraction", "share of all evaluated models that ever donated",
                len(ranked) / len(tr.records), "{:.1%}"),
        Finding(S, "top1_share", "donations taken by the top 1% of donors", top_share(0.01), "{:.1%}"),
        Finding(S, "top10_share", "donations taken by the top 10% of donors", top_share(0.10), "{:.1%}"),
        Finding(S, "max_donations", "donations of the most popular model", ranked[0] if ranked else 0, "{:.0f}"),
        Finding(S, "window_top_share", f"mean share of a {window}-evaluation window's donations taken by its "
                "top donor",
                _mean(top), "{:.1%}"),
        Finding(S, "popular_span_median", "median evaluations between a donor's first and last donation "
                "(donors with >= 2)", _median(spans), "{:.1f}"),
        Finding(S, "popular_span_max", "longest such span (evaluations)", float(spans.max()) if spans.size else
                math.nan, "{:.0f}"),
        Finding(S, "population_size", "population size P the spans compare with", tr.P, "{:.0f}"),
    ]


# ------------------------------------------------------------------------------------------------ 4. quality
def quality(tr: Trace, out: str | os.PathLike) -> list[Finding]:
    """Donor score against the population, persistence of low-quality models, and best score over time."""
    S = "Quality"
    scored = [r for r in tr.records if r.get("score") is not None]
    q25 = float(np.percentile([r["score"] for r in scored], 25)) if scored else math.nan
    pct, pop_stats = [], []
    for r in tr.records:
        pop = [m["score"] for m in tr.population_at(r["t_start"]) if m.get("score") is not None]
        pop_stats.append((np.min(pop), np.median(pop), np.max(pop)) if pop else (math.nan,) * 3)
        if r["model_id"] in tr.child_ids and pop and tr.parent(r).get("score") is not None:
            pct.append(np.mean(np.array(pop) <= tr.parent(r)["score"]))
    low_share = np.array([np.mean([m.get("score") is not None and m["score"] < q25
                                   for m in tr.population_at(r["t_end"])]) for r in tr.finished])
    quarter = max(1, len(low_share) // 4)
    residence = _residence(tr, q25)
    best = np.maximum.accumulate([r["score"] for r in tr.finished if r.get("score") is not None]) \
        if scored else np.zeros(0)
    _quality_plot(out, tr, pop_stats, best)
    return [
        Finding(S, "donor_percentile", "mean percentile of a donor's score within the population when its "
                "child starts", _mean(np.array(pct)), "{:.1%}"),
        Finding(S, "bottom_quartile_score", "bottom-quartile threshold (25th percentile of all scores)", q25),
        Finding(S, "bottom_quartile_population_early", "share of the population in the bottom quartile, first "
                "quarter of the search", _mean(low_share[:quarter]), "{:.1%}"),
        Finding(S, "bottom_quartile_population_late", "same, last quarter of the search",
                _mean(low_share[-quarter:]), "{:.1%}"),
        Finding(S, "bottom_quartile_residence", "mean evaluations a bottom-quartile model stays in the population",
                residence, "{:.1f}"),
        Finding(S, "bottom_quartile_donations", "donations taken by bottom-quartile models",
                _mean(np.array([tr.parent(r)["score"] < q25 for r in tr.children
                                if tr.parent(r).get("score") is not None], float)), "{:.1%}"),
        Finding(S, "best_score", "best score found", float(best[-1]) if best.size else math.nan),
        Finding(S, "eval_to_90pct_improvement", "share of the evaluations needed to reach 90% of the total "
                "improvement of the best score", _reach(best, 0.9), "{:.1%}"),
        Finding(S, "last_half_improvement", "share of the total improvement made in the second half",
                _late_gain(best), "{:.1%}"),
    ]


def _residence(tr: Trace, threshold: float) -> float:
    """Mean number of completions a model below ``threshold`` stays in the last-P population."""
    n = len(tr.finished)
    stays = [min(tr.P, n - i) for i, r in enumerate(tr.finished) if r.get("score") is not None and
             r["score"] < threshold]
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


def _mean(a: np.ndarray) -> float:
    return float(np.mean(a)) if len(a) else math.nan


def _median(a: np.ndarray) -> float:
    return float(np.median(a)) if len(a) else math.nan


def _pct(a: np.ndarray, q: float) -> float:
    return float(np.percentile(a, q)) if len(a) else math.nan


# ------------------------------------------------------------------------------------------------- plotting
def _save(fig: Figure, out: str | os.PathLike, name: str) -> None:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(os.path.join(out, name), dpi=110)


def _bar(out, name, xs, ys, xlabel, ylabel, title) -> None:
    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    ax.bar(list(xs), ys, color="tab:blue")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    _save(fig, out, name)


def _hist(out, name, series, labels) -> None:
    fig = Figure(figsize=(10, 3.5))
    for k, (data, label) in enumerate(zip(series, labels)):
        ax = fig.add_subplot(1, len(series), k + 1)
        if len(data):
            ax.hist(data, bins=min(30, max(5, len(set(data.tolist())))), color="tab:blue")
        ax.set(xlabel=label, ylabel="count")
    _save(fig, out, name)


def _timeline(out, tr: Trace) -> None:
    fig = Figure(figsize=(10, 0.5 + 0.35 * len({r["worker"] for r in tr.records})))
    ax = fig.add_subplot()
    rows = {w: i for i, w in enumerate(sorted({r["worker"] for r in tr.records}, key=str))}
    for w, row in rows.items():
        mine = [r for r in tr.records if r["worker"] == w]
        warm = [(r["t_start"], r["t_end"] - r["t_start"]) for r in mine if (r.get("transfer_bytes") or 0) > 0]
        cold = [(r["t_start"], r["t_end"] - r["t_start"]) for r in mine if not (r.get("transfer_bytes") or 0) > 0]
        ax.broken_barh(cold, (row - 0.4, 0.8), facecolor="tab:gray", edgecolor="white", linewidth=0.3,
                       label="cold" if row == 0 else None)
        ax.broken_barh(warm, (row - 0.4, 0.8), facecolor="tab:orange", edgecolor="white", linewidth=0.3,
                       label="warm-started" if row == 0 else None)
    ax.set_yticks(list(rows.values()), [str(w) for w in rows])
    ax.set(xlabel="time", ylabel="worker", title="Evaluations per worker")
    ax.legend(loc="upper right", fontsize=7)
    _save(fig, out, "worker_timeline.png")


def _popularity_plot(out, donors, freq, counts, window) -> None:
    fig = Figure(figsize=(10, 4))
    ax = fig.add_subplot()
    for d in sorted(counts, key=counts.get, reverse=True)[:8]:
        ax.plot(freq[:, donors.index(d)], label=f"{d} ({counts[d]})")
    ax.set(xlabel="evaluation (start order)", ylabel=f"donations in last {window}",
           title="Donor popularity in a sliding window (top 8 donors)")
    if counts:
        ax.legend(fontsize=7)
    _save(fig, out, "donor_popularity.png")


def _quality_plot(out, tr: Trace, pop_stats, best) -> None:
    fig = Figure(figsize=(10, 4))
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    lo, med, hi = (np.array(s, float) for s in zip(*pop_stats))
    x = np.arange(len(tr.records))
    ax1.fill_between(x, lo, hi, color="tab:blue", alpha=0.2, label="population min-max")
    ax1.plot(x, med, color="tab:blue", label="population median")
    kids = [(tr.start_index[r["model_id"]], tr.parent(r)["score"]) for r in tr.children
            if tr.parent(r).get("score") is not None]
    if kids:
        ax1.scatter(*zip(*kids), s=6, color="tab:red", label="donor score")
    ax1.set(xlabel="evaluation (start order)", ylabel="score", title="Donor vs population")
    ax1.legend(fontsize=7)
    ax2.plot(np.arange(1, best.size + 1), best, color="tab:green")
    ax2.set(xlabel="evaluations finished", ylabel="best score", title="Best score so far")
    _save(fig, out, "quality.png")


# -------------------------------------------------------------------------------------------------- report
PLOTS = {"Structure": ["mutation_positions.png", "shared_prefix.png"],
         "Distribution": ["worker_timeline.png", "reuse_distance.png"],
         "Popularity": ["donor_popularity.png"], "Quality": ["quality.png"]}
QUESTIONS = {
    "Structure": "How does the architecture of the candidates evolve?",
    "Distribution": "How do evolution patterns look across distributed workers?",
    "Popularity": "When do candidates become popular donors, and for how long?",
    "Quality": "How does the quality of candidates change during the search?",
}


def render(tr: Trace, findings: Sequence[Finding], window: int, title: str) -> str:
    """The markdown report: one table per question, the study's statement beside ours where it makes one."""
    span = max(r["t_end"] for r in tr.records) - min(r["t_start"] for r in tr.records)
    lines = [f"# Search trace analysis: {title}", "",
             f"{len(tr.records)} evaluations ({len(tr.children)} mutated children), "
             f"{len({r['worker'] for r in tr.records})} workers, span {span:.4g} time units, population P = "
             f"{tr.P}, popularity window {window} evaluations. Study: Underwood, Madhastha, Burns, Nicolae, "
             "*Understanding Patterns of Deep Learning Model Evolution in Network Architecture Search* (2023); "
             "its summary states findings in words, not numbers.", ""]
    for n, section in enumerate(SECTIONS, 1):
        lines += [f"## {n}. {section}", "", QUESTIONS[section], "", "| finding | this trace | study |",
                  "| --- | --- | --- |"]
        for f in (f for f in findings if f.section == section):
            lines.append(f"| {f.label} | {f.text()} | {STUDY.get(f.key, '')} |")
        lines += [""] + [f"![{p}]({p})" for p in PLOTS[section]] + [""]
    return "\n".join(lines)


def findings_dict(findings: Sequence[Finding]) -> dict[str, float]:
    """``{key: value}`` of every finding."""
    return {f.key: f.value for f in findings}
