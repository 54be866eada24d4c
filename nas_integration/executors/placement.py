"""Placement: which worker runs a child, and what running it there bought; the one owner of placement for
every executor that places (simulated, process, MPI).

Each worker keeps the models it trained or fetched in its own memory tier. Placement knows what that tier
holds from what the worker last reported: after each job a real worker (process, MPI) sends the model ids
its process-local tiers hold (``TensorCache.local_models``) with its result; simulated workers, which share
one cache, report what their executor models instead (``executors.simulated.ModelledMemory``).

Without ``Locality`` settings a child goes to the lowest-numbered idle worker and nothing is counted. With
them, every transfer is counted as served from the worker's own memory or from a shared tier (LMDB/Redis:
bytes that move between nodes); real workers' split is the bytes their own process-local tiers served,
simulated workers' split is judged by the modelled report. With a ``max_wait`` a child also goes to an idle
worker holding its donor (the model the cache would serve it, ``TensorCache.best_donor``); failing that it
is reserved for a busy holder expected to finish within ``max_wait`` seconds (the child waits, the free
workers take other children); otherwise it runs anywhere. Waits and workers' idle time are counted on the
executor's clock (wall seconds for real workers, simulated seconds for simulated ones), which is injected.
"""
from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tensorcache.evolution import Candidate

if TYPE_CHECKING:
    from tensorcache.trace import TraceRecord

LOCAL_TIERS = ("device", "memory")  # tiers private to one worker process; LMDB and Redis are shared


@dataclass(frozen=True)
class Locality:
    """Placement's settings: count where transfers are served from; with ``max_wait`` (seconds, >= 0) also
    place each child near its donor, waiting at most that long for a busy holder."""

    max_wait: float | None = None

    def __post_init__(self) -> None:
        if self.max_wait is not None and self.max_wait < 0:
            raise ValueError(f"locality wait must be >= 0 seconds, got {self.max_wait}")

    @property
    def enabled(self) -> bool:
        """Children are placed near their donors."""
        return self.max_wait is not None


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


class Placement:
    """Chooses workers for children, keeps the children reserved for busy workers and what each worker last
    reported holding, and counts what placement bought (``LocalityStats``)."""

    def __init__(self, locality: Locality | None, clock: Callable[[], float],
                 donor: Callable[[Candidate], str | None] | None = None) -> None:
        """``donor(child)`` names the model the cache would serve the child now (None: placement ignores donors)."""
        self.locality = locality
        self.clock = clock
        self.stats = LocalityStats()
        self._donor = donor if locality is not None and locality.enabled else None
        self._held: dict[int, Collection[str]] = {}  # worker -> the models its last report listed
        self._reserved: dict[int, tuple[Candidate, float]] = {}  # worker -> (child waiting for it, since)
        self._idle_since: dict[int, float] = {}

    def place(self, candidate: Candidate, idle: list[int], busy_until: dict[int, float]) -> int | None:
        """The idle worker to start ``candidate`` on now, or None when it was reserved for a busy worker."""
        donor = self._donor(candidate) if self._donor is not None else None
        holders = [] if donor is None else sorted(w for w, held in self._held.items() if donor in held)
        idle_holders = [w for w in holders if w in set(idle)]
        if idle_holders:
            self.stats.placed_on_holder += 1
            return min(idle_holders)
        now = self.clock()
        max_wait = self.locality.max_wait if self.locality is not None else None
        soon = sorted((busy_until[w], w) for w in holders if w in busy_until and w not in self._reserved
                      and max_wait is not None and busy_until[w] - now <= max_wait)
        if soon:
            self.stats.reserved += 1
            self._reserved[soon[0][1]] = (candidate, now)
            return None
        return min(idle)

    def idle(self, worker: int) -> None:
        """``worker`` is idle from now on (until ``started``)."""
        self._idle_since[worker] = self.clock()

    def started(self, worker: int) -> None:
        """``worker`` took a job: its idle time ends."""
        now = self.clock()
        self.stats.idle_s += now - self._idle_since.pop(worker, now)

    def finished(self, worker: int, record: TraceRecord, held: Collection[str], reported: bool) -> None:
        """Count ``worker``'s transfer for ``record`` as local or shared, then take ``held``, its report of
        the models it holds now. ``reported``: the record's tier bytes come from the worker's own cache;
        otherwise (simulated workers, which share one cache) the worker's previous report is taken at its word."""
        if self.locality is None:
            return
        served = record.bytes_served
        if record.donor_id is not None and served:
            expected = record.donor_id in self._held.get(worker, ())
            self.stats.expected_local_hits += expected
            if reported:
                local = sum(record.tier_bytes.get(tier, 0) for tier in LOCAL_TIERS)
            else:
                local = served if expected else 0
            if local >= served:
                self.stats.local_hits += 1
            else:
                self.stats.remote_hits += 1
            self.stats.local_bytes += local
            self.stats.remote_bytes += served - local
        self._held[worker] = held

    def restarted(self, worker: int) -> None:
        """``worker`` was replaced by a fresh process: it holds nothing until it reports."""
        self._held.pop(worker, None)

    def freed(self, worker: int) -> Candidate | None:
        """``worker`` is free: the child reserved for it (start it now), or None (it is idle from now)."""
        reserved = self._reserved.pop(worker, None)
        if reserved is None:
            self.idle(worker)
            return None
        self.stats.wait_s += self.clock() - reserved[1]
        return reserved[0]

    def abandon(self, worker: int) -> Candidate | None:
        """``worker`` is gone: the child that was waiting for it, if any (to be reported as failed)."""
        reserved = self._reserved.pop(worker, None)
        return None if reserved is None else reserved[0]

    def summary(self) -> dict[str, Any] | None:
        """The counters with the settings, or None without ``Locality`` settings."""
        if self.locality is None:
            return None
        return {"enabled": self.locality.enabled, "max_wait_s": self.locality.max_wait or 0.0, **self.stats.summary()}
