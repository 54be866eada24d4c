"""The process executor: K spawned processes, each with its own TensorCache built from one CacheConfig
(the memory tier is per process; LMDB and Redis tiers are shared), one GPU each where several exist."""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from collections.abc import Sequence
from multiprocessing.connection import wait
from typing import Any

from tensorcache.config import CacheConfig

from ..evaluators import Evaluator
from .base import Outcome
from .placement import Locality
from .remote import RemoteExecutor, WorkerState
from .worker import run_jobs


class ProcessExecutor(RemoteExecutor):
    """``workers`` spawned processes; a dead or overdue one is replaced and its job reported as failed."""

    def __init__(self, evaluator: Evaluator, cache_config: CacheConfig | None, workers: int,
                 gpus: Sequence[str] = (), job_timeout: float | None = None,
                 locality: Locality | None = None) -> None:
        if workers < 1:
            raise ValueError(f"need at least 1 worker, got {workers}")
        super().__init__(job_timeout, locality, evaluator, cache_config)
        self.workers = workers
        self._ctx = mp.get_context("spawn")
        self._args = (evaluator, cache_config)
        self._gpus = list(gpus)
        self._workers = [self._spawn(i) for i in range(workers)]
        self.replaced = 0

    def _spawn(self, index: int) -> WorkerState:
        gpu = self._gpus[index % len(self._gpus)] if self._gpus else None
        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(target=_process_main, args=(child, *self._args, gpu),
                                    name=f"nas-worker-{index}", daemon=True)
        process.start()
        child.close()
        return WorkerState(process, parent)

    def _replace(self, index: int, reason: str) -> None:
        self._fail(index, reason)
        old = self._workers[index]
        old.conn.close()
        if old.handle.is_alive():
            old.handle.kill()
        old.handle.join()
        self._workers[index] = self._spawn(index)
        self._workers[index].news = old.news
        self.placement.restarted(index)
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


def _process_main(conn: Any, evaluator: Evaluator, cache_config: CacheConfig | None, gpu: str | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the scheduler's to handle: it stops the workers
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    run_jobs(conn.recv, conn.send, evaluator, cache_config)
