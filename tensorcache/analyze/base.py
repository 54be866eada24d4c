"""What the analyses share: the study's claims, a finding, the run's facts, the indexed trace, NaN-safe statistics."""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..layers import LayerMap
from ..replay import infer_population_size, parse_records
from ..trace import TraceRecord, as_records


SECTIONS = ("Structure", "Distribution", "Popularity", "Quality")
AGREES, DIFFERS, NOT_MEASURABLE = "agrees", "differs", "not measurable here"
BY_CONSTRUCTION = "holds by construction"  # the null the algorithm implies already produces the finding
BASELINE_DRAWS = 200  # random draws behind the uniform-choice and shuffled-assignment baselines
OCCUPANCY_DRAWS = 40  # replays behind the worker-occupancy null (each one walks the whole trace)
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
OnStep = Callable[[str], None]  # analyze calls it with the name of each step it starts


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
    sample_size: int | None = None     # the tournament's S: the null of donor popularity (None: uniform choice)
    window: int | None = None          # popularity window (default: the run's, else P)
    mutation_bias: float = 0.0         # the driver's position weights (i + 1) ** bias; 0 = uniform
    low_cut: float | None = None       # absolute "low quality" score (default: from the random start)
    low_cut_source: str = ""
    layers: LayerSource | None = None  # the space's layer maps (default: generic, one layer per position)
    layers_source: str = ""
    transfer: str = "prefix"           # the run's transfer mode: which served layers make a lookup a hit
    controls: Sequence[Mapping[str, Any]] = ()  # the search's scratch retrainings (controls.jsonl beside the trace)
    control: float = 0.0               # the fraction the search asked to retrain from scratch (run_search --control)


class Trace:
    """Trace records indexed for the analyses: start order, completion order, ids, populations."""

    def __init__(self, records: Sequence[TraceRecord | Mapping[str, Any]], population_size: int | None = None) -> None:
        if not records:
            raise ValueError("the trace has no records")
        typed = as_records(records)  # validated, revisits marked
        evaluations = parse_records(typed)  # and no id twice
        self.records = sorted(typed, key=lambda r: (r.t_start, r.t_end))
        self.by_id = {r.model_id: r for r in self.records}
        self.start_index = {r.model_id: i for i, r in enumerate(self.records)}
        self.starts = [r.t_start for r in self.records]
        self.finished = sorted(self.records, key=lambda r: r.t_end)
        self.ends = [r.t_end for r in self.finished]
        self.P = population_size or infer_population_size(evaluations)
        self.children = [r for r in self.records if r.parent_id in self.by_id]
        self.child_ids = {r.model_id for r in self.children}
        self.workers = sorted({r.worker for r in self.records}, key=worker_order)

    def parent(self, r: TraceRecord) -> TraceRecord:
        return self.by_id[r.parent_id]

    def population_bounds(self, t: float) -> tuple[int, int]:
        """``finished[lo:hi]`` is the population at ``t``: the last P models finished at or before it."""
        n = int(np.searchsorted(self.ends, t, side="right"))
        return max(0, n - self.P), n

    def population_at(self, t: float) -> list[TraceRecord]:
        """The last P models finished at or before ``t``, oldest first."""
        lo, hi = self.population_bounds(t)
        return self.finished[lo:hi]


def worker_order(worker: Any) -> tuple:
    """Sort key: integer ids (and digit strings) numerically, then other names alphabetically."""
    text = str(worker)
    return (0, int(text), "") if text.lstrip("-").isdigit() else (1, 0, text)


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def mean_or_nan(a: np.ndarray) -> float:
    return float(np.mean(a)) if len(a) else math.nan


def median_or_nan(a: np.ndarray) -> float:
    return float(np.median(a)) if len(a) else math.nan


def percentile_or_nan(a: np.ndarray, q: float) -> float:
    return float(np.percentile(a, q)) if len(a) else math.nan
