"""``tensorcache analyze``: the study's four questions answered on a search trace, each with a verdict.

Underwood et al. (2023) ask how architectures evolve under regularized evolution (structure), how
evolution looks across distributed workers (distribution), when donors become and stop being popular
(popularity), and how model quality changes (quality). ``analyze`` computes each finding from the trace
(one record per evaluation, see ``tensorcache.trace``), sets it against a baseline where one exists
(uniform mutation positions, uniform donor choice, shuffled worker assignment) and says whether it agrees
with the study, differs, or cannot be measured on this trace, with a one-line reason. It writes
``report.md`` plus PNG plots that stay readable from 1 to 1024 workers.

Conventions: the *donor* of a child is its regularized-evolution parent; evaluations are numbered in start
order; the population at a time is the last P models finished by then (P from the caller, else inferred).
Transferable layers are computed from the architectures under each rule's own layer map (``layers``),
never from the layer keys the trace happened to record, so a prefix and a compatible trace agree.
"""
from __future__ import annotations

import math
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .layers import MODES, LayerMap
from .metrics import summarize_records
from .replay import infer_population_size, parse_records

SECTIONS = ("Structure", "Distribution", "Popularity", "Quality")
AGREES, DIFFERS, NOT_MEASURABLE = "agrees", "differs", "not measurable here"
BASELINE_DRAWS = 200  # random draws behind the uniform-choice and shuffled-assignment baselines
MAX_TIMELINE_ROWS = 32  # more workers than this: the timeline shows a sample of rows and an aggregate
LOW_QUANTILE = 25  # "low quality" = below this percentile of an absolute reference distribution

# What the study (arXiv:2309.12576) states per question, in our words; its summary gives no numbers.
STUDY = {
    "middle_third_share": "mutations often land in the middle of the architecture sequence",
    "bytes_transferable_prefix": "regularized evolution leaves a limited number of transferable layers",
    "same_worker_reuse": "workers show temporal locality in which model tensors they access",
    "top10_share": "a clear tiering: a few models dominate as donors while others fade quickly",
    "popular_span_median": "once a model becomes popular it tends to stay relevant for longer",
    "low_population_late": "low-quality models persist throughout the search",
    "last_half_improvement": "high-performing models show diminishing returns as the search goes on",
}

# layers(arch, mode) -> (layer map, bytes per layer): what a child could take from a donor under a rule
LayerSource = Callable[[Sequence[int], str], tuple[LayerMap, Sequence[int]]]
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Finding:
    """One number of the report, with a baseline, the study's claim and a verdict where it makes one."""

    section: str
    key: str
    label: str
    value: float
    fmt: str = "{:.3g}"
    baseline: float | None = None
    verdict: str = ""
    reason: str = ""
    study: str = field(default="", init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "study", STUDY.get(self.key, ""))

    def text(self, value: float | None = None) -> str:
        v = self.value if value is None else value
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else self.fmt.format(v)


@dataclass(frozen=True)
class RunFacts:
    """What the trace alone does not say: the search's settings and the references the verdicts use."""

    population_size: int | None = None
    window: int | None = None          # popularity window (default: the run's, else P)
    mutation_bias: float = 0.0         # the driver's position weights (i + 1) ** bias; 0 = uniform
    low_cut: float | None = None       # absolute "low quality" score (default: from the random start)
    low_cut_source: str = ""
    layers: LayerSource | None = None  # the space's layer maps (default: generic, one layer per position)
    layers_source: str = ""
    transfer: str = "prefix"           # the run's transfer mode: which served layers make a lookup a hit


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
        self.workers = sorted({r["worker"] for r in self.records}, key=worker_order)

    def parent(self, r: Mapping[str, Any]) -> Mapping[str, Any]:
        return self.by_id[r["parent_id"]]

    def population_bounds(self, t: float) -> tuple[int, int]:
        """``finished[lo:hi]`` is the population at ``t``: the last P models finished at or before it."""
        n = int(np.searchsorted(self.ends, t, side="right"))
        return max(0, n - self.P), n

    def population_at(self, t: float) -> list[Mapping[str, Any]]:
        """The last P models finished at or before ``t``, oldest first."""
        lo, hi = self.population_bounds(t)
        return self.finished[lo:hi]


