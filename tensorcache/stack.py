"""The tier stack: tiers fastest first, each with its own policy; admits entries, evicting and demoting
iteratively (a work list, no recursion), and says what it did.

An entry evicted from a tier moves down to the next tier that lacks it; its bytes are read before it is
released, so a cascade of evictions can never take the copy a pending admission reads from. Residency is
the catalog's: the stack tells it each hold and release, and tells the tier's policy the same.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .catalog import Catalog, Entry, ModelRecord
from .events import Inserted, Removed
from .policies import Policy
from .tiers import Tier
from .transfer import Layer


@dataclass
class Slot:
    """One tier, its policy, and (for process-local tiers) the decoded layers it holds."""

    tier: Tier
    policy: Policy
    decoded: dict[Entry, Layer] | None = None


@dataclass
class Moves:
    """What the stack did: evictions as (tier name, entry, reason), refusals as (tier name, reason),
    demotions made, and payload bytes written into the first tier asked."""

    evicted: list[tuple[str, Entry, str]] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    demotions: int = 0
    written: int = 0


class TierStack:
    """Tiers fastest first with their policies, over one catalog; ``origin`` names this process in shared logs."""

    def __init__(self, slots: list[Slot], catalog: Catalog, origin: str) -> None:
        self.slots, self.catalog, self.origin = slots, catalog, origin

    def admit(self, i: int, record: ModelRecord, index: int, blobs: Mapping[bytes, Any], moves: Moves) -> bool:
        """Hold layer ``index`` of ``record`` in tier ``i`` (``blobs``: its payloads by digest), evicting the
        policy's victims while there is no room and demoting them; True if tier ``i`` holds it now."""
        work = deque([(i, record, index, blobs)])
        first = True
        admitted = False
        while work:
            t, rec, idx, payloads = work.popleft()
            written = self._place(t, rec, idx, payloads, work, moves)
            if first:
                admitted, moves.written = written is not None, moves.written + (written or 0)
                first = False
            elif written is not None:
                moves.demotions += 1
        return admitted

    def _place(self, t: int, record: ModelRecord, index: int, blobs: Mapping[bytes, Any], work: deque,
               moves: Moves) -> int | None:
        slot = self.slots[t]
        entry = (record.model_id, index)
        layer = record.layers[index]
        size = layer.blob_bytes
        if size > slot.tier.capacity:
            moves.refused.append((slot.tier.name, "too_large"))
            return None
        digests = [ref.digest for ref in layer.tensors.values()]
        raw = record.to_bytes()
        while True:
            admission = slot.tier.hold(raw, record.model_id, index, digests, blobs, self.origin)
            if admission.held:
                break
            if admission.reason != "no_room" or not len(slot.policy):
                moves.refused.append((slot.tier.name, admission.reason or "dropped"))
                return None
            self.evict(t, slot.policy.victim(), "capacity", moves, work)
        if self.catalog.hold(record, index, t) or entry not in slot.policy:
            slot.policy.handle(Inserted(entry, size, record.model_id, layer.depends_on))
        return admission.written

    def evict(self, t: int, entry: Entry, reason: str, moves: Moves, work: deque | None = None) -> None:
        """Remove ``entry`` from tier ``t``; with a ``work`` list, queue its move to the next tier down."""
        slot = self.slots[t]
        slot.policy.handle(Removed(entry))
        moves.evicted.append((slot.tier.name, entry, reason))
        record = self.catalog.record(entry[0])
        if work is not None and record is not None and t + 1 < len(self.slots) \
                and t + 1 not in self.catalog.tiers_of(entry):
            refs = list(record.layers[entry[1]].tensors.values())
            got = slot.tier.read([(r.digest, r.blob_size) for r in refs])
            if all(g is not None for g in got):
                work.append((t + 1, record, entry[1], {r.digest: g for r, g in zip(refs, got)}))
        slot.tier.release(entry[0], entry[1], self.origin)
        self.drop(t, entry)

    def drop(self, t: int, entry: Entry) -> None:
        """Forget that tier ``t`` holds ``entry`` (the store no longer does)."""
        slot = self.slots[t]
        if slot.decoded is not None:
            slot.decoded.pop(entry, None)
        self.catalog.release(entry, t)
