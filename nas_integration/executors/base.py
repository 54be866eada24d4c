"""The executor interface: where evaluations run. The search loop submits candidates and waits for outcomes."""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tensorcache.events import ModelDescribed
from tensorcache.evolution import Candidate

if TYPE_CHECKING:
    from tensorcache.trace import TraceRecord

    from .placement import Placement


@dataclass
class Outcome:
    """A finished job: its trace record, or why it failed (worker died, timed out, raised)."""

    candidate: Candidate
    worker: int
    result: TraceRecord | None = None
    error: str | None = None


class Executor(ABC):
    """Runs candidates on ``workers`` workers; ``next_outcome`` blocks until one job ends."""

    workers: int
    clock = "wall"  # "simulated" when times in outcomes are simulated seconds
    placement: Placement | None = None

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

    @abstractmethod
    def describe(self, event: ModelDescribed) -> None:
        """A child was issued: tell the caches' policies it is in flight."""

    def now(self) -> float:
        """Seconds since the executor started, on its clock."""
        return time.time() - self.t0

    def locality_summary(self) -> dict[str, Any] | None:
        """Local versus shared-tier transfers, waits and idle time, where the executor places children."""
        return None if self.placement is None else self.placement.summary()

    def close(self) -> list[dict[str, Any]]:
        """Stop the workers; return the stats of every cache that reported."""
        return []

    def release(self) -> None:
        """Called after the outputs are written; lets MPI abandon ranks that never answered."""


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
