"""Locality-aware placement: run a child on the worker whose memory tier already holds its donor.

Each worker keeps the models it trained or fetched in its own memory tier. The scheduler knows that tier
from what its worker reports after each job (the model it put, the donor it was served and which tiers
served it); what the tier has evicted since is modelled by the library's own LRU policy over model ids
within the worker's byte budget. A child is sent to an idle worker holding its donor (the
model the cache would serve it, ``TensorCache.best_donor``); failing that it is reserved for a busy holder
expected to finish within ``max_wait`` seconds (the child waits, the free workers take other children);
otherwise it runs anywhere. The tracker counts what that buys: transfer bytes served from the worker's own
memory versus fetched from a shared tier (LMDB/Redis: bytes that move between nodes), and what it costs:
time children spent waiting for their holder. Simulated workers share one real cache, so their split is
judged by the model; real workers (process, MPI) report the bytes their own process-local tiers served.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tensorcache.policies import LRU

LOCAL_TIERS = ("device", "memory")  # tiers private to one worker process; LMDB and Redis are shared


@dataclass
class LocalityStats:
    local_bytes: int = 0
    remote_bytes: int = 0
    local_hits: int = 0  # hits served wholly from the worker's own memory tier
    remote_hits: int = 0
    modelled_local_hits: int = 0  # hits the memory model expected to be local (placement's guess)
    placed_on_holder: int = 0
    reserved: int = 0
    wait_s: float = 0.0
    idle_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        hits = self.local_hits + self.remote_hits
        moved = self.local_bytes + self.remote_bytes
        return {**self.__dict__, "local_hit_share": self.local_hits / hits if hits else 0.0,
                "local_byte_share": self.local_bytes / moved if moved else 0.0}


class WorkerMemory:
    """Model ids one worker's memory tier holds as reported, within its byte budget (LRU policy evicts)."""

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
            self._order.on_remove(victim)
            self.used -= self._sizes.pop(victim)
        self._order.on_insert(model_id, nbytes, model_id)
        self._sizes[model_id] = nbytes
        self.used += nbytes

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._sizes


class LocalityTracker:
    """Per-worker memory contents, placement choice and the counters above."""

    def __init__(self, workers: int, worker_memory: int, max_wait: float | None) -> None:
        if max_wait is not None and max_wait < 0:
            raise ValueError(f"locality wait must be >= 0 seconds, got {max_wait}")
        self.enabled = max_wait is not None
        self.max_wait = max_wait or 0.0
        self.memories = [WorkerMemory(worker_memory) for _ in range(workers)]
        self.model_bytes: dict[str, int] = {}
        self.stats = LocalityStats()

    def holders(self, model_id: str | None) -> list[int]:
        if model_id is None:
            return []
        return [w for w, mem in enumerate(self.memories) if model_id in mem]

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

    def finished(self, worker: int, model_id: str, nbytes: int, donor_id: str | None, transfer_bytes: int,
                 tier_bytes: dict[str, int] | None = None) -> None:
        """Account one evaluation: where its transfer came from, then what the worker now holds.

        ``tier_bytes`` is what the worker's cache reports each tier served (``TraceRecord.tier_bytes``); None
        (simulated workers, which share one cache) takes the modelled memory's word for it.
        """
        mem = self.memories[worker]
        if donor_id is not None and transfer_bytes:
            modelled = donor_id in mem
            self.stats.modelled_local_hits += modelled
            if tier_bytes is None:
                local = transfer_bytes if modelled else 0
            else:
                local = sum(tier_bytes.get(tier, 0) for tier in LOCAL_TIERS)
            if local >= transfer_bytes:
                self.stats.local_hits += 1
            else:
                self.stats.remote_hits += 1
            self.stats.local_bytes += local
            self.stats.remote_bytes += transfer_bytes - local
            mem.touch(donor_id, self.model_bytes.get(donor_id, transfer_bytes))
        self.model_bytes[model_id] = nbytes
        mem.touch(model_id, nbytes)
