"""What a replayed policy hears and when: the one place that decides it, as a live search tells its cache.

Each event of the merged stream becomes a Step. Every step first moves Belady's clock (``ClockMoved``: the
step's positions in the request stream). An insert step describes the model (``ModelDescribed``: arch,
mode, layers, score), then the engine inserts its layers, then come the news of a finished evaluation
(``EvaluationNews``: done, the child's mutation position, the new population) — at the child's finish,
as the live search tells its cache. A lookup step, with ``inflight``, first describes the child just
issued (without a score); the engine then looks up, and tells the policy the layers served and the donor.
"""
from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING, NamedTuple

from ..events import ClockMoved, ModelDescribed, PolicyEvent
from ..news import EvaluationNews

if TYPE_CHECKING:
    from .workload import Model, Workload


class Step(NamedTuple):
    """One event of the stream: news before, the model, its insert (else its lookup), news after."""

    insert: bool
    model: Model
    before: tuple[PolicyEvent, ...]
    after: tuple[PolicyEvent, ...]


def build_schedule(workload: Workload, population_size: int = 1, sample_size: int = 1, inflight: bool = False,
             news: bool = True) -> list[Step]:
    """The steps of ``workload`` (module docstring); ``news=False`` leaves every policy event out (what an
    unbounded store, which hears nothing, needs, and all it may use before the request stream exists)."""
    clock = workload.clock if news else None
    population: deque[tuple[str, float]] = deque(maxlen=population_size)
    models = workload.models
    out = []
    for ev in workload.events:
        model = models[ev.evaluation.model_id]
        if clock is None:
            out.append(Step(ev.insert, model, (), ()))
            continue
        before: list[PolicyEvent] = [ClockMoved(clock[ev.index], clock[ev.index + 1])]
        e = ev.evaluation
        if ev.insert:
            if model.described is not None:
                before.append(model.described)
            population.append((e.model_id, e.score if e.score is not None else -math.inf))
            after = EvaluationNews.of(e.mutation_pos, population, population_size, sample_size).events()
            out.append(Step(True, model, tuple(before), tuple(after)))
            continue
        if inflight and e.arch is not None:  # the driver tells its cache which child it just issued
            before.append(ModelDescribed(e.model_id, e.arch, workload.mode, len(e.keys), None))
        out.append(Step(False, model, tuple(before), ()))
    return out
