"""Executors: where evaluations run. The search loop submits candidates and waits for outcomes.

* ``SerialExecutor``: one evaluation at a time in this process (wall clock).
* ``SimulatedExecutor``: K simulated workers on a discrete-event clock (a heap of finish times); the
  tabular evaluator's lookup happens when a child starts and its put when it ends, in simulated order.
* ``ProcessExecutor``: K spawned processes, each with its own ``TensorCache`` built from the same
  ``CacheSettings`` (the memory tier is per process; LMDB and Redis tiers are shared), one GPU each
  where several exist.
* ``MPIExecutor``: rank 0 schedules, ranks 1..K-1 run ``serve_mpi``.

All but the serial executor can place a child on the worker whose memory tier holds its donor
(``nas_integration.locality``). Simulated workers wait for a busy holder on the simulated clock; real
workers (process, MPI) wait in wall seconds, a busy worker's finish being estimated as its job's start plus
the mean duration of the jobs finished so far, and their local-versus-shared split comes from the bytes
each worker's own cache reports its process-local tiers served (``Result.tier_bytes``).

A worker that dies or exceeds ``job_timeout`` yields an ``Outcome`` with ``error`` set (the process
executor kills and replaces it; MPI stops using the rank), so the loop can re-queue or drop the job and
the search never hangs. Policy hooks (evaluations, mutation positions, the population) reach remote
workers' caches as ``CacheNews`` sent with their next job.
"""
from __future__ import annotations

import heapq
import logging
import multiprocessing as mp
import os
import time
import traceback
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from multiprocessing.connection import wait
from typing import TYPE_CHECKING, Any

from tensorcache.sizes import parse_size

from .evaluators import Evaluator, Result
from .evaluators.tabular import TabularEvaluator
from .evolution import Candidate
from .locality import LocalityTracker

if TYPE_CHECKING:
    from tensorcache import TensorCache

log = logging.getLogger("nas_integration")


WINDOWED = ("donor-window", "evolution-aware")  # policies that take a ``window``


@dataclass
class CacheSettings:
    """Everything a worker needs to open its own TensorCache; capacities are multiplied by ``scale``."""

    namespace: str
    memory: int | str = "2GB"
    disk: str | None = None
    disk_capacity: int | str = "20GB"
    redis: str | None = None
    redis_capacity: int | str = "100GB"
    redis_required: bool = False  # an unreachable Redis is an error instead of a cache without it
    policy: str = "donor-window"
    scale: float = 1.0
    window: int | None = None  # donor-window / evolution-aware sliding window, in evaluations
    device_memory: int | str = 0  # GPU-resident tier ahead of the memory tier
    device: str = "cuda"

    def open(self) -> TensorCache:
        from tensorcache import TensorCache

        def size(value: int | str, what: str) -> int:
            return int(parse_size(value, what=what) * self.scale)

        return TensorCache(memory=size(self.memory, "memory size"), disk=self.disk,
                           disk_capacity=size(self.disk_capacity, "disk capacity"), redis=self.redis,
                           redis_capacity=size(self.redis_capacity, "redis capacity"),
                           redis_required=self.redis_required, policy=self.policy,
                           namespace=self.namespace, device_memory=size(self.device_memory, "device memory size"),
                           device=self.device,
                           policy_kwargs={"window": self.window} if self.window and self.policy in WINDOWED else None)

    def open_view(self) -> TensorCache:
        """A cache with no memory tier over the shared tiers: the scheduler's view of the catalog (best_donor)."""
        if self.disk is None and self.redis is None:
            raise ValueError("the scheduler sees the workers' models only through a shared tier: give a disk or "
                             "redis tier")
        return replace(self, memory=0, device_memory=0).open()


