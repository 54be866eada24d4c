"""The tier stack: tiers fastest first, each with its own policy; admits entries, evicting and demoting
iteratively (a work list, no recursion), and says what it did.

An entry evicted from a tier moves down to the next tier that lacks it; its bytes are read before it is
released, so a cascade of evictions can never take the copy a pending admission reads from. Residency is
the catalog's: the stack tells it each hold and release, and tells the tier's policy the same.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .catalog import Catalog, Entry, ModelRecord
from .events import Inserted, PolicyEvent, Removed
from .policies import Policy
from .tiers import Tier
from .tiers.books import WRONG_LENGTH
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

    def admit(self, i: int, record: ModelRecord, indices: Sequence[int], blobs: Mapping[bytes, Any],
              moves: Moves) -> bool:
        """Hold layers ``indices`` of ``record`` in tier ``i`` in one transaction (``blobs``: their payloads by
        digest), evicting the policy's victims while there is no room and demoting them; True if tier ``i``
        holds them all now. A process-local tier takes them one by one, in order, as replay does; so does a
        shared one when they cannot fit together."""
        work = deque([(i, record, tuple(indices), blobs, True)])
        admitted = True
        while work:
            t, rec, group, payloads, asked = work.popleft()
            tier = self.slots[t].tier
            if len(group) > 1 and (not tier.shares_books or sum(rec.layers[j].blob_bytes for j in group) > tier.capacity):
                work.extendleft((t, rec, (j,), payloads, asked) for j in reversed(group))
                continue
            written = self._place(t, rec, group, payloads, work, moves)
            if asked:
                admitted = admitted and written is not None
                moves.written += written or 0
            elif written is not None:
                moves.demotions += 1
        return admitted

    def _place(self, t: int, record: ModelRecord, group: tuple[int, ...], blobs: Mapping[bytes, Any], work: deque,
               moves: Moves) -> int | None:
        slot = self.slots[t]
        if len(group) == 1 and record.layers[group[0]].blob_bytes > slot.tier.capacity:
            moves.refused.append((slot.tier.name, "too_large"))
            return None
        entries = [(j, record.layers[j].digests) for j in group]
        raw = record.encoded if slot.tier.shares_books else b""  # only a shared tier keeps records
        while True:
            admission = slot.tier.hold_many(raw, record.model_id, entries, blobs, self.origin)
            if admission.held:
                break
            if admission.reason != "no_room" or not len(slot.policy):
                moves.refused.append((slot.tier.name, admission.reason or "dropped"))
                return None
            self._make_room(t, admission.short, moves, work)
        for j in group:
            self.note(t, record, j)
        return admission.written

    def note(self, t: int, record: ModelRecord, index: int) -> None:
        """Tier ``t``'s store holds layer ``index`` of ``record`` now: record it, and tell the tier's policy
        if it is new to the catalog or to the policy."""
        slot, entry = self.slots[t], (record.model_id, index)
        if self.catalog.hold(record, index, t) or entry not in slot.policy:
            layer = record.layers[index]
            slot.policy.handle(Inserted(entry, layer.blob_bytes, record.model_id, layer.depends_on))

    def forget(self, t: int, entry: Entry) -> None:
        """Tier ``t``'s store no longer holds ``entry`` (another process released it): forget it here and
        tell the tier's policy."""
        if self._unhold(t, entry):
            self.slots[t].policy.handle(Removed(entry))

    def tell(self, event: PolicyEvent) -> None:
        """Give every tier's policy one event."""
        for slot in self.slots:
            slot.policy.handle(event)

    def _make_room(self, t: int, short: int, moves: Moves, work: deque) -> None:
        """Evict the policy's victims, in its order, until their bytes cover ``short`` (at least one), all
        released in one transaction. Shared payloads may free less; the caller then asks again."""
        slot = self.slots[t]
        victims, freed = [], 0
        while len(slot.policy) and (not victims or freed < short):
            entry = slot.policy.victim()
            slot.policy.handle(Removed(entry))
            victims.append(entry)
            record = self.catalog.record(entry[0])
            if record is None:
                break  # its size is unknown: release what is chosen and let the caller ask again
            freed += record.layers[entry[1]].blob_bytes
        self._release(t, victims, "capacity", moves, work)

    def evict(self, t: int, entry: Entry, reason: str, moves: Moves, work: deque | None = None) -> None:
        """Remove ``entry`` from tier ``t``; with a ``work`` list, queue its move to the next tier down."""
        self.slots[t].policy.handle(Removed(entry))
        self._release(t, [entry], reason, moves, work)

    def _release(self, t: int, entries: list[Entry], reason: str, moves: Moves, work: deque | None) -> None:
        """Release ``entries`` (out of the policy already) from tier ``t`` in one transaction, queueing each
        one's move down first when there is a ``work`` list (its bytes are read before they go)."""
        slot = self.slots[t]
        for entry in entries:
            moves.evicted.append((slot.tier.name, entry, reason))
            record = self.catalog.record(entry[0])
            if work is not None and record is not None and t + 1 < len(self.slots) \
                    and not self.catalog.holds(entry, t + 1):
                refs = list(record.layers[entry[1]].tensors.values())
                got = slot.tier.read([(r.digest, r.blob_size) for r in refs])
                if all(g is not None and g is not WRONG_LENGTH for g in got):
                    work.append((t + 1, record, (entry[1],), {r.digest: g for r, g in zip(refs, got)}, False))
        slot.tier.release_many(entries, self.origin)
        for entry in entries:
            self._unhold(t, entry)

    def _unhold(self, t: int, entry: Entry) -> bool:
        """Drop ``entry``'s residency in tier ``t`` and its decoded layer; True if the catalog had it there."""
        slot = self.slots[t]
        if slot.decoded is not None:
            slot.decoded.pop(entry, None)
        return self.catalog.release(entry, t)
