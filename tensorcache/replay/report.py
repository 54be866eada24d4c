"""What a replay reports: each lookup's donor and layers, the counters, and the ratios built on them.

Bytes served are split into transfer and revisit bytes by ``tensorcache.metrics`` (the one rule); the
``*_unbounded`` counters are what the workload's unbounded reference served on the same stream.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..metrics import ratio


class Served(NamedTuple):
    """What one lookup got: the donor (None on a miss) and its [(child layer, donor layer)] pairs."""

    model_id: str
    donor: str | None
    pairs: tuple[tuple[int, int], ...]
    nbytes: int
    value: float = 0.0  # training seconds the served layers are worth to the child (``workload.layer_values``)


@dataclass
class ReplayResult:
    """Counters of one replay; ratios are properties (NaN when their denominator is 0). ``hits`` counts
    lookups that served a layer depending on an arch position, ``lookups_served`` those that served any."""

    policy: str
    capacity_bytes: int
    lookups: int = 0
    hits: int = 0
    lookups_served: int = 0
    bytes_served: int = 0
    bytes_unbounded: int = 0
    transfer_bytes_served: int = 0
    transfer_bytes_unbounded: int = 0
    revisit_bytes_served: int = 0
    revisit_bytes_unbounded: int = 0
    transfer_value_served: float = 0.0  # training seconds served layers are worth (``workload.layer_values``)
    transfer_value_unbounded: float = 0.0
    revisit_value_served: float = 0.0
    revisit_value_unbounded: float = 0.0
    bytes_requested: int = 0
    entries_served: int = 0
    entries_unbounded: int = 0
    evictions: int = 0
    max_used_bytes: int = 0
    served: list[Served] = field(default_factory=list, repr=False)

    def against(self, reference: ReplayResult) -> ReplayResult:
        """Set the ``*_unbounded`` counters from ``reference`` (the unbounded replay of the same stream)."""
        self.bytes_unbounded = reference.bytes_served
        self.transfer_bytes_unbounded = reference.transfer_bytes_served
        self.revisit_bytes_unbounded = reference.revisit_bytes_served
        self.entries_unbounded = reference.entries_served
        self.transfer_value_unbounded = reference.transfer_value_served
        self.revisit_value_unbounded = reference.revisit_value_served
        return self

    @property
    def transfer_yield(self) -> float:
        """The headline: bytes served to children of a new architecture / what an unbounded cache serves them."""
        return ratio(self.transfer_bytes_served, self.transfer_bytes_unbounded)

    @property
    def revisit_yield(self) -> float:
        """Bytes served to revisit children / what an unbounded cache serves them."""
        return ratio(self.revisit_bytes_served, self.revisit_bytes_unbounded)

    @property
    def value_served(self) -> float:
        """Training seconds all served layers are worth to their children (transfers and revisits)."""
        return self.transfer_value_served + self.revisit_value_served

    @property
    def transfer_value_yield(self) -> float:
        """Like ``transfer_yield``, each served layer weighed by its training seconds rather than its bytes."""
        return ratio(self.transfer_value_served, self.transfer_value_unbounded)

    @property
    def revisit_value_yield(self) -> float:
        """Like ``revisit_yield``, weighed by training seconds."""
        return ratio(self.revisit_value_served, self.revisit_value_unbounded)

    @property
    def total_yield(self) -> float:
        """All bytes served / all bytes an unbounded cache serves on the same stream."""
        return ratio(self.bytes_served, self.bytes_unbounded)

    @property
    def hit_ratio(self) -> float:
        """Lookups that served a layer depending on an arch position / lookups."""
        return ratio(self.hits, self.lookups)

    @property
    def byte_hit_ratio(self) -> float:
        """Bytes served / bytes of every child's full model."""
        return ratio(self.bytes_served, self.bytes_requested)

    @property
    def object_hit_ratio(self) -> float:
        """Entries served / entries requested (those an unbounded cache serves)."""
        return ratio(self.entries_served, self.entries_unbounded)

    def metrics(self) -> dict[str, Any]:
        """Flat dict for CSV rows and JSON."""
        out = {k: v for k, v in self.__dict__.items() if k != "served"}
        out.update(transfer_yield=self.transfer_yield, revisit_yield=self.revisit_yield,
                   total_yield=self.total_yield, value_served=self.value_served,
                   transfer_value_yield=self.transfer_value_yield, revisit_value_yield=self.revisit_value_yield, hit_ratio=self.hit_ratio, byte_hit_ratio=self.byte_hit_ratio,
                   object_hit_ratio=self.object_hit_ratio)
        return out
