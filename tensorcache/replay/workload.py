"""A parsed trace ready to replay any number of times: its event stream, each model prepared once, the
unbounded reference, and Belady's request stream (the last two computed on first use, from the whole
workload)."""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, NamedTuple

from ..catalog import Entry, LayerRecord, ModelRecord
from ..events import Donated, Inserted, LayerServed, ModelDescribed
from ..layers import MODES
from ..metrics import mark_revisits
from ..trace import TraceRecord
from . import engine, schedule, stream
from .report import ReplayResult, Served
from .trace import Evaluation, infer_population_size, parse_records


@dataclass(frozen=True)
class Event:
    """A lookup (child starts) or an insert (model finishes); ``index`` is its place in the stream."""

    index: int
    time: float
    insert: bool
    evaluation: Evaluation


def merge_events(evaluations: Sequence[Evaluation]) -> list[Event]:
    """Inserts at t_end and lookups at t_start in time order; inserts first at equal times, ties kept in
    trace order (so a child only sees models that finished before it started)."""
    order = sorted([(e.t_end, 0, n) for n, e in enumerate(evaluations)] +
                   [(e.t_start, 1, n) for n, e in enumerate(evaluations)])
    return [Event(i, t, kind == 0, evaluations[n]) for i, (t, kind, n) in enumerate(order)]


class Model(NamedTuple):
    """One evaluation prepared once for every replay: its catalog record, the policy events naming its
    entries (one per layer), and what the counters need."""

    evaluation: Evaluation
    record: ModelRecord
    inserts: tuple[Inserted, ...]  # layer i entering a tier, in layer order
    hits: tuple[LayerServed, ...]  # layer i served to a child
    donated: Donated
    described: ModelDescribed | None  # arch, mode, layers and score, told before its layers (None: no arch)
    deps: tuple[tuple[int, ...], ...]  # arch positions each layer depends on
    nbytes: int
    revisit: bool
    values: tuple[float, ...]  # training seconds each layer is worth to a child served it (``layer_values``)


def layer_values(e: Evaluation) -> tuple[float, ...]:
    """What serving each of ``e``'s layers to it is worth, in training seconds: its training time (``train_s``,
    else t_end - t_start) shared out over its layers by bytes. An estimate of the time a warm start saves
    that weighs a slow child's layers above a fast one's, where bytes weigh them alike."""
    seconds = e.t_end - e.t_start if e.train_s is None else e.train_s
    total = sum(e.sizes)
    return tuple(seconds * size / total if total else 0.0 for size in e.sizes)


def prepare(e: Evaluation, mode: str, revisit: bool) -> Model:
    """The Model of ``e``; layers without recorded dependencies depend on every earlier position in prefix
    mode and on none in compatible mode."""
    deps = e.deps or tuple(tuple(range(i + 1)) if mode == "prefix" else () for i in range(len(e.keys)))
    record = ModelRecord(e.model_id, (), e.score, e.parent_id, tuple(LayerRecord(k, {}, d) for k, d in zip(e.keys, deps)))
    entries = [(e.model_id, i) for i in range(len(e.keys))]
    return Model(e, record, tuple(Inserted(entry, size, e.model_id, d) for entry, size, d in zip(entries, e.sizes, deps)),
                 tuple(LayerServed(entry) for entry in entries), Donated(e.model_id),
                 None if e.arch is None else ModelDescribed(e.model_id, e.arch, mode, len(e.keys), e.score),
                 deps, sum(e.sizes), revisit, layer_values(e))


class Workload:
    """A parsed trace, its merged event stream and its prepared models (reused across policies and
    capacities); ``unbounded`` is what a cache that keeps everything serves on it."""

    def __init__(self, records: Iterable[TraceRecord | Mapping[str, Any]], mode: str = "prefix") -> None:
        if mode not in MODES:
            raise ValueError(f"unknown transfer mode {mode!r}; expected one of {MODES}")
        self.mode = mode
        self.evaluations = parse_records(records)
        if not self.evaluations:
            raise ValueError("the trace has no records")
        self.events = merge_events(self.evaluations)
        self.total_bytes = sum(sum(e.sizes) for e in self.evaluations)
        self.revisit = mark_revisits((e.model_id, e.arch, e.t_start, e.revisit) for e in self.evaluations)
        self.models = {e.model_id: prepare(e, mode, self.revisit[e.model_id]) for e in self.evaluations}
        self.sizes = {m: model.evaluation.sizes for m, model in self.models.items()}  # bytes per layer
        self.deps = {m: model.deps for m, model in self.models.items()}  # arch positions per layer
        self._steps: dict[tuple[int, int, bool], list[schedule.Step]] = {}

    @cached_property
    def unbounded(self) -> ReplayResult:
        """The replay of a cache that keeps everything: the reference every yield is measured against."""
        return engine.reference(self)

    @cached_property
    def requested(self) -> list[Served]:
        """Per lookup, the layers the unbounded cache served, named on the newest model holding them all."""
        return stream.designate(self)

    @cached_property
    def clock(self) -> list[int]:
        """Per event, its first position in the request stream, plus the stream's length."""
        return stream.clock(self)

    def next_uses(self) -> dict[Entry, list[int]]:
        """Request-stream positions at which each entry is requested, ascending (Belady's future)."""
        return stream.next_uses(self)

    def steps(self, population_size: int, sample_size: int, inflight: bool = False) -> list[schedule.Step]:
        """The event schedule policies hear with population P and sample S (made once per setting)."""
        key = (population_size, sample_size, inflight)
        if key not in self._steps:
            self._steps[key] = schedule.build_schedule(self, population_size, sample_size, inflight)
        return self._steps[key]


def population_params(workload: Workload, population_size: int | None, sample_size: int | None) -> tuple[int, int]:
    """(P, S) from the arguments, else inferred from the trace (S = max(1, P // 4))."""
    P = population_size if population_size is not None else infer_population_size(workload.evaluations)
    S = sample_size if sample_size is not None else max(1, P // 4)
    if P < 1 or not 1 <= S <= P:
        raise ValueError(f"need population size >= 1 and 1 <= sample size <= it, got P={P}, S={S}")
    return P, S
