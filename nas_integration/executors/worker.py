"""The worker loop of the process and MPI executors: set up, then evaluate jobs until told to stop.

Messages to a worker: ``("job", candidate, news, report)`` or ``("stop",)``. Replies: ``("ready", None)``
once set up, ``("fatal", traceback)`` if it could not set up, ``("done", Done)`` (the record and, when the
job asked for a ``report``, what the worker's own tiers hold after it) or ``("error", traceback)`` per
job, and ``("stats", cache stats)`` when stopped.
"""
from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tensorcache import TensorCache
from tensorcache.config import CacheConfig
from tensorcache.trace import TraceRecord

from tensorcache.collector import fewer_full_collections
from ..evaluators import Evaluator
from .guard import SearchCache


@dataclass
class Done:
    """A finished job's record, and the models the worker's process-local tiers hold after it (its report
    to placement, ``TensorCache.local_models``; empty without a cache or when no report was asked for)."""

    record: TraceRecord
    held: frozenset[str]


def run_jobs(recv: Callable[[], Any], send: Callable[[Any], None], evaluator: Evaluator,
             cache_config: CacheConfig | None) -> None:
    """Answer ``recv()``'s messages through ``send`` (see the module doc) until a stop."""
    try:
        evaluator.setup()
        cache = SearchCache(cache_config) if cache_config is not None else None
    except Exception:
        send(("fatal", traceback.format_exc()))
        return
    send(("ready", None))
    try:
        with fewer_full_collections():
            _answer(recv, send, evaluator, cache)
    finally:
        if cache is not None:
            cache.close()


def _answer(recv: Callable[[], Any], send: Callable[[Any], None], evaluator: Evaluator,
            cache: TensorCache | None) -> None:
    """Evaluate jobs until a stop, which is answered with the cache's stats."""
    while True:
        message = recv()
        if message[0] == "stop":
            send(("stats", cache.stats() if cache is not None else {}))
            return
        _, candidate, news, report = message
        if cache is not None:
            news.tell(cache)
        try:
            record = evaluator.evaluate(candidate, cache)
            held = cache.local_models() if report and cache is not None else frozenset()
            send(("done", Done(record, held)))
        except Exception:
            send(("error", traceback.format_exc()))
