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
    new_hits: int = 0  # hits among children of an architecture not evaluated before
    new_bytes: int = 0  # layer bytes of those children (what a transfer to them could serve at most)
    transfer_layers: int = 0
    cache_s: float = 0.0
    train_s: float = 0.0
    best: dict[str, Any] | None = None  # the best record so far, as its trace line
    controls: str | None = None  # the fidelity check's line so far (run_search --control)

    def add(self, record: TraceRecord) -> None:
        values = record.to_dict()
        self.evaluations += 1
        self.hits += is_hit(values, self.mode)
        self.revisits += bool(record.revisit)
        if not record.revisit:
            self.new_hits += is_hit(values, self.mode)
            self.new_bytes += sum(record.layer_bytes)
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

    @property
    def new(self) -> int:
        """Children of an architecture not evaluated before."""
        return self.evaluations - self.revisits

    @property
    def new_hit_ratio(self) -> float:
        """Share of new architectures that got a layer depending on their arch (the cache's real reach)."""
        return self.new_hits / self.new if self.new else 0.0

    @property
    def new_byte_share(self) -> float:
        """Share of the new architectures' layer bytes that the cache served them."""
        return (self.transfer_bytes - self.revisit_bytes) / self.new_bytes if self.new_bytes else 0.0


OnRecord = Callable[[Tally, int], None]  # run_search calls it after each record: (tally so far, dropped evaluations)