@dataclass
class CacheNews:
    """Finished-evaluation events a cache has not been told yet (for its eviction policy)."""

    evaluations: int = 0
    mutations: list[int] = field(default_factory=list)
    population: list[tuple[str, float]] | None = None
    population_size: int = 0
    sample_size: int = 0

    def add(self, mutation_pos: int | None, members: list[tuple[str, float]], population_size: int,
            sample_size: int) -> None:
        self.evaluations += 1
        if mutation_pos is not None:
            self.mutations.append(mutation_pos)
        self.population, self.population_size, self.sample_size = members, population_size, sample_size

    def apply(self, cache: TensorCache) -> None:
        for _ in range(self.evaluations):
            cache.notify_evaluation()
        for pos in self.mutations:
            cache.observe_mutation(pos)
        if self.population is not None:
            cache.update_population(self.population, self.population_size, self.sample_size)


@dataclass
class Outcome:
    """A finished job: its result, or why it failed (worker died, timed out, raised)."""

    candidate: Candidate
    worker: int
    result: Result | None = None
    error: str | None = None


class Executor(ABC):
    """Runs candidates on ``workers`` workers; ``next_outcome`` blocks until one job ends."""

    workers: int
    clock = "wall"  # "simulated" when times in outcomes are simulated seconds
    locality: LocalityTracker | None = None

    def __init__(self) -> None:
        self.t0 = time.time()

    @abstractmethod
    def submit(self, candidate: Candidate) -> None:
        """Start ``candidate`` on a free worker (call only while ``free() > 0``)."""

    @abstractmethod
    def next_outcome(self) -> Outcome:
        """Wait for the next job to finish or fail."""

    @abstractmethod
    def free(self) -> int:
        """Workers able to take a job now."""

    @abstractmethod
    def observe(self, mutation_pos: int | None, members: list[tuple[str, float]], population_size: int,
                sample_size: int) -> None:
        """An evaluation finished: pass the news to the caches' policies."""

    def now(self) -> float:
        """Seconds since the executor started, on its clock."""
        return time.time() - self.t0

    def locality_summary(self) -> dict[str, Any] | None:
        """Local versus shared-tier transfers, waits and idle time, where the executor tracks worker memories."""
        if self.locality is None:
            return None
        return {"enabled": self.locality.enabled, "max_wait_s": self.locality.max_wait,
                **self.locality.stats.summary()}

    def close(self) -> list[dict[str, Any]]:
        """Stop the workers; return the stats of every cache that reported."""
        return []

    def release(self) -> None:
        """Called after the outputs are written; lets MPI abandon ranks that never answered."""


class _LocalExecutor(Executor):
    """Shared part of the in-process executors: one cache, told about evaluations at once."""

    def __init__(self, evaluator: Evaluator, cache: TensorCache | None) -> None:
        super().__init__()
        self.evaluator, self.cache = evaluator, cache
        evaluator.setup()

    def observe(self, mutation_pos: int | None, members: list[tuple[str, float]], population_size: int,
                sample_size: int) -> None:
        if self.cache is not None:
            news = CacheNews()
            news.add(mutation_pos, members, population_size, sample_size)
            news.apply(self.cache)

    def close(self) -> list[dict[str, Any]]:
        if self.cache is None:
            return []
        stats = self.cache.stats()
        self.cache.close()
        return [stats]


class SerialExecutor(_LocalExecutor):
    """One evaluation at a time, in this process."""

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
            result = self.evaluator.evaluate(candidate, self.cache)
        except Exception:  # a failing candidate is an outcome for the loop to retry or drop
            return Outcome(candidate, 0, error=traceback.format_exc())
        result.t_start -= self.t0
        result.t_end -= self.t0
        return Outcome(candidate, 0, result)


