"""What a served byte counts as, defined once for replay, the search summary and trace analyses.

A child is a *revisit* when its architecture was evaluated before (an earlier-issued evaluation had the
same arch): bytes served to it are *revisit* bytes, which a search that reuses the earlier score never
needs. Bytes served to any other child are *transfer* bytes, the cache's real saving; the headline
metric is the transfer yield (transfer bytes served / transfer bytes an unbounded cache serves), with the
revisit yield beside it. A lookup is a *hit* only when it serves a layer that depends on at least one
arch position: a stem or head that every model shares says nothing about the cache.

The names say which bytes: ``bytes_served`` is every byte served (a trace record's field, the summary's
and replay's total), ``transfer_bytes_served`` those served to new architectures and
``revisit_bytes_served`` those served to revisits, in the search summary, ``Counts`` and replay alike.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # trace.py reads revisits by this module's rule: the record type is only named here
    from .trace import TraceRecord


def positional(deps: Iterable[Sequence[int]]) -> bool:
    """True when one of the served layers (given by their dependency positions) depends on a position."""
    return any(len(d) > 0 for d in deps)


def mark_revisits(evaluations: Iterable[tuple[str, Sequence[int] | None, float, bool | None]]) -> dict[str, bool]:
    """model_id -> revisit, from (model_id, arch, t_start, recorded flag) in trace order: a recorded flag
    wins; else the arch was seen in an evaluation that started earlier (ties: earlier in the trace)."""
    items = list(evaluations)
    order = sorted(range(len(items)), key=lambda n: (items[n][2], n))
    seen: set[tuple[int, ...]] = set()
    out: dict[str, bool] = {}
    for n in order:
        model_id, arch, _, flag = items[n]
        key = None if arch is None else tuple(arch)
        out[model_id] = bool(flag) if flag is not None else (key is not None and key in seen)
        if key is not None:
            seen.add(key)
    return out


def json_safe(value: Any) -> Any:
    """``value`` with every NaN or infinite float (a ratio without a denominator) as None, so that
    ``json.dumps(..., allow_nan=False)`` writes valid JSON; dicts and lists are walked."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def ratio(a: float, b: float) -> float:
    """a / b, NaN when b is 0."""
    return a / b if b else math.nan


@dataclass
class Counts:
    """A search's counts, each defined once: ``add`` takes one trace record (the running search's summary,
    ``nas_integration.tally``), ``summarize_records`` a finished trace (``tensorcache analyze``). Ratios
    without a denominator are NaN."""

    mode: str = "prefix"  # the transfer mode, which decides which served layers make a hit (``is_hit``)
    evaluations: int = 0
    revisits: int = 0
    hits: int = 0
    new_hits: int = 0  # hits among new architectures (children of an architecture not evaluated before)
    bytes_served: int = 0  # every byte served, revisits included
    revisit_bytes_served: int = 0  # of which served to revisits
    new_arch_bytes: int = 0  # layer bytes of the new architectures (the most a transfer could serve them)
    layers_served: int = 0

    def add(self, record: TraceRecord) -> None:
        """Count one evaluation (its ``revisit`` set, as ``read_records`` and the running search set it)."""
        hit = is_hit(record, self.mode)
        self.evaluations += 1
        self.hits += hit
        self.bytes_served += record.bytes_served
        self.layers_served += record.layers_served
        if record.revisit:
            self.revisits += 1
            self.revisit_bytes_served += record.bytes_served
        else:
            self.new_hits += hit
            self.new_arch_bytes += sum(record.layer_bytes)

    @property
    def new(self) -> int:
        """Evaluations of an architecture not evaluated before."""
        return self.evaluations - self.revisits

    @property
    def transfer_bytes_served(self) -> int:
        """Bytes served to new architectures: the cache's real saving."""
        return self.bytes_served - self.revisit_bytes_served

    @property
    def hit_ratio(self) -> float:
        return ratio(self.hits, self.evaluations)

    @property
    def revisit_fraction(self) -> float:
        return ratio(self.revisits, self.evaluations)

    @property
    def new_hit_ratio(self) -> float:
        """Share of new architectures that got a layer depending on their arch (the cache's real reach)."""
        return ratio(self.new_hits, self.new)

    @property
    def new_byte_share(self) -> float:
        """Share of the new architectures' layer bytes that the cache served them."""
        return ratio(self.transfer_bytes_served, self.new_arch_bytes)


def summarize_records(records: Iterable[TraceRecord], mode: str = "prefix") -> Counts:
    """The counts of a finished trace (records as ``trace.read_records`` gives them, revisits marked)."""
    counts = Counts(mode)
    for record in records:
        counts.add(record)
    return counts


def is_hit(record: TraceRecord, mode: str) -> bool:
    """Whether a record's lookup served a layer that depends on a position (``mode``: prefix or compatible):
    prefix mode serves the first ``layers_served`` layers; compatible mode counts a hit only when more layers
    were served than the child has position-free ones (distinct served layers must then include a positional
    one). No recorded dependencies: every layer counts as positional."""
    n, deps = record.layers_served, record.layer_deps
    if n == 0:
        return False
    if deps is None:
        return True
    if mode == "prefix":
        return positional(deps[:n])
    return n > sum(1 for d in deps if not d)
