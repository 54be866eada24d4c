"""Placement: which worker runs a child, shared by every executor that places (simulated, process, MPI).

Without a ``LocalityTracker`` a child goes to the lowest-numbered idle worker. With one, the tracker
chooses (``nas_integration.locality``) from what each worker last reported holding: an idle worker
holding the child's donor, else a busy holder expected to finish soon (the child is reserved for it and
starts when it frees up), else anyone. The placement also accounts the children's waits and the workers'
idle time, on the executor's clock (wall seconds for real workers, simulated seconds for simulated ones),
which is injected.
"""
from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

from tensorcache.evolution import Candidate

from ..locality import LocalityTracker

if TYPE_CHECKING:
    from tensorcache.trace import TraceRecord


class Placement:
    """Chooses workers for children and keeps the children reserved for busy workers."""

    def __init__(self, tracker: LocalityTracker | None, clock: Callable[[], float],
                 donor: Callable[[Candidate], str | None] | None = None) -> None:
        """``donor(child)`` names the model the cache would serve the child now (None: placement ignores donors)."""
        self.tracker = tracker
        self.clock = clock
        self._donor = donor
        self._reserved: dict[int, tuple[Candidate, float]] = {}  # worker -> (child waiting for it, since)
        self._idle_since: dict[int, float] = {}

    def place(self, candidate: Candidate, idle: list[int], busy_until: dict[int, float]) -> int | None:
        """The idle worker to start ``candidate`` on now, or None when it was reserved for a busy worker."""
        if self.tracker is None:
            return min(idle)
        donor = self._donor(candidate) if self._donor is not None and self.tracker.enabled else None
        now = self.clock()
        worker, start_at = self.tracker.place(donor, idle, busy_until, set(self._reserved), now)
        if start_at is None:
            return worker
        self._reserved[worker] = (candidate, now)
        return None

    def idle(self, worker: int) -> None:
        """``worker`` is idle from now on (until ``started``)."""
        self._idle_since[worker] = self.clock()

    def started(self, worker: int) -> None:
        """``worker`` took a job: its idle time ends."""
        if self.tracker is not None:
            now = self.clock()
            self.tracker.stats.idle_s += now - self._idle_since.pop(worker, now)

    def finished(self, worker: int, record: TraceRecord, held: Collection[str], reported: bool) -> None:
        """``worker`` finished ``record`` and now holds the models ``held`` (its report); ``reported``: the
        record's tier bytes come from the worker's own cache."""
        if self.tracker is not None:
            self.tracker.finished(worker, record.donor_id, record.bytes_served,
                                  record.tier_bytes if reported else None, held)

    def restarted(self, worker: int) -> None:
        """``worker`` was replaced by a fresh process: it holds nothing until it reports."""
        if self.tracker is not None:
            self.tracker.held[worker] = frozenset()

    def freed(self, worker: int) -> Candidate | None:
        """``worker`` is free: the child reserved for it (start it now), or None (it is idle from now)."""
        reserved = self._reserved.pop(worker, None)
        if reserved is None:
            self.idle(worker)
            return None
        self.tracker.waited(self.clock() - reserved[1])
        return reserved[0]

    def abandon(self, worker: int) -> Candidate | None:
        """``worker`` is gone: the child that was waiting for it, if any (to be reported as failed)."""
        reserved = self._reserved.pop(worker, None)
        return None if reserved is None else reserved[0]

    def summary(self) -> dict[str, Any] | None:
        """The tracker's counters with its settings, or None without a tracker."""
        if self.tracker is None:
            return None
        return {"enabled": self.tracker.enabled, "max_wait_s": self.tracker.max_wait, **self.tracker.stats.summary()}