class SimulatedExecutor(_LocalExecutor):
    """``workers`` simulated workers; each evaluation takes the tabular evaluator's simulated duration.

    With a ``LocalityTracker`` that is enabled, a child goes to the worker whose memory holds its donor
    (see ``nas_integration.locality``); the tracker also models each worker's memory when disabled, so
    both placements report local versus shared-tier transfer bytes and worker idle time.
    """

    clock = "simulated"

    def __init__(self, evaluator: TabularEvaluator, cache: TensorCache | None, workers: int,
                 locality: LocalityTracker | None = None) -> None:
        if workers < 1:
            raise ValueError(f"need at least 1 worker, got {workers}")
        super().__init__(evaluator, cache)
        self.workers = workers
        self.locality = locality
        self._clock = 0.0
        self._idle = list(range(workers))
        self._idle_since = dict.fromkeys(range(workers), 0.0)
        self._busy_until: dict[int, float] = {}
        self._reserved: dict[int, tuple[Candidate, float]] = {}  # worker -> (child waiting for it, since)
        self._running: list[tuple[float, int, int, float, Any]] = []  # (end, issue index, worker, start, pending)

    def submit(self, candidate: Candidate) -> None:
        if self.locality is None:
            self._start(heapq.heappop(self._idle), candidate)
            return
        donor = None
        if self.locality.enabled and self.cache is not None:
            donor = self.evaluator.donor(candidate, self.cache)
        worker, start_at = self.locality.place(donor, self._idle, self._busy_until, set(self._reserved),
                                               self._clock)
        if start_at is not None:
            self._reserved[worker] = (candidate, self._clock)
            return
        self._idle.remove(worker)
        heapq.heapify(self._idle)
        self._start(worker, candidate)

    def _start(self, worker: int, candidate: Candidate) -> None:
        if self.locality is not None:
            self.locality.stats.idle_s += self._clock - self._idle_since.pop(worker, self._clock)
        pending = self.evaluator.start(candidate, self.cache)
        end = self._clock + pending.duration
        self._busy_until[worker] = end
        heapq.heappush(self._running, (end, candidate.index, worker, self._clock, pending))

    def free(self) -> int:
        return len(self._idle)

    def next_outcome(self) -> Outcome:
        t_end, _, worker, t_start, pending = heapq.heappop(self._running)
        self._clock = t_end
        del self._busy_until[worker]
        result = self.evaluator.finish(pending, self.cache)
        result.t_start, result.t_end = t_start, t_end
        if self.locality is not None:
            self.locality.finished(worker, pending.candidate.model_id, sum(result.layer_bytes),
                                   result.donor_id, result.transfer_bytes)
        reserved = self._reserved.pop(worker, None)
        if reserved is not None:
            self.locality.waited(t_end - reserved[1])
            self._start(worker, reserved[0])
        else:
            self._idle_since[worker] = t_end
            heapq.heappush(self._idle, worker)
        return Outcome(pending.candidate, worker, result)

    def now(self) -> float:
        return self._clock


def serve(recv: Callable[[], Any], send: Callable[[Any], None], evaluator: Evaluator,
          cache_settings: CacheSettings | None) -> None:
    """Worker side of the process and MPI executors: set up, then evaluate jobs until told to stop."""
    try:
        evaluator.setup()
        cache = cache_settings.open() if cache_settings is not None else None
    except Exception:
        send(("fatal", traceback.format_exc()))
        return
    send(("ready", None))
    try:
        while True:
            message = recv()
            if message[0] == "stop":
                send(("stats", cache.stats() if cache is not None else {}))
                return
            _, candidate, news = message
            if cache is not None:
                news.apply(cache)
            try:
                send(("done", evaluator.evaluate(candidate, cache)))
            except Exception:
                send(("error", traceback.format_exc()))
    finally:
        if cache is not None:
            cache.close()


def _process_main(conn: Any, evaluator: Evaluator, cache_settings: CacheSettings | None, gpu: str | None) -> None:
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    serve(conn.recv, conn.send, evaluator, cache_settings)


@dataclass
class _Worker:
    """The scheduler's view of one worker: what it runs, since when, and news it has not seen."""

    handle: Any  # a Process (process executor) or a rank number (MPI)
    conn: Any = None
    job: Candidate | None = None
    started: float = 0.0
    ready: float | None = None  # when setup finished; job timeouts count from max(started, ready)
    news: CacheNews = field(default_factory=CacheNews)