def worker_order(worker: Any) -> tuple:
    """Sort key: integer ids (and digit strings) numerically, then other names alphabetically."""
    text = str(worker)
    return (0, int(text), "") if text.lstrip("-").isdigit() else (1, 0, text)


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def analyze(records: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike, facts: RunFacts | None = None,
            title: str = "trace", progress: Progress | None = None) -> list[Finding]:
    """Write ``out_dir/report.md`` and its PNGs; return the findings. ``progress`` hears each step's name."""
    facts = facts or RunFacts()
    step = progress or (lambda name: None)
    os.makedirs(out_dir, exist_ok=True)
    step("reading the trace")
    tr = Trace(records, facts.population_size)
    window = facts.window or tr.P
    rng = np.random.default_rng(0)
    findings: list[Finding] = []
    for name, run in (("structure", lambda: structure(tr, out_dir, facts)),
                      ("distribution", lambda: distribution(tr, out_dir, rng)),
                      ("popularity", lambda: popularity(tr, out_dir, window, rng)),
                      ("quality", lambda: quality(tr, out_dir, facts))):
        step(name)
        findings += run()
    step("report")
    with open(os.path.join(out_dir, "report.md"), "w", encoding="utf-8") as f:
        f.write(render(tr, findings, window, title, facts))
    return findings


STEPS = 6  # calls ``analyze`` makes to ``progress``


