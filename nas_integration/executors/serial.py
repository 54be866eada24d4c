"""In-process executors' shared part, and the serial executor: one evaluation at a time (wall clock)."""
from __future__ import annotations

import traceback
from typing import TYPE_CHECKING, Any

from tensorcache.events import ModelDescribed
from tensorcache.evolution import Candidate
from tensorcache.news import EvaluationNews

from ..evaluators import Evaluator
from .base import Executor, Outcome

if TYPE_CHECKING:
    from tensorcache import TensorCache


class LocalExecutor(Executor):
    """Shared part of the in-process executors: one cache, told about evaluations at once."""

    def __init__(self, evaluator: Evaluator, cache: TensorCache | None) -> None:
        super().__init__()
        self.evaluator, self.cache = evaluator, cache
        evaluator.setup()

    def observe(self, mutation_pos: int | None, members: list[tuple[str, float]], population_size: int,
                sample_size: int) -> None:
        if self.cache is not None:
            EvaluationNews.of(mutation_pos, members, population_size, sample_size).tell(self.cache)

    def describe(self, event: ModelDescribed) -> None:
        if self.cache is not None:
            self.cache.observe(event)

    def close(self) -> list[dict[str, Any]]:
        if self.cache is None:
            return []
        stats = self.cache.stats()
        self.cache.close()
        return [stats]


class SerialExecutor(LocalExecutor):
    """One evaluation at a time, in this process (one worker: nothing to place, no locality to track)."""

    workers = 1

    def __init__(self, evaluator: Evaluator, cache: TensorCache | None) -> None:
        super().__init__(evaluator, cache)
        self._job: Candidate | None = None

    def submit(self, candidate: Candidate) -> None:
        if self._job is not None:
            raise RuntimeError("serial executor is busy")
        self._job = candidate

    def free(self) -> int:
        return int(self._job is None)

    def next_outcome(self) -> Outcome:
        candidate, self._job = self._job, None
        if candidate is None:
            raise RuntimeError("serial executor has no job to wait for")
        try:
            record = self.evaluator.evaluate(candidate, self.cache)
        except Exception:  # a failing candidate is an outcome for the loop to retry or drop
            return Outcome(candidate, 0, error=traceback.format_exc())
        record.t_start -= self.t0
        record.t_end -= self.t0
        return Outcome(candidate, 0, record)