class _RemoteExecutor(Executor):
    """Shared part of the process and MPI executors: job bookkeeping, news, timeouts, placement.

    With a ``locality`` tracker the scheduler places children (see the module doc); when placement is
    enabled it opens ``cache_settings.open_view()`` to ask ``evaluator.donor`` (tabular) for each child's donor.
    """

    def __init__(self, job_timeout: float | None, locality: LocalityTracker | None = None,
                 evaluator: Evaluator | None = None, cache_settings: CacheSettings | None = None) -> None:
        super().__init__()
        if job_timeout is not None and job_timeout <= 0:
            raise ValueError(f"job timeout must be positive seconds, got {job_timeout}")
        self.job_timeout = job_timeout
        self._workers: list[_Worker] = []
        self._ready: deque[Outcome] = deque()
        self.locality = locality
        self._evaluator = evaluator
        self._catalog: TensorCache | None = None
        if locality is not None and locality.enabled and cache_settings is not None and evaluator is not None:
            evaluator.setup()  # donor() needs the search space
            self._catalog = cache_settings.open_view()
        self._reserved: dict[int, tuple[Candidate, float]] = {}  # worker -> (child waiting for it, since)
        self._idle_since: dict[int, float] = {}
        self._jobs_done, self._jobs_s = 0, 0.0  # for the mean job duration

    def free(self) -> int:
        return sum(w.job is None and self._usable(w) for w in self._workers)

    def _usable(self, worker: _Worker) -> bool:
        return True

    def observe(self, mutation_pos: int | None, members: list[tuple[str, float]], population_size: int,
                sample_size: int) -> None:
        for w in self._workers:
            w.news.add(mutation_pos, members, population_size, sample_size)

    def submit(self, candidate: Candidate) -> None:
        idle = [i for i, w in enumerate(self._workers) if w.job is None and self._usable(w)]
        if self.locality is None:
            self._start(idle[0], candidate)
            return
        donor = self._evaluator.donor(candidate, self._catalog) if self._catalog is not None else None
        now = time.time()
        index, start_at = self.locality.place(donor, idle, self._expected_ends(now), set(self._reserved), now)
        if start_at is None:
            self._start(index, candidate)
        else:
            self._reserved[index] = (candidate, now)

    def _start(self, index: int, candidate: Candidate) -> None:
        worker, now = self._workers[index], time.time()
        if self.locality is not None:
            self.locality.stats.idle_s += now - self._idle_since.pop(index, now)
        worker.job, worker.started, news, worker.news = candidate, now, worker.news, CacheNews()
        self._send(index, ("job", candidate, news))

    def _freed(self, index: int) -> None:
        """Worker ``index`` took its last job's result back: start the child reserved for it, if any."""
        reserved = self._reserved.pop(index, None)
        if reserved is None:
            self._idle_since[index] = time.time()
            return
        self.locality.waited(time.time() - reserved[1])
        self._start(index, reserved[0])

    def _expected_ends(self, now: float) -> dict[int, float]:
        """When each busy worker should finish: its job's start plus the mean job duration so far (now, if
        already past that); no estimate, so no worker counts as soon free, until a job has finished."""
        if not self._jobs_done:
            return {}
        mean = self._jobs_s / self._jobs_done
        return {i: max(now, self._job_start(w) + mean) for i, w in enumerate(self._workers)
                if w.job is not None and self._usable(w)}

    @staticmethod
    def _job_start(worker: _Worker) -> float:
        return worker.started if worker.ready is None else max(worker.started, worker.ready)

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
            self._jobs_s += time.time() - self._job_start(worker)
            if self.locality is not None:
                self.locality.finished(index, candidate.model_id, sum(payload.layer_bytes), payload.donor_id,
                                       payload.transfer_bytes, payload.tier_bytes)
            payload.t_start -= self.t0
            payload.t_end -= self.t0
            self._ready.append(Outcome(candidate, index, payload))
        else:
            self._ready.append(Outcome(candidate, index, error=payload))
        self._freed(index)

    def _fail(self, index: int, reason: str) -> None:
        worker = self._workers[index]
        log.warning("worker %d: %s", index, reason)
        if worker.job is not None:
            self._ready.append(Outcome(worker.job, index, error=reason))
            worker.job = None
        if not self._usable(worker) and index in self._reserved:
            waiting = self._reserved.pop(index)[0]
            self._ready.append(Outcome(waiting, index, error=f"{reason}; the child waiting for it never started"))

    def _overdue(self) -> list[int]:
        if self.job_timeout is None:
            return []
        now = time.time()
        return [i for i, w in enumerate(self._workers)
                if w.job is not None and w.ready is not None and now - max(w.started, w.ready) > self.job_timeout]

    def _wait_budget(self) -> float | None:
        """Seconds until the next outstanding job would time out (None: no limit to watch)."""
        if self.job_timeout is None:
            return None
        starts = [max(w.started, w.ready) for w in self._workers if w.job is not None and w.ready is not None]
        return max(0.0, min(starts) + self.job_timeout - time.time()) + 0.01 if starts else None

    def close(self) -> list[dict[str, Any]]:
        stats = self._stop()
        if self._catalog is not None:
            self._catalog.close()
        return stats

    @abstractmethod
    def _stop(self) -> list[dict[str, Any]]:
        """Stop the workers; return the stats of every cache that reported."""