# ---------------------------------------------------------------------------------------------- 1. structure
def shared_prefix(a: Sequence[Any], b: Sequence[Any]) -> int:
    """Length of the common leading run of two sequences."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def generic_layers(arch: Sequence[int], mode: str) -> tuple[LayerMap, list[int]]:
    """One layer per position, depending on the prefix up to it (either rule), each counted as one byte."""
    return LayerMap.generic(len(arch), mode), [1] * len(arch)


def transferable(child: Sequence[int], parent: Sequence[int], mode: str,
                 layers: LayerSource) -> tuple[float, float]:
    """(share of layers, share of bytes) of ``child`` that ``parent`` can give under rule ``mode``."""
    cmap, sizes = layers(child, mode)
    pmap, _ = layers(parent, mode)
    own, theirs = cmap.keys("analyze", child), pmap.keys("analyze", parent)
    if mode == "prefix":
        keep = [i < shared_prefix(own, theirs) for i in range(len(own))]
    else:
        have = set(theirs)
        keep = [k in have for k in own]
    total = sum(sizes) or 1
    return sum(keep) / max(1, len(own)), sum(b for k, b in zip(keep, sizes) if k) / total


def middle_third_verdict(share: float, uniform: float, n: int, bias: float) -> tuple[str, str]:
    """Is the middle third hit more often than uniform draws would (two standard errors)?"""
    operator = ("positions drawn uniformly (mutation bias 0)" if not bias else
                f"positions drawn with weight (i+1)^{bias:g}, favouring later ones")
    if n < 20:
        return NOT_MEASURABLE, f"{n} mutations are too few to tell; the driver's operator: {operator}"
    se = math.sqrt(uniform * (1 - uniform) / n) or 1e-9
    z = (share - uniform) / se
    if z > 2:
        return AGREES, f"{share:.1%} against {uniform:.1%} if uniform ({z:+.1f} s.e.); the driver's operator: {operator}"
    return DIFFERS, (f"{share:.1%} against {uniform:.1%} if uniform ({z:+.1f} s.e.): the driver's operator has "
                     f"{operator}, so mid-sequence concentration is a property of the study's operator, not of evolution")


def structure(tr: Trace, out: str | os.PathLike, facts: RunFacts) -> list[Finding]:
    """Mutation positions, shared prefix with the parent, and what a child could inherit under each rule."""
    S = "Structure"
    layers = facts.layers or generic_layers
    muts = [(r["mutation_pos"], len(r["arch"])) for r in tr.records if r.get("mutation_pos") is not None]
    rel = np.array([p / (n - 1) if n > 1 else 0.5 for p, n in muts])
    uniform = _mean(np.array([np.mean([1 / 3 <= q / (n - 1) <= 2 / 3 for q in range(n)]) if n > 1 else 1.0
                              for _, n in muts]))
    share = _mean(((rel >= 1 / 3) & (rel <= 2 / 3)).astype(float))
    prefix = np.array([shared_prefix(r["arch"], tr.parent(r)["arch"]) for r in tr.children])
    rules = {mode: np.array([transferable(r["arch"], tr.parent(r)["arch"], mode, layers) for r in tr.children],
                            float).reshape(-1, 2) for mode in MODES}
    actual = np.array([(r.get("transfer_bytes") or 0) / (sum(r["layer_bytes"]) or 1) for r in tr.children])
    live = summarize_records(tr.records, facts.transfer)
    n_pos = max((n for _, n in muts), default=max(len(r["arch"]) for r in tr.records))
    hist = np.bincount([p for p, _ in muts], minlength=n_pos) if muts else np.zeros(n_pos, int)
    _bar(out, "mutation_positions.png", range(n_pos), hist, "mutation position", "children",
         "Where mutations land")
    _hist(out, "shared_prefix.png", [prefix, rules["prefix"][:, 1], rules["compatible"][:, 1]],
          ["shared prefix length (positions)", "bytes transferable, prefix rule", "bytes transferable, "
           "compatible rule"], integer_x=[True, False, False])
    verdict, reason = middle_third_verdict(share, uniform, len(muts), facts.mutation_bias)
    pre = _mean(rules["prefix"][:, 1])
    limited = (NOT_MEASURABLE, "no mutated children") if math.isnan(pre) else (
        (AGREES, f"under the prefix rule a child can take {pre:.1%} of its bytes from its parent: a mutation at "
                 "position p invalidates every layer that depends on positions >= p") if pre < 0.5 else
        (DIFFERS, f"under the prefix rule a child can take {pre:.1%} of its bytes from its parent"))
    source = facts.layers_source or "generic layer map: one layer per position, each counted as one byte"
    return [
        Finding(S, "mutations", "children with a recorded mutation", len(muts), "{:.0f}"),
        Finding(S, "middle_third_share", "share of mutations in the middle third of the sequence "
                "(position / (length - 1) in [1/3, 2/3])", share, "{:.1%}", uniform, verdict, reason),
        Finding(S, "mean_relative_position", "mean mutation position / (length - 1)", _mean(rel), "{:.2f}"),
        Finding(S, "shared_prefix_mean", "mean shared prefix with the parent (positions)", _mean(prefix), "{:.2f}"),
        Finding(S, "layers_transferable_prefix", f"mean share of layers transferable from the parent, prefix rule "
                f"({source})", _mean(rules["prefix"][:, 0]), "{:.1%}"),
        Finding(S, "bytes_transferable_prefix", "mean share of bytes transferable from the parent, prefix rule",
                pre, "{:.1%}", None, *limited),
        Finding(S, "layers_transferable_compatible", "mean share of layers transferable from the parent, "
                "compatible rule (a layer whose own positions agree)", _mean(rules["compatible"][:, 0]), "{:.1%}"),
        Finding(S, "bytes_transferable_compatible", "mean share of bytes transferable from the parent, "
                "compatible rule", _mean(rules["compatible"][:, 1]), "{:.1%}"),
        Finding(S, "bytes_transferred", "mean share of bytes the recorded run actually transferred (its own rule, "
                "from any cached donor)", _mean(actual), "{:.1%}"),
        Finding(S, "hit_ratio", "evaluations served a layer that depends on a position (a hit, "
                "tensorcache.metrics)", live["hit_ratio"], "{:.1%}"),
        Finding(S, "repeated_arch_share", "evaluations of an architecture that an earlier evaluation already had",
                live["revisit_fraction"], "{:.1%}"),
    ]


# ------------------------------------------------------------------------------------------- 2. distribution
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
    same = _mean(np.array([s for _, _, s in reuse], float))
    chance = shuffled_same_worker(tr, reuse_pairs(tr), rng)
    if len(workers) == 1 or not chance.size:
        verdict = (NOT_MEASURABLE, "one worker: every read is on the same worker" if len(workers) == 1 else
                   "no donations")
    else:
        hi = float(np.percentile(chance, 97.5))
        verdict = (AGREES, f"{same:.1%} of successive reads stay on one worker against {_mean(chance):.1%} "
                           f"(95% up to {hi:.1%}) when evaluations are dealt to workers at random") if same > hi else \
            (DIFFERS, f"{same:.1%} of successive reads stay on one worker, no more than {_mean(chance):.1%} "
                      f"(95% up to {hi:.1%}) with a random assignment: the scheduler does not keep donors local")
    cache_donor = [r for r in tr.children if r.get("donor_id") is not None]
    _timeline(out, tr)
    _hist(out, "reuse_distance.png", [dt, dn], ["time since the donor's tensors were last touched",
                                                "evaluations started since the last touch"], integer_x=[False, True])
    span = max(r["t_end"] for r in tr.records) - min(r["t_start"] for r in tr.records)
    busy = sum(r["t_end"] - r["t_start"] for r in tr.records)
    return [
        Finding(S, "workers", "workers", len(workers), "{:.0f}"),
        Finding(S, "utilisation", "busy worker time / (workers x search span)",
                busy / (len(workers) * span) if span > 0 else math.nan, "{:.1%}"),
        Finding(S, "cross_worker_share", "children run on a different worker than their parent",
                _mean(cross), "{:.1%}", 1 - float((shares ** 2).sum())),
        Finding(S, "reuse_time_median", "median time between successive reads of a donor's tensors",
                _median(dt), "{:.3g}"),
        Finding(S, "reuse_time_p90", "90th percentile of that time", _pct(dt, 90), "{:.3g}"),
        Finding(S, "reuse_evals_median", "median evaluations started between successive reads",
                _median(dn), "{:.1f}"),
        Finding(S, "same_worker_reuse", "successive reads of a donor's tensors on the same worker (baseline: "
                "evaluations dealt to workers at random)", same, "{:.1%}", _mean(chance), *verdict),
        Finding(S, "cache_donor_is_parent", "children whose recorded cache donor is their parent",
                _mean(np.array([r["donor_id"] == r["parent_id"] for r in cache_donor], float)), "{:.1%}"),
    ]


# --------------------------------------------------------------------------------------------- 3. popularity
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
    return _mean(np.array(shares))


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
    _popularity_plot(out, top8, freq, counts, window)
    return [
        Finding(S, "donors", "models that donated at least once", len(counts), "{:.0f}"),
        Finding(S, "donor_fraction", "share of all evaluated models that ever donated",
                len(counts) / len(tr.records), "{:.1%}"),
        Finding(S, "top10_share", "donations taken by the top 10% of donors (baseline: each child's donor a uniform "
                "pick from its population)", top10, "{:.1%}", _mean(chance[:, 0]) if chance.size else math.nan,
                *tiering),
        Finding(S, "max_donations", "donations of the most popular model", max(counts.values(), default=0),
                "{:.0f}"),
        Finding(S, "window_top_share", f"mean share of a {window}-evaluation window's donations taken by its "
                "top donor (same baseline)", window_top, "{:.1%}",
                _mean(chance[:, 1]) if chance.size else math.nan),
        Finding(S, "popular_span_median", "median evaluations between a donor's first and last donation "
                "(donors with >= 2)", _median(spans), "{:.1f}", float(tr.P), *lasting),
        Finding(S, "popular_span_max", "longest such span (evaluations)", span_max, "{:.0f}"),
    ]


# ------------------------------------------------------------------------------------------------ 4. quality
def quality(tr: Trace, out: str | os.PathLike, facts: RunFacts) -> list[Finding]:
    """Donor score against the population, persistence of low-quality models, and best score over time."""
    S = "Quality"
    scored = [r for r in tr.records if r.get("score") is not None]
    cut, source = facts.low_cut, facts.low_cut_source
    if cut is None:
        start = [r["score"] for r in scored if r.get("parent_id") is None]
        cut = float(np.percentile(start, LOW_QUANTILE)) if len(start) >= 10 else math.nan
        source = (f"{LOW_QUANTILE}th percentile of the {len(start)} random initial architectures (a uniform "
                  "sample of the space)")
    pct, pop_stats = [], []
    for r in tr.records:
        pop = [m["score"] for m in tr.population_at(r["t_start"]) if m.get("score") is not None]
        pop_stats.append((np.min(pop), np.median(pop), np.max(pop)) if pop else (math.nan,) * 3)
        if r["model_id"] in tr.child_ids and pop and tr.parent(r).get("score") is not None:
            pct.append(np.mean(np.array(pop) <= tr.parent(r)["score"]))
    low_share = np.array([np.mean([m.get("score") is not None and m["score"] < cut
                                   for m in tr.population_at(r["t_end"])]) for r in tr.finished])
    quarter = max(1, len(low_share) // 4)
    late = _mean(low_share[-quarter:])
    if math.isnan(cut):
        persist = (NOT_MEASURABLE, "no absolute cut: fewer than 10 random initial architectures and none given")
    elif late * tr.P >= 1:
        persist = (AGREES, f"the last quarter's populations hold {late * tr.P:.1f} models below {cut:.4g} on average")
    else:
        persist = (DIFFERS, f"the last quarter's populations hold {late * tr.P:.2f} models below {cut:.4g} on "
                            "average: evolution has pushed them out")
    best = np.maximum.accumulate([r["score"] for r in tr.finished if r.get("score") is not None]) \
        if scored else np.zeros(0)
    gain = _late_gain(best)
    returns = (NOT_MEASURABLE, "the best score never improved") if math.isnan(gain) else (
        (AGREES, f"the second half of the search made {gain:.1%} of the best score's total improvement")
        if gain < 0.5 else
        (DIFFERS, f"the second half of the search made {gain:.1%} of the best score's total improvement"))
    _quality_plot(out, tr, pop_stats, best, cut)
    return [
        Finding(S, "donor_percentile", "mean percentile of a donor's score within the population when its "
                "child starts", _mean(np.array(pct)), "{:.1%}"),
        Finding(S, "low_cut", f"'low quality' cut: {source}", cut),
        Finding(S, "low_population_early", "share of the population below the cut, first quarter of the search",
                _mean(low_share[:quarter]), "{:.1%}"),
        Finding(S, "low_population_late", "same, last quarter of the search", late, "{:.1%}", None, *persist),
        Finding(S, "low_residence", "mean evaluations a model below the cut stays in the population",
                _residence(tr, cut), "{:.1f}"),
        Finding(S, "low_donations", "donations taken by models below the cut",
                _mean(np.array([tr.parent(r)["score"] < cut for r in tr.children
                                if tr.parent(r).get("score") is not None], float)), "{:.1%}"),
        Finding(S, "best_score", "best score found", float(best[-1]) if best.size else math.nan),
        Finding(S, "eval_to_90pct_improvement", "share of the evaluations needed to reach 90% of the total "
                "improvement of the best score", _reach(best, 0.9), "{:.1%}"),
        Finding(S, "last_half_improvement", "share of the total improvement made in the second half",
                gain, "{:.1%}", None, *returns),
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
DPI = 110


def _save(fig: Figure, out: str | os.PathLike, name: str) -> None:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(os.path.join(out, name), dpi=DPI)


def _bar(out, name, xs, ys, xlabel, ylabel, title) -> None:
    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    ax.bar(list(xs), ys, color="tab:blue")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    _save(fig, out, name)


def _hist(out, name, series, labels, integer_x) -> None:
    fig = Figure(figsize=(3.6 * len(series), 3.5))
    for k, (data, label, whole) in enumerate(zip(series, labels, integer_x)):
        ax = fig.add_subplot(1, len(series), k + 1)
        if len(data):
            ax.hist(data, bins=min(30, max(5, len(set(data.tolist())))), color="tab:blue")
        ax.set(xlabel=label, ylabel="count")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        if whole:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _save(fig, out, name)


def _spans(records: Sequence[Mapping[str, Any]], warm: bool) -> list[tuple[float, float]]:
    return [(r["t_start"], r["t_end"] - r["t_start"]) for r in records if ((r.get("transfer_bytes") or 0) > 0) == warm]


def _timeline(out, tr: Trace) -> None:
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
        mine = [r for r in tr.records if r["worker"] == w]
        ax.broken_barh(_spans(mine, False), (row - 0.4, 0.8), facecolor="tab:gray", edgecolor="white", linewidth=0.3,
                       label="cold" if row == 0 else None)
        ax.broken_barh(_spans(mine, True), (row - 0.4, 0.8), facecolor="tab:orange", edgecolor="white",
                       linewidth=0.3, label="warm-started" if row == 0 else None)
    ax.set_yticks(list(rows.values()), [str(w) for w in rows], fontsize=7 if len(rows) > 16 else 9)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    what = f"{len(shown)} of {len(tr.workers)} workers, evenly spaced" if sampled else plural(len(shown), "worker")
    ax.set(xlabel="time", ylabel="worker", title=f"Evaluations per worker ({what})")
    ax.legend(loc="upper right", fontsize=7)
    _save(fig, out, "worker_timeline.png")


def _concurrency(ax, tr: Trace) -> None:
    """Evaluations running at each moment, warm-started and cold, stacked."""
    for warm, colour, label in ((False, "tab:gray", "cold"), (True, "tab:orange", "warm-started")):
        events = sorted([(s, 1) for s, _ in _spans(tr.records, warm)] + [(s + d, -1) for s, d in _spans(tr.records, warm)])
        if events:
            t, step = zip(*events)
            ax.step(t, np.cumsum(step), where="post", color=colour, label=label)
    ax.set(xlabel="time", ylabel="evaluations running", title=f"Evaluations running at once "
           f"({plural(len(tr.workers), 'worker')})")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(loc="upper right", fontsize=7)


def _popularity_plot(out, donors, freq, counts, window) -> None:
    fig = Figure(figsize=(10, 4))
    ax = fig.add_subplot()
    for j, d in enumerate(donors):
        ax.plot(freq[:, j], label=f"{d} ({counts[d]})")
    ax.set(xlabel="evaluation (start order)", ylabel=f"donations in last {window}",
           title="Donor popularity in a sliding window (top 8 donors)")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    if counts:
        ax.legend(fontsize=7)
    _save(fig, out, "donor_popularity.png")


def _quality_plot(out, tr: Trace, pop_stats, best, cut: float) -> None:
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
    if not math.isnan(cut):
        ax1.axhline(cut, color="black", linestyle=":", label="low-quality cut")
    ax1.set(xlabel="evaluation (start order)", ylabel="score", title="Donor vs population")
    ax1.legend(fontsize=7)
    ax2.plot(np.arange(1, best.size + 1), best, color="tab:green")
    ax2.set(xlabel="evaluations finished", ylabel="best score", title="Best score so far")
    ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
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


def render(tr: Trace, findings: Sequence[Finding], window: int, title: str, facts: RunFacts) -> str:
    """The markdown report: a verdict per study finding first, then every number by question."""
    span = max(r["t_end"] for r in tr.records) - min(r["t_start"] for r in tr.records)
    operator = "uniform over positions" if not facts.mutation_bias else \
        f"position i drawn with weight (i+1)^{facts.mutation_bias:g}"
    lines = [f"# Search trace analysis: {title}", "",
             f"{plural(len(tr.records), 'evaluation')} ({len(tr.children)} mutated children), "
             f"{plural(len(tr.workers), 'worker')}, span {span:.4g} time units, population P = {tr.P}, "
             f"popularity window {window} evaluations, mutation operator: one position, {operator}. "
             "Study: Underwood, Madhastha, Burns, Nicolae, *Understanding Patterns of Deep Learning Model Evolution "
             "in Network Architecture Search* (2023); its summary states findings in words, not numbers.", "",
             "## Verdicts", "", "| study's finding | this trace | baseline | verdict | why |", "| --- | --- | --- | --- | --- |"]
    for f in findings:
        if f.verdict:
            base = "" if f.baseline is None else f.text(f.baseline)
            lines.append(f"| {f.study} | {f.text()} | {base} | **{f.verdict}** | {f.reason} |")
    lines.append("")
    for n, section in enumerate(SECTIONS, 1):
        lines += [f"## {n}. {section}", "", QUESTIONS[section], "", "| finding | this trace | baseline | verdict |",
                  "| --- | --- | --- | --- |"]
        for f in (f for f in findings if f.section == section):
            base = "" if f.baseline is None else f.text(f.baseline)
            lines.append(f"| {f.label} | {f.text()} | {base} | {f.verdict} |")
        lines += [""] + [f"![{p}]({p})" for p in PLOTS[section]] + [""]
    return "\n".join(lines)


def findings_dict(findings: Sequence[Finding]) -> dict[str, float]:
    """``{key: value}`` of every finding."""
    return {f.key: f.value for f in findings}
