"""The search's running totals (evaluations, hits, revisits, bytes served, time, best record) for its summary."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tensorcache.metrics import is_hit
from tensorcache.trace import TraceRecord

__all__ = ["OnRecord", "Tally"]


@dataclass
class Tally:
    """Running totals for the summary, fed one trace record at a time (hits and revisits as
    ``tensorcache.metrics`` defines them)."""

    mode: str = "prefix"  # the transfer mode, which decides which served layers a hit counts
    evaluations: int = 0
    hits: int = 0
    revisits: int = 0
    transfer_bytes: int = 0  # every byte served
    revisit_bytes: int = 0  # of which served to revisits
    transfer_layers: int = 0
    cache_s: float = 0.0
    train_s: float = 0.0
    best: dict[str, Any] | None = None  # the best record so far, as its trace line

    def add(self, record: TraceRecord) -> None:
        values = record.to_dict()
        self.evaluations += 1
        self.hits += is_hit(values, self.mode)
        self.revisits += bool(record.revisit)
        self.transfer_bytes += record.transfer_bytes
        self.revisit_bytes += record.transfer_bytes if record.revisit else 0
        self.transfer_layers += record.transfer_layers
        self.cache_s += record.cache_s
        self.train_s += record.train_s
        if self.best is None or record.score > self.best["score"]:
            self.best = values

    @property
    def hit_ratio(self) -> float:
        return self.hits / self.evaluations if self.evaluations else 0.0


OnRecord = Callable[[Tally, int], None]  # run_search calls it after each record: (tally so far, dropped evaluations)
