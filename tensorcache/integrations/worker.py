"""One cache per worker process, shared by every job the process runs, and what a warm start reports.

Frameworks run a user's function in worker processes they own (process pools, MPI ranks, Ray actors);
opening tiers per job would re-read the shared catalog every time. ``worker_cache`` opens a
``TensorCache`` on a process's first job and hands the same one to later jobs; a cache inherited across
``fork`` belongs to the parent and is never used by the child.
"""
from __future__ import annotations

import os
import socket
import threading
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..cache import TensorCache
from ..config import CacheConfig
from ..layers import LayerMap
from ..transfer import TransferReport

_LOCK = threading.Lock()
_OPEN: dict[tuple[int, str], WorkerCache] = {}


@dataclass
class WorkerCache:
    """A process's cache, the lock its threads share, and what the process has told its policies."""

    cache: TensorCache
    lock: threading.Lock = field(default_factory=threading.Lock)
    jobs: int = 0          # jobs whose models this cache stored
    evaluations: int = 0   # evaluations already passed to notify_evaluation
    mutations: int = 0     # sequence number of the last mutation passed to observe_mutation
    errors: int = 0        # warm starts and puts that failed and were skipped (the job went on)


def check_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` as ``CacheConfig`` settings, checked now: TypeError naming a setting it lacks, ValueError
    naming a bad value."""
    options = dict(options)
    try:
        CacheConfig.from_settings(options)
    except TypeError as exc:
        raise TypeError(f"cache options {sorted(options)} do not fit CacheConfig: {exc}") from None
    return options


def worker_cache(options: Mapping[str, Any]) -> WorkerCache:
    """This process's cache for ``options`` (``CacheConfig`` settings), opened on first use."""
    key = (os.getpid(), repr(sorted(options.items())))
    with _LOCK:
        found = _OPEN.get(key)
        if found is None:
            for stale in [k for k in _OPEN if k[0] != key[0]]:  # inherited through fork: the parent's handles
                del _OPEN[stale]
            found = _OPEN[key] = WorkerCache(TensorCache(**options))
        return found


def worker_name() -> str:
    """``host:pid`` of this process."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Transfer:
    """What the cache did for one job: the warm start's report and seconds spent in the cache."""

    model_id: str
    parent: str | None
    report: TransferReport = field(default_factory=TransferReport)
    seconds: float = 0.0
    error: str = ""        # what failed in the cache, if anything (the job went on without it)

    def metadata(self, prefix: str = "tc_") -> dict[str, Any]:
        """Flat, CSV-friendly fields: model, parent, donor, layers and bytes transferred, tier, seconds, and
        what failed in the cache ("" when nothing did)."""
        r = self.report
        return {f"{prefix}model": self.model_id, f"{prefix}parent": self.parent or "",
                f"{prefix}donor": r.donor or "", f"{prefix}layers": r.layers, f"{prefix}bytes": r.nbytes,
                f"{prefix}tier": r.tier or "", f"{prefix}cache_s": round(self.seconds, 6),
                f"{prefix}error": self.error}


def text_id(value: Any) -> str | None:
    """A lineage field as an id, or None when empty (CSV reloads turn empty strings into NaN)."""
    return value if isinstance(value, str) and value else None


def warm(worker: WorkerCache, module: Any, arch: tuple[int, ...], transfer: Transfer,
         layer_map: LayerMap | None) -> None:
    """Warm-start ``module`` from the cache (the known parent preferred), timing it into ``transfer``; a
    cache error is a warning and a counted miss, never the job's failure."""
    t0 = time.perf_counter()
    with worker.lock:
        try:
            transfer.report = worker.cache.warm_start(module, arch, parent=transfer.parent, layer_map=layer_map)
        except Exception as exc:  # the user's job goes on without the cache
            transfer.report = TransferReport()
            _failed(worker, transfer, "warm start", exc)
    transfer.seconds += time.perf_counter() - t0


def store(worker: WorkerCache, module: Any, arch: tuple[int, ...], score: float | None, transfer: Transfer,
          layer_map: LayerMap | None) -> int:
    """Put ``module``'s trained tensors under the job's model id, timing it into ``transfer``; returns how
    many jobs this process's cache has stored, this one included. A cache error is a warning and a
    counted failure, never the job's failure."""
    t0 = time.perf_counter()
    with worker.lock:
        try:
            worker.cache.put(transfer.model_id, arch, module.state_dict(), score=score, parent=transfer.parent,
                             layer_map=layer_map)
            worker.jobs += 1
        except Exception as exc:  # the user's job goes on without the cache
            _failed(worker, transfer, "put", exc)
        jobs = worker.jobs
    transfer.seconds += time.perf_counter() - t0
    return jobs


def _failed(worker: WorkerCache, transfer: Transfer, what: str, exc: Exception) -> None:
    """Count and warn about a cache operation that failed (the caller holds ``worker.lock``)."""
    worker.errors += 1
    message = f"{what} of model {transfer.model_id} failed: {type(exc).__name__}: {exc}"
    transfer.error = "; ".join(filter(None, [transfer.error, message]))
    warnings.warn(f"tensorcache: {message}; the job goes on without the cache", RuntimeWarning, stacklevel=3)
