"""Locality-aware placement: run a child on the worker whose memory tier already holds its donor.

Each worker keeps the models it trained or fetched in its own memory tier. The scheduler knows what that
tier holds from what the worker last reported: after each job a real worker (process, MPI) sends the model
ids its process-local tiers hold (``TensorCache.local_models``) with its result; simulated workers, which
share one cache, report what their executor models instead (``executors.simulated.ModelledMemory``). A
child is sent to an idle worker holding its donor (the model the cache would serve it,
``TensorCache.best_donor``); failing that it is reserved for a busy holder expected to finish within
``max_wait`` seconds (the child waits, the free workers take other children); otherwise it runs anywhere.
The tracker counts what that buys: transfer bytes served from the worker's own memory versus fetched from a
shared tier (LMDB/Redis: bytes that move between nodes), and what it costs: time children spent waiting for
their holder. Real workers' split is the bytes their own process-local tiers served; simulated workers'
split is judged by the modelled report.
"""
from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

LOCAL_TIERS = ("device", "memory")  # tiers private to one worker process; LMDB and Redis are shared


@dataclass
class LocalityStats:
    """What placement bought and cost: transfers served locally or from a shared tier, waits, idle time."""

    local_bytes: int = 0
    remote_bytes: int = 0
    local_hits: int = 0  # hits served wholly from the worker's own memory tier
    remote_hits: int = 0
    expected_local_hits: int = 0  # hits whose donor the worker's last report listed (placement's guess)
    placed_on_holder: int = 0
    reserved: int = 0
    wait_s: float = 0.0
    idle_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        hits = self.local_hits + self.remote_hits
        moved = self.local_bytes + self.remote_bytes
        return {**self.__dict__, "local_hit_share": self.local_hits / hits if hits else 0.0,
                "local_byte_share": self.local_bytes / moved if moved else 0.0}


class LocalityTracker:
    """The models each worker last reported holding, the placement choice, and the counters above."""

    def __init__(self, workers: int, max_wait: float | None) -> None:
        if max_wait is not None and max_wait < 0:
            raise ValueError(f"locality wait must be >= 0 seconds, got {max_wait}")
        self.enabled = max_wait is not None
        self.max_wait = max_wait or 0.0
        self.held: list[Collection[str]] = [frozenset() for _ in range(workers)]
        self.stats = LocalityStats()

    def holders(self, model_id: str | None) -> list[int]:
        """The workers whose last report lists ``model_id``."""
        if model_id is None:
            return []
        return [w for w, held in enumerate(self.held) if model_id in held]

    def place(self, donor_id: str | None, idle: list[int], busy_until: dict[int, float],
              reserved: set[int], now: float) -> tuple[int, float | None]:
        """(worker, None) to start now, or (worker, start time) to reserve a busy holder."""
        holders = self.holders(donor_id) if self.enabled else []
        idle_holders = [w for w in holders if w in set(idle)]
        if idle_holders:
            self.stats.placed_on_holder += 1
            return min(idle_holders), None
        soon = sorted((busy_until[w], w) for w in holders
                      if w in busy_until and w not in reserved and busy_until[w] - now <= self.max_wait)
        if soon:
            self.stats.reserved += 1
            return soon[0][1], soon[0][0]
        return min(idle), None

    def waited(self, seconds: float) -> None:
        """A reserved child started on its holder ``seconds`` after it was placed."""
        self.stats.wait_s += seconds

    def finished(self, worker: int, donor_id: str | None, bytes_served: int, tier_bytes: dict[str, int] | None,
                 held: Collection[str]) -> None:
        """Account one evaluation's transfer as local or shared, then take ``held``, the worker's report of
        the models it holds now.

        ``tier_bytes`` is what the worker's own cache reports each tier served (``TraceRecord.tier_bytes``);
        None (simulated workers, which share one cache) takes the worker's previous report's word for it.
        """
        if donor_id is not None and bytes_served:
            expected = donor_id in self.held[worker]
            self.stats.expected_local_hits += expected
            if tier_bytes is None:
                local = bytes_served if expected else 0
            else:
                local = sum(tier_bytes.get(tier, 0) for tier in LOCAL_TIERS)
            if local >= bytes_served:
                self.stats.local_hits += 1
            else:
                self.stats.remote_hits += 1
            self.stats.local_bytes += local
            self.stats.remote_bytes += bytes_served - local
        self.held[worker] = held