class ProcessExecutor(_RemoteExecutor):
    """``workers`` spawned processes; a dead or overdue one is replaced and its job reported as failed."""

    def __init__(self, evaluator: Evaluator, cache_settings: CacheSettings | None, workers: int,
                 gpus: Sequence[str] = (), job_timeout: float | None = None,
                 locality: LocalityTracker | None = None) -> None:
        if workers < 1:
            raise ValueError(f"need at least 1 worker, got {workers}")
        super().__init__(job_timeout, locality, evaluator, cache_settings)
        self.workers = workers
        self._ctx = mp.get_context("spawn")
        self._args = (evaluator, cache_settings)
        self._gpus = list(gpus)
        self._workers = [self._spawn(i) for i in range(workers)]
        self.replaced = 0

    def _spawn(self, index: int) -> _Worker:
        gpu = self._gpus[index % len(self._gpus)] if self._gpus else None
        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(target=_process_main, args=(child, *self._args, gpu),
                                    name=f"nas-worker-{index}", daemon=True)
        process.start()
        child.close()
        return _Worker(process, parent)

    def _replace(self, index: int, reason: str) -> None:
        self._fail(index, reason)
        old = self._workers[index]
        old.conn.close()
        if old.handle.is_alive():
            old.handle.kill()
        old.handle.join()
        self._workers[index] = self._spawn(index)
        self._workers[index].news = old.news
        self.replaced += 1
        self._freed(index)

    def _send(self, index: int, message: Any) -> None:
        try:
            self._workers[index].conn.send(message)
        except OSError:
            self._replace(index, f"died before taking job {message[1].model_id}")

    def next_outcome(self) -> Outcome:
        while not self._ready:
            if not any(w.job is not None for w in self._workers):
                raise RuntimeError("no job is outstanding")
            sources = {}
            for i, w in enumerate(self._workers):
                sources[w.conn] = i
                sources[w.handle.sentinel] = i
            for ready in wait(list(sources), timeout=self._wait_budget()):
                i = sources[ready]
                w = self._workers[i]
                if ready is not w.conn and ready is not w.handle.sentinel:
                    continue  # this worker was replaced while handling an earlier source
                if w.conn.poll():
                    try:
                        self._finish(i, w.conn.recv())
                        continue
                    except (EOFError, OSError):
                        pass
                if not w.handle.is_alive():
                    self._replace(i, f"died (exit code {w.handle.exitcode})")
            for i in self._overdue():
                self._replace(i, f"timed out after {self.job_timeout:g} s; killed")
        return self._ready.popleft()

    def _stop(self) -> list[dict[str, Any]]:
        stats = []
        for w in self._workers:
            try:
                w.conn.send(("stop",))
            except OSError:
                continue
        deadline = time.time() + 30
        for w in self._workers:
            try:
                while w.conn.poll(max(0.0, deadline - time.time())):
                    kind, payload = w.conn.recv()
                    if kind == "stats":
                        stats.append(payload)
                        break
            except (EOFError, OSError):
                pass
            w.handle.join(max(0.0, deadline - time.time()))
            if w.handle.is_alive():
                w.handle.kill()
                w.handle.join()
            w.conn.close()
        return stats


