"""The MPI executor: rank 0 schedules, ranks 1..K-1 run ``mpi_worker``; a rank past its job timeout is given up."""
from __future__ import annotations

import logging
import time
from typing import Any

from tensorcache.config import CacheConfig

from ..evaluators import Evaluator
from .base import Outcome
from .placement import Locality
from .remote import RemoteExecutor, WorkerState
from .worker import run_jobs

log = logging.getLogger("nas_integration")


class MPIExecutor(RemoteExecutor):
    """Rank 0's scheduler over ranks 1..size-1 of ``comm``; a rank past ``job_timeout`` is given up."""

    TAG = 7

    def __init__(self, comm: Any, job_timeout: float | None = None, locality: Locality | None = None,
                 evaluator: Evaluator | None = None, cache_config: CacheConfig | None = None) -> None:
        if comm.Get_size() < 2:
            raise ValueError(f"--executor mpi needs at least 2 ranks (mpirun -n K, K >= 2), got {comm.Get_size()}")
        super().__init__(job_timeout, locality, evaluator, cache_config)
        self.comm = comm
        self.workers = comm.Get_size() - 1
        self._workers = [WorkerState(rank) for rank in range(1, comm.Get_size())]
        self.lost: set[int] = set()

    def _usable(self, worker: WorkerState) -> bool:
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


def mpi_worker(comm: Any, evaluator: Evaluator, cache_config: CacheConfig | None) -> None:
    """Body of ranks 1..K-1: evaluate what rank 0 sends until it says stop."""
    run_jobs(lambda: comm.recv(source=0, tag=MPIExecutor.TAG),
             lambda message: comm.send(message, dest=0, tag=MPIExecutor.TAG), evaluator, cache_config)
