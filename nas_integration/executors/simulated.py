"""Simulated workers: K workers on a discrete-event clock (a heap of finish times), in one process.

Each evaluation takes the duration the evaluator's ``start`` reports (the tabular evaluator: the table's
training time); the lookup happens when a child starts and the put when it ends, in simulated order. All
workers share one real cache, so no worker has tiers of its own to report: each one's memory tier is
modelled instead (``ModelledMemory``, the only such model in the driver), and placement reads that model
as it reads a real worker's report.
"""
from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

from tensorcache.evolution import Candidate
from tensorcache.policies import LRU

from ..evaluators import Evaluator, Started
from .base import Outcome
from .placement import Locality, Placement
from .serial import LocalExecutor

if TYPE_CHECKING:
    from tensorcache import TensorCache
    from tensorcache.trace import TraceRecord


class ModelledMemory:
    """A simulated worker's memory tier as model ids within a byte budget: the models it put or was served,
    the least recently used evicted first (the library's LRU policy)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._sizes: dict[str, int] = {}
        self._order = LRU()

    def touch(self, model_id: str, nbytes: int) -> None:
        """The worker put or was served ``model_id`` (``nbytes``): it holds it now, most recently used."""
        if model_id in self._sizes:
            self._order.on_hit(model_id)
            return
        if nbytes > self.capacity:
            return
        while self.used + nbytes > self.capacity:
            victim = self._order.victim()
            self._order.on_release(victim)
            self.used -= self._sizes.pop(victim)
        self._order.on_insert(model_id, nbytes, model_id)
        self._sizes[model_id] = nbytes
        self.used += nbytes

    def models(self) -> frozenset[str]:
        """The model ids held now (the report a real worker's cache would give)."""
        return frozenset(self._sizes)


class SimulatedExecutor(LocalExecutor):
    """``workers`` simulated workers, placed by a ``Placement`` on the simulated clock; each worker's memory
    tier is modelled with ``worker_memory`` bytes."""

    clock = "simulated"

    def __init__(self, evaluator: Evaluator, cache: TensorCache | None, workers: int,
                 locality: Locality | None = None, worker_memory: int = 0) -> None:
        if workers < 1:
            raise ValueError(f"need at least 1 worker, got {workers}")
        super().__init__(evaluator, cache)
        self.workers = workers
        self.memories = [ModelledMemory(worker_memory) for _ in range(workers)]
        self._model_bytes: dict[str, int] = {}  # each finished model's real bytes, for the memories
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
        self._remember(worker, record)
        self.placement.finished(worker, record, self.memories[worker].models(), reported=False)
        waiting = self.placement.freed(worker)
        if waiting is not None:
            self._start(worker, waiting)
        else:
            self._idle.append(worker)
        return Outcome(started.candidate, worker, record)

    def _remember(self, worker: int, record: TraceRecord) -> None:
        """``worker``'s modelled memory after ``record``: the donor it was served, then the model it put."""
        memory, nbytes = self.memories[worker], sum(record.layer_bytes)
        if record.donor_id is not None and record.bytes_served:
            memory.touch(record.donor_id, self._model_bytes.get(record.donor_id, record.bytes_served))
        self._model_bytes[record.model_id] = nbytes
        memory.touch(record.model_id, nbytes)

    def now(self) -> float:
        return self._clock
