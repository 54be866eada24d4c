"""Shared part of the executors whose workers are other processes (process, MPI): jobs, news, timeouts.

Real workers are placed on the wall clock: a busy worker's finish is estimated as its job's start plus
the mean duration of the jobs finished so far; each worker's reply to a job says which models its
process-local tiers hold now (placement's view of it), and its local-versus-shared split comes from the
bytes its own cache reports those tiers served (``TraceRecord.tier_bytes``). A worker
that dies or exceeds ``job_timeout`` yields an ``Outcome`` with ``error`` set, so the loop can re-queue
or drop the job and the search never hangs.
"""
from __future__ import annotations

import logging
import time
from abc import abstractmethod
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from tensorcache import TensorCache
from tensorcache.config import CacheConfig
from tensorcache.events import ModelDescribed
from tensorcache.evolution import Candidate
from tensorcache.news import EvaluationNews

from ..evaluators import Evaluator
from .base import Executor, Outcome
from .guard import SearchCache
from .placement import Locality, Placement


log = logging.getLogger("nas_integration")


@dataclass
class WorkerState:
    """The scheduler's view of one worker: what it runs, since when, and news it has not seen."""

    handle: Any  # a Process (process executor) or a rank number (MPI)
    conn: Any = None
    job: Candidate | None = None
    started: float = 0.0
    ready: float | None = None  # when setup finished; job timeouts count from max(started, ready)
    news: EvaluationNews = field(default_factory=EvaluationNews)

    @property
    def job_start(self) -> float:
        """When the current job's clock started: the later of its submission and the worker's setup."""
        return self.started if self.ready is None else max(self.started, self.ready)


class RemoteExecutor(Executor):
    """Job bookkeeping, news, timeouts and placement over workers that answer through ``_send``/messages.

    With ``locality`` settings that place by donor and a ``cache_config`` with a shared tier, the scheduler opens a
    view of the shared tiers (``CacheConfig.shared_only``) to ask ``evaluator.donor`` for each child.
    """

    def __init__(self, job_timeout: float | None, locality: Locality | None = None,
                 evaluator: Evaluator | None = None, cache_config: CacheConfig | None = None) -> None:
        super().__init__()
        if job_timeout is not None and job_timeout <= 0:
            raise ValueError(f"job timeout must be positive seconds, got {job_timeout}")
        self.job_timeout = job_timeout
        self._workers: list[WorkerState] = []
        self._ready: deque[Outcome] = deque()
        self._shared_view: TensorCache | None = None
        if locality is not None and locality.enabled and cache_config is not None and evaluator is not None:
            self._shared_view = SearchCache(cache_config.shared_only())
            self._evaluator = evaluator
        self.placement = Placement(locality, time.time, self._donor if self._shared_view is not None else None)
        self._jobs_done, self._jobs_s = 0, 0.0  # for the mean job duration

    def _donor(self, child: Candidate) -> str | None:
        return self._evaluator.donor(child, self._shared_view)

    def free(self) -> int:
        return len(self._idle())

    def _idle(self) -> list[int]:
        return [i for i, w in enumerate(self._workers) if w.job is None and self._usable(w)]

    def _usable(self, worker: WorkerState) -> bool:
        return True

    def observe(self, mutation_pos: int | None, members: list[tuple[str, float]], population_size: int,
                sample_size: int) -> None:
        for w in self._workers:
            w.news.add(mutation_pos, members, population_size, sample_size)

    def describe(self, event: ModelDescribed) -> None:
        for w in self._workers:
            w.news.describe(event)

    def submit(self, candidate: Candidate) -> None:
        index = self.placement.place(candidate, self._idle(), self._expected_ends(time.time()))
        if index is not None:
            self._start(index, candidate)

    def _start(self, index: int, candidate: Candidate) -> None:
        worker = self._workers[index]
        self.placement.started(index)
        worker.job, worker.started, news, worker.news = candidate, time.time(), worker.news, EvaluationNews()
        self._send(index, ("job", candidate, news, self.placement.locality is not None))  # report: placement reads it

    def _freed(self, index: int) -> None:
        """Worker ``index`` took its last job's result back: start the child reserved for it, if any."""
        waiting = self.placement.freed(index)
        if waiting is not None:
            self._start(index, waiting)

    def _expected_ends(self, now: float) -> dict[int, float]:
        """When each busy worker should finish: its job's start plus the mean job duration so far (now, if
        already past that); no estimate, so no worker counts as soon free, until a job has finished."""
        if not self._jobs_done:
            return {}
        mean = self._jobs_s / self._jobs_done
        return {i: max(now, w.job_start + mean) for i, w in enumerate(self._workers)
                if w.job is not None and self._usable(w)}

    @abstractmethod
    def _send(self, index: int, message: Any) -> None: ...

    def _finish(self, index: int, message: Any) -> None:
        """Turn a worker's reply into an outcome (or raise if it could not start)."""
        worker = self._workers[index]
        kind, payload = message
        if kind == "fatal":
            raise RuntimeError(f"worker {index} could not start:\n{payload}")
        if kind == "ready":
            worker.ready = time.time()
            return
        candidate, worker.job = worker.job, None
        if candidate is None:
            log.warning("worker %d sent %r with no job outstanding; ignored", index, kind)
            return
        if kind == "done":
            self._jobs_done += 1
            self._jobs_s += time.time() - worker.job_start
            record = payload.record
            record.worker = index
            self.placement.finished(index, record, payload.held, reported=True)
            record.t_start -= self.t0
            record.t_end -= self.t0
            self._ready.append(Outcome(candidate, index, record))
        else:
            self._ready.append(Outcome(candidate, index, error=payload))
        self._freed(index)

    def _fail(self, index: int, reason: str) -> None:
        worker = self._workers[index]
        log.warning("worker %d: %s", index, reason)
        if worker.job is not None:
            self._ready.append(Outcome(worker.job, index, error=reason))
            worker.job = None
        if not self._usable(worker) and (waiting := self.placement.abandon(index)) is not None:
            self._ready.append(Outcome(waiting, index, error=f"{reason}; the child waiting for it never started"))

    def _overdue(self) -> list[int]:
        if self.job_timeout is None:
            return []
        now = time.time()
        return [i for i, w in enumerate(self._workers)
                if w.job is not None and w.ready is not None and now - w.job_start > self.job_timeout]

    def _wait_budget(self) -> float | None:
        """Seconds until the next outstanding job would time out (None: no limit to watch)."""
        if self.job_timeout is None:
            return None
        starts = [w.job_start for w in self._workers if w.job is not None and w.ready is not None]
        return max(0.0, min(starts) + self.job_timeout - time.time()) + 0.01 if starts else None

    def close(self) -> list[dict[str, Any]]:
        stats = self._stop()
        if self._shared_view is not None:
            self._shared_view.close()
        return stats

    @abstractmethod
    def _stop(self) -> list[dict[str, Any]]:
        """Stop the workers; return the stats of every cache that reported."""
