"""The search's running totals for its summary: the counts ``tensorcache.metrics.Counts`` defines, plus time
and the best record."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tensorcache.metrics import Counts
from tensorcache.trace import TraceRecord

__all__ = ["OnRecord", "Tally"]


@dataclass
class Tally(Counts):
    """Running totals for the summary, fed one trace record at a time."""

    cache_s: float = 0.0
    train_s: float = 0.0
    best: dict[str, Any] | None = None  # the best record so far, as its trace line
    controls: str | None = None  # the fidelity check's line so far (run_search --control)

    def add(self, record: TraceRecord) -> None:
        super().add(record)
        self.cache_s += record.cache_s
        self.train_s += record.train_s
        if self.best is None or record.score > self.best["score"]:
            self.best = record.to_dict()


OnRecord = Callable[[Tally, int], None]  # run_search calls it after each record: (tally so far, dropped evaluations)
