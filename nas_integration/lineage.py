"""How much training each model of a search carries: its own plus what it inherited through the cache.

A warm-started child inherits its donor's whole training (the donor's own epochs and seconds plus what the
donor inherited), so a lineage of warm starts accumulates training that a cold-started child of the same
architecture never gets. The search sets each record's ``inherited_epochs`` and ``inherited_seconds`` from
this account, which makes score inflation by inherited training visible in the trace.
"""
from __future__ import annotations

from tensorcache.trace import TraceRecord

__all__ = ["Lineage"]


class Lineage:
    """Total training (own + inherited) of every finished model, by model id."""

    def __init__(self) -> None:
        self.totals: dict[str, tuple[float, float]] = {}  # model id -> (epochs, seconds) behind its weights
        self.unknown = 0  # records whose donor had not reached the search yet (inherited left None)

    def add(self, record: TraceRecord) -> None:
        """Fill in ``record``'s inherited training from its donor's total, then remember its own total."""
        own = (record.epochs or 0.0, record.train_s)
        if record.donor_id is None:
            record.inherited_epochs, record.inherited_seconds = 0.0, 0.0
        elif record.donor_id in self.totals:
            record.inherited_epochs, record.inherited_seconds = self.totals[record.donor_id]
        else:
            self.unknown += 1
        inherited = (record.inherited_epochs or 0.0, record.inherited_seconds or 0.0)
        self.totals[record.model_id] = (own[0] + inherited[0], own[1] + inherited[1])
