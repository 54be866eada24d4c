"""Following shared tiers: what other processes hold and release in a shared tier (LMDB, Redis), learnt
from the tier's change log read from a cursor kept here, or from a snapshot of its books when the log
cannot tell (on open, and when it was lost, restored, truncated or trimmed past this reader).

What is learnt goes into the stack (catalog residency and the tier's policy); this module reads books
and logs and moves no payload bytes.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

from .catalog import Entry, ModelRecord
from .collector import collector_paused
from .events import ModelDescribed
from .payload import PayloadError
from .stack import TierStack
from .tiers import Tier
from .tiers.books import NO_LINK, BooksDamaged, Change, Position, Snapshot, record_tag

log = logging.getLogger("tensorcache")


class Follower:
    """The one reader of the shared tiers' change logs for a stack: owns each shared tier's cursor and
    applies other processes' changes. ``resyncs``: snapshots taken because a log could not tell;
    ``malformed``: changes and records ignored as unreadable."""

    def __init__(self, stack: TierStack) -> None:
        self._stack = stack
        self._cursors: dict[int, tuple[Position, bytes | None]] = {}
        self.resyncs = 0
        self.malformed = 0
        for i in self._shared():
            self._resync(i, quiet=True)

    def _shared(self) -> list[int]:
        return [i for i, slot in enumerate(self._stack.slots) if slot.tier.shares_books]

    def sync(self) -> None:
        """Apply the changes other processes made to each shared tier's books since the last look."""
        for i in self._shared():
            tier = self._stack.slots[i].tier
            since, last = self._cursors[i]
            got = tier.changes(since, last)
            if got is None:
                self._resync(i)
                continue
            raws, now = got
            for raw in raws:
                try:
                    self._apply(i, tier, Change.decode(raw))
                except (BooksDamaged, PayloadError) as exc:
                    self.malformed += 1
                    log.warning("ignoring a malformed change in the %s tier's log: %s", tier.name, exc)
            self._cursors[i] = (now, raws[-1] if raws else last)

    def _apply(self, i: int, tier: Tier, change: Change) -> None:
        """Apply one logged change to tier ``i``'s residency, unless this process made it."""
        if change.origin == self._stack.origin:
            return
        if change.op == "release":
            for index in change.indices:
                self._stack.released_elsewhere(i, (change.model_id, index))
            return
        known = self._stack.catalog.record(change.model_id)
        if known is not None and change.record not in (NO_LINK, record_tag(known.encoded)):
            known = self._agreeing(tier, known, _fetch_record(tier, change.model_id))
            if known is None:
                return
        record = known or _fetch_record(tier, change.model_id)
        if record is None:
            return
        if max(change.indices) >= len(record.layers):
            raise PayloadError(f"a change holds layer {max(change.indices)} of {change.model_id!r}, which "
                               f"has {len(record.layers)}")
        self._hold_seen(i, record, change.indices)

    def _agreeing(self, tier: Tier, known: ModelRecord, stored: ModelRecord | None) -> ModelRecord | None:
        """``known`` if the record ``tier`` keeps for its model id describes the same tensors, else None with a
        warning: another process put that id with other tensors after this one's left the store, and its
        entries there are not this process's model."""
        if stored is not None and stored.same_tensors(known):
            return known
        log.warning("the %s tier holds model %r with other tensors than this process knows under that id; "
                    "its entries there are not used here", tier.name, known.model_id)
        return None

    def _hold_seen(self, i: int, record: ModelRecord, indices: Sequence[int]) -> None:
        """Another process made tier ``i`` hold layers ``indices`` of ``record``: describe a new model to the
        policies, then note them."""
        if record.model_id not in self._stack.catalog.models:
            self._stack.tell(ModelDescribed(record.model_id, record.arch, record.mode, len(record.layers),
                                            record.score))
        self._stack.found(i, record, indices)

    def _resync(self, i: int, quiet: bool = False) -> None:
        """Rebuild what this process knows of tier ``i`` from a snapshot of its books."""
        tier = self._stack.slots[i].tier
        with collector_paused():  # about 10^6 long-lived objects at once from a store of 10^4 models
            snap = tier.snapshot()
            if snap is None:
                self._cursors.setdefault(i, (Position(b"", 0), None))
                return
            if not quiet:
                self.resyncs += 1
                log.warning("the %s tier's change log was lost, restored or trimmed; resynchronised from its books",
                            tier.name)
            self._rebuild(i, tier, snap)

    def _rebuild(self, i: int, tier: Tier, snap: Snapshot) -> None:
        """Note every entry ``snap`` shows tier ``i`` holding, and forget those it no longer holds."""
        seen: set[Entry] = set()
        for model_id, raw, held in snap.models:
            try:
                known = self._stack.catalog.record(model_id)
                if known is not None and raw != known.encoded:
                    known = self._agreeing(tier, known, ModelRecord.from_bytes(raw))
                    if known is None:
                        continue
                record = known or ModelRecord.from_bytes(raw)
                if record.model_id != model_id or held[-1] >= len(record.layers):
                    raise PayloadError(f"the record stored for {model_id!r} does not match its books")
            except PayloadError as exc:
                self.malformed += 1
                log.warning("ignoring a malformed model record in the %s tier: %s", tier.name, exc)
                continue
            seen.update([(model_id, index) for index in held])
            self._hold_seen(i, record, held)
        for entry in [e for e in self._stack.catalog.held_in([i]) if e not in seen]:
            self._stack.released_elsewhere(i, entry)
        self._cursors[i] = (snap.position, snap.last)


def _fetch_record(tier: Tier, model_id: str) -> ModelRecord | None:
    """The model record a shared tier keeps for ``model_id`` (None: it keeps none); PayloadError if bad."""
    raw = tier.record(model_id)
    if raw is None:
        return None
    record = ModelRecord.from_bytes(raw)
    if record.model_id != model_id:
        raise PayloadError(f"record stored for {model_id!r} names {record.model_id!r}")
    return record
