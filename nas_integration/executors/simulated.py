"""Simulated workers: K workers on a discrete-event clock (a heap of finish times), in one process.

Each evaluation takes the duration the evaluator's ``start`` reports (the tabular evaluator: the table's
training time); the lookup happens when a child starts and the put when it ends, in simulated order. All
workers share one real cache, so the locality tracker's memory model judges which transfers were local.
"""
from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

from ..evaluators import Evaluator, Started
from ..evolution import Candidate
from ..locality import LocalityTracker
from .base import Outcome
from .placement import Placement
from .serial import LocalExecutor

if TYPE_CHECKING:
    from tensorcache import TensorCache


class SimulatedExecutor(LocalExecutor):
    """``workers`` simulated workers, placed by a ``Placement`` on the simulated clock."""

    clock = "simulated"

    def __init__(self, evaluator: Evaluator, cache: TensorCache | None, workers: int,
                 locality: LocalityTracker | None = None) -> None:
        if workers < 1:
            raise ValueError(f"need at least 1 worker, got {workers}")
        super().__init__(evaluator, cache)
        self.workers = workers
        self._clock = 0.0
        donor = None if cache is None else lambda child: evaluator.donor(child, cache)
        self.placement = Placement(locality, lambda: self._clock, donor)
        self._idle = list(range(workers))
        for worker in self._idle:
            self.placement.idle(worker)
        self._busy_until: dict[int, float] = {}
        self._running: list[tuple[float, int, int, float, Started]] = []  # (end, issue index, worker, start, job)

    def submit(self, candidate: Candidate) -> None:
        worker = self.placement.place(candidate, self._idle, self._busy_until)
        if worker is None:
            return  # reserved for a busy worker holding its donor
        self._idle.remove(worker)
        self._start(worker, candidate)

    def _start(self, worker: int, candidate: Candidate) -> None:
        self.placement.started(worker)
        started = self.evaluator.start(candidate, self.cache)
        end = self._clock + started.duration
        self._busy_until[worker] = end
        heapq.heappush(self._running, (end, candidate.index, worker, self._clock, started))

    def free(self) -> int:
        return len(self._idle)

    def next_outcome(self) -> Outcome:
        t_end, _, worker, t_start, started = heapq.heappop(self._running)
        self._clock = t_end
        del self._busy_until[worker]
        record = self.evaluator.finish(started, self.cache)
        record.t_start, record.t_end, record.worker = t_start, t_end, worker
        self.placement.finished(worker, record, reported=False)
        waiting = self.placement.freed(worker)
        if waiting is not None:
            self._start(worker, waiting)
        else:
            self._idle.append(worker)
        return Outcome(started.candidate, worker, record)

    def now(self) -> float:
        return self._clock
