"""One cache per worker process, shared by every job the process runs, and what a warm start reports.

Frameworks run a user's function in worker processes they own (process pools, MPI ranks, Ray actors);
opening tiers per job would re-read the shared catalog every time. ``worker_cache`` opens a
``TensorCache`` on a process's first job and hands the same one to later jobs; a cache inherited across
``fork`` belongs to the parent and is never used by the child.

A cache error never fails a job: what can be known where the search is set up is checked there
(``cache_settings``: a bad value, a required Redis that does not answer); a cache a worker process cannot open
(e.g. a disk path that process cannot use) leaves that process without it, with one warning: its warm starts
are misses and its puts are skipped, each counted and noted in the job's ``tc_error``.
"""
from __future__ import annotations

import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..cache import TensorCache
from ..config import CacheConfig
from ..guard import Guard
from ..layers import LayerMap
from ..tiers.redis import check_reachable
from ..transfer import TransferReport

T = TypeVar("T")
CacheOptions = Mapping[str, Any] | CacheConfig | str   # what an integration takes as its cache (cache_settings)
_LOCK = threading.Lock()
_OPEN: dict[tuple[int, str], WorkerCache] = {}


class Unopened(RuntimeError):
    """This process's cache could not be opened (warned about once, when it was tried)."""


@dataclass
class WorkerCache:
    """A process's cache (None when it could not be opened: ``failure`` says why), the lock its threads share,
    the guard its calls run under, and what the process has told its policies."""

    cache: TensorCache | None
    lock: threading.Lock = field(default_factory=threading.Lock)
    jobs: int = 0          # jobs whose models this cache stored
    heard: int = 0         # number of the last finished evaluation whose news this cache has heard
    failure: str = ""      # why the cache could not be opened in this process
    guard: Guard = field(default_factory=lambda: Guard(quiet=(Unopened,)))

    @property
    def errors(self) -> int:
        """Warm starts, lookups and puts that failed or had no cache, skipped (the job went on)."""
        return sum(self.guard.errors.values())


def cache_settings(cache: CacheOptions) -> dict[str, Any]:
    """``cache`` (``CacheConfig`` settings by name, a ``CacheConfig`` or a ``tensorcache://`` URL) as settings,
    checked where the search is set up: TypeError naming a setting CacheConfig lacks, ValueError naming a bad
    value, ConnectionError naming a required Redis that does not answer. A disk path is only tried where a
    worker opens it (node-local folders need not exist here)."""
    if isinstance(cache, str):
        config = CacheConfig.from_url(cache)
    elif isinstance(cache, CacheConfig):
        config = cache
    elif isinstance(cache, Mapping):
        try:
            config = CacheConfig.from_settings(cache)
        except TypeError as exc:
            raise TypeError(f"cache options {sorted(cache)} do not fit CacheConfig: {exc}") from None
    else:
        raise TypeError(f"cache must be CacheConfig settings (a dict), a CacheConfig or a tensorcache:// URL, "
                        f"got {type(cache).__name__}")
    if config.redis is not None and config.redis_required:
        check_reachable(config.redis)
    return dict(cache) if isinstance(cache, Mapping) else config.to_dict()


def worker_cache(options: Mapping[str, Any]) -> WorkerCache:
    """This process's cache for ``options`` (``CacheConfig`` settings), opened on first use; one that cannot be
    opened is warned about once and the process's jobs run without it."""
    key = (os.getpid(), repr(sorted(options.items())))
    with _LOCK:
        found = _OPEN.get(key)
        if found is None:
            for stale in [k for k in _OPEN if k[0] != key[0]]:  # inherited through fork: the parent's handles
                del _OPEN[stale]
            found = _OPEN[key] = _open(options)
        return found


def _open(options: Mapping[str, Any]) -> WorkerCache:
    try:
        return WorkerCache(TensorCache(**options))
    except Exception as exc:  # the jobs go on without the cache
        why = f"the cache cannot be opened in process {worker_name()} ({type(exc).__name__}: {exc})"
        warnings.warn(f"tensorcache: {why}; its jobs run without the cache (warm starts are misses, puts are "
                      "skipped)", RuntimeWarning, stacklevel=3)
        return WorkerCache(None, failure=why)


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
    mutation: int | None = None  # the architecture position the job's mutation changed, when known

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
    transfer.report = guarded(worker, transfer, "warm start", TransferReport(), lambda cache: cache.warm_start(
        module, arch, parent=transfer.parent, layer_map=layer_map))
    transfer.seconds += time.perf_counter() - t0


def store(worker: WorkerCache, module: Any, arch: tuple[int, ...], score: float | None, transfer: Transfer,
          layer_map: LayerMap | None) -> int:
    """Put ``module``'s trained tensors under the job's model id, timing it into ``transfer``; returns how
    many jobs this process's cache has stored, this one included. A cache error is a warning and a
    counted failure, never the job's failure."""
    def put(cache: TensorCache) -> int:
        cache.put(transfer.model_id, arch, module.state_dict(), score=score, parent=transfer.parent,
                  layer_map=layer_map)
        worker.jobs += 1
        return worker.jobs   # read under the lock: another thread's put may follow at once

    t0 = time.perf_counter()
    jobs = guarded(worker, transfer, "put", None, put)
    transfer.seconds += time.perf_counter() - t0
    return worker.jobs if jobs is None else jobs


def guarded(worker: WorkerCache, transfer: Transfer, what: str, default: T, call: Callable[[TensorCache], T]) -> T:
    """``call(cache)`` under the worker's lock and guard, or ``default`` when it raises or the process has no cache:
    counted, noted in ``transfer.error`` and warned about once per kind (an unopened cache was warned about
    once, when it was tried)."""
    def run() -> T:
        if worker.cache is None:
            raise Unopened(worker.failure)
        return call(worker.cache)

    def note(failure: str) -> None:
        transfer.error = "; ".join(filter(None, [transfer.error, failure]))

    with worker.lock:
        return worker.guard(what, default, run, f"model {transfer.model_id}", note)