class MPIExecutor(_RemoteExecutor):
    """Rank 0's scheduler over ranks 1..size-1 of ``comm``; a rank past ``job_timeout`` is given up."""

    TAG = 7

    def __init__(self, comm: Any, job_timeout: float | None = None, locality: LocalityTracker | None = None,
                 evaluator: Evaluator | None = None, cache_settings: CacheSettings | None = None) -> None:
        if comm.Get_size() < 2:
            raise ValueError(f"--executor mpi needs at least 2 ranks (mpirun -n K, K >= 2), got {comm.Get_size()}")
        super().__init__(job_timeout, locality, evaluator, cache_settings)
        self.comm = comm
        self.workers = comm.Get_size() - 1
        self._workers = [_Worker(rank) for rank in range(1, comm.Get_size())]
        self.lost: set[int] = set()

    def _usable(self, worker: _Worker) -> bool:
        return worker.handle - 1 not in self.lost

    def _send(self, index: int, message: Any) -> None:
        self.comm.send(message, dest=self._workers[index].handle, tag=self.TAG)

    def next_outcome(self) -> Outcome:
        from mpi4py import MPI

        status = MPI.Status()
        pause = 0.0005
        while not self._ready:
            if self.comm.Iprobe(source=MPI.ANY_SOURCE, tag=self.TAG, status=status):
                index = status.Get_source() - 1
                message = self.comm.recv(source=status.Get_source(), tag=self.TAG)
                if index in self.lost:
                    log.warning("worker %d answered after its timeout; its late %s is ignored", index, message[0])
                    self.lost.discard(index)
                    self._workers[index].job = None
                else:
                    self._finish(index, message)
                pause = 0.0005
                continue
            for i in self._overdue():
                self.lost.add(i)
                self._fail(i, f"timed out after {self.job_timeout:g} s; rank {i + 1} is no longer used")
            if not self._ready:
                if len(self.lost) == self.workers:
                    raise RuntimeError("every MPI worker rank timed out; giving up")
                time.sleep(pause)
                pause = min(pause * 2, 0.01)
        return self._ready.popleft()

    def _stop(self) -> list[dict[str, Any]]:
        stats = []
        live = [w.handle for i, w in enumerate(self._workers) if i not in self.lost]
        for rank in live:
            self.comm.send(("stop",), dest=rank, tag=self.TAG)
        from mpi4py import MPI

        status = MPI.Status()
        waiting, deadline = set(live), time.time() + 30
        while waiting and time.time() < deadline:
            if self.comm.Iprobe(source=MPI.ANY_SOURCE, tag=self.TAG, status=status):
                kind, payload = self.comm.recv(source=status.Get_source(), tag=self.TAG)
                if kind == "stats":
                    stats.append(payload)
                    waiting.discard(status.Get_source())
            else:
                time.sleep(0.001)
        self.lost.update(rank - 1 for rank in waiting)
        return stats

    def release(self) -> None:
        if self.lost:
            log.warning("abandoning unresponsive ranks %s", sorted(i + 1 for i in self.lost))
            self.comm.Abort(0)


def serve_mpi(comm: Any, evaluator: Evaluator, cache_settings: CacheSettings | None) -> None:
    """Body of ranks 1..K-1: evaluate what rank 0 sends until it says stop."""
    serve(lambda: comm.recv(source=0, tag=MPIExecutor.TAG),
          lambda message: comm.send(message, dest=0, tag=MPIExecutor.TAG), evaluator, cache_settings)


def merge_stats(stats: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the numeric counters of several caches' ``stats()`` (hit ratio recomputed); tiers kept per cache."""
    def add(into: dict[str, Any], part: dict[str, Any]) -> None:
        for key, value in part.items():
            if key == "tiers":
                into.setdefault("tiers", []).append(value)
            elif isinstance(value, dict):
                add(into.setdefault(key, {}), value)
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                into[key] = into.get(key, 0) + value

    merged: dict[str, Any] = {}
    for part in stats:
        add(merged, part)
    if merged:
        merged["hit_ratio"] = merged["hits"] / merged["lookups"] if merged.get("lookups") else 0.0
        merged["caches"] = len(stats)
    return merged
