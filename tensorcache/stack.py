"""The tier stack: tiers fastest first, each with its own policy; the one owner of byte movement. It admits
entries, evicting and demoting iteratively (a work list, no recursion); reads and checks an entry from the
fastest tier holding it, releasing bad copies and promoting good ones; and says what it did.

An entry evicted from a tier moves down to the next tier that lacks it; its bytes are read before it is
released, so a cascade of evictions can never take the copy a pending admission reads from. Residency is
the catalog's: the stack tells it each hold and release, and tells the tier's policy the same. Layers read
from a process-local tier are decoded once and kept (``Slot.decoded``) until they leave that tier.
"""
from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .catalog import Catalog, Entry, ModelRecord
from .events import Found, Inserted, LayerServed, PolicyEvent, Released
from .payload import PayloadError, decode
from .policies import Policy
from .policies.base import make_room
from .tiers import Tier
from .tiers.base import UNREADABLE, StoreFailure
from .tiers.books import WRONG_LENGTH
from .transfer import Layer

log = logging.getLogger("tensorcache")


@dataclass
class Slot:
    """One tier, its policy, and (for process-local tiers) the decoded layers it holds."""

    tier: Tier
    policy: Policy
    decoded: dict[Entry, Layer] | None = None
    full: bool = False  # its last admission had to make room (a shared tier's next one asks for room first)


@dataclass
class Moves:
    """What the stack did: releases as (tier name, entry, reason), refusals as (tier name, reason),
    demotions and promotions made, corrupt copies found, and payload bytes written into the first tier asked."""

    released: list[tuple[str, Entry, str]] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    demotions: int = 0
    promotions: int = 0
    corrupt: int = 0
    written: int = 0


class TierStack:
    """Tiers fastest first, each with its own policy, over one catalog; ``origin`` names this process in
    shared logs; ``verify``: check every payload's digest on read, and keep no decoded layers."""

    def __init__(self, tiers: Sequence[Tier], policies: Sequence[Policy], catalog: Catalog, origin: str,
                 verify: bool = False) -> None:
        if len(tiers) != len(policies):
            raise ValueError(f"{len(tiers)} tiers need as many policies, got {len(policies)}")
        self.slots = [Slot(t, p, {} if t.keeps_decoded and not verify else None) for t, p in zip(tiers, policies)]
        self.catalog, self.origin, self.verify = catalog, origin, verify

    def read_many(self, record: ModelRecord, indices: Sequence[int], moves: Moves
                  ) -> Iterator[tuple[Layer, int] | None]:
        """``read`` of each of layers ``indices`` in turn (lazily: a caller may stop early), the payloads of
        all those whose fastest copy is in one shared tier read beforehand in one transaction of that tier
        (a remote store: two round trips for the whole hit, not two per layer)."""
        by_tier: dict[int, list[int]] = {}
        entries = record.entries
        for index in indices:
            tiers = self.catalog.tiers_of(entries[index])
            if tiers and self.slots[tiers[0]].tier.shares_books:
                by_tier.setdefault(tiers[0], []).append(index)
        early: dict[int, tuple[int, list[Any]]] = {}  # layer index -> (tier, its payloads as read)
        for i, group in by_tier.items():
            if len(group) > 1:
                layers = record.layers
                got = self.slots[i].tier.read([pair for j in group for pair in zip(layers[j].digests, layers[j].sizes)])
                start = 0
                for j in group:
                    n = len(record.layers[j].refs)
                    early[j], start = (i, got[start:start + n]), start + n
        for index in indices:
            yield self.read(record, index, moves, early.get(index))

    def read(self, record: ModelRecord, index: int, moves: Moves, early: tuple[int, list[Any]] | None = None
             ) -> tuple[Layer, int] | None:
        """Layer ``index`` of ``record`` and the tier it came from: read and checked from the fastest tier
        holding it, then copied up into each faster tier. A bad or missing copy is released (``moves`` says
        so) and the next tier is tried; None when no tier has a good copy. ``early``: (tier, payloads) read
        from that tier already, checked here as a read of it would be. A tier that cannot be read now (its
        store failed; the tier warned) is passed over and its entry kept, to be read again later."""
        entry = record.entries[index]
        for i in self.catalog.tiers_of(entry):
            slot = self.slots[i]
            layer = None if slot.decoded is None else slot.decoded.get(entry)
            raw: dict[bytes, Any] | None = {} if i else None  # the payloads, wanted to copy them up a tier
            if layer is None or i:  # a kept layer needs no reading, unless its bytes go up a tier
                try:
                    layer = self._load(slot, record, index, layer, raw,
                                       early[1] if early is not None and early[0] == i else None)
                except StoreFailure:
                    continue  # unreadable now, not gone: the entry stays known
                except PayloadError as exc:
                    missing = exc.args[0] == "missing payload"
                    moves.corrupt += not missing
                    log.warning("releasing %s layer %d from %s: %s", entry[0], index, slot.tier.name, exc)
                    self.release(i, entry, "missing" if missing else "corrupt", moves)
                    continue
                if slot.decoded is not None:
                    slot.decoded[entry] = layer
            slot.policy.handle(LayerServed(entry))
            for faster in range(i):
                if self.admit(faster, record, (index,), raw, moves):
                    moves.promotions += 1
            return layer, i
        return None

    def _load(self, slot: Slot, record: ModelRecord, index: int, kept: Layer | None, raw: dict[bytes, Any] | None,
              got: list[Any] | None = None) -> Layer:
        """An entry decoded from ``slot`` (``kept``: decoded already, only its raw payloads are wanted; ``got``:
        its payloads read already), its payloads as read put in ``raw`` (when given); PayloadError if one is
        missing or does not match the model record, StoreFailure if the tier could not be read."""
        tier = slot.tier
        layer = record.layers[index]
        views = tier.device_views and not self.verify
        if views:
            got = [tier.view(digest) for digest in layer.digests]
        elif got is None:
            got = tier.read(list(zip(layer.digests, layer.sizes)))
        verify = self.verify or not tier.trusted_bytes
        arrays, dtypes, total = {}, {}, 0
        for (name, digest, ref_dtype, shape, nbytes, _), size, value in zip(layer.refs, layer.sizes, got):
            if value is None or value is WRONG_LENGTH or value is UNREADABLE:
                raise _unread(tier, got, value, size)
            if views:
                arr, dtype = value
            else:
                if raw is not None:
                    raw[digest] = value
                if kept is not None:
                    continue
                arr, dtype = decode(digest, value, verify=verify, max_nbytes=nbytes, expect=(ref_dtype, shape, nbytes))
            if dtype != ref_dtype or arr.shape != shape:
                raise PayloadError("payload header disagrees with the model record")
            arrays[name], dtypes[name] = arr, dtype
            total += nbytes
        return kept or Layer(arrays, dtypes, total)

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
            if not asked and tier.shares_books:
                group, payloads = _with_queued(work, t, rec.model_id, group, payloads)
            if not tier.shares_books:
                held, written = self._place_local(t, rec, group, payloads, work, moves)
            elif len(group) > 1 and sum(rec.layers[j].blob_bytes for j in group) > tier.capacity:
                work.extendleft((t, rec, (j,), payloads, asked) for j in reversed(group))
                continue
            else:
                got = self._place(t, rec, group, payloads, work, moves)
                held, written = (0, 0) if got is None else (len(group), got)
            if asked:
                admitted = admitted and held == len(group)
                moves.written += written
            else:
                moves.demotions += held
        return admitted

    def _place_local(self, t: int, record: ModelRecord, group: tuple[int, ...], blobs: Mapping[bytes, Any],
                     work: deque, moves: Moves) -> tuple[int, int]:
        """Hold layers ``group`` of ``record`` in process-local tier ``t`` one by one, in order, as replay admits
        them: a layer that does not fit first takes the policy's victims for the bytes it lacks (released in its
        hold, their moves down queued on ``work``). Returns (layers held, payload bytes written)."""
        slot = self.slots[t]
        tier, policy = slot.tier, slot.policy
        model_id, layers = record.model_id, record.layers
        held = written = 0
        for j in group:
            layer = layers[j]
            if layer.blob_bytes > tier.capacity:
                moves.refused.append((tier.name, "too_large"))
                continue
            entries = ((j, layer.digests),)
            admission = tier.hold_many(b"", model_id, entries, blobs)
            while admission.reason == "no_room" and len(policy):
                victims = self._victims(t, admission.short, moves, work)
                admission = tier.hold_many(b"", model_id, entries, blobs, release=victims)
                for entry in victims:
                    self._release_here(t, entry)
            if not admission.held:
                moves.refused.append((tier.name, admission.reason or "dropped"))
                continue
            self.note(t, record, j)
            held += 1
            written += admission.written
        return held, written

    def _place(self, t: int, record: ModelRecord, group: tuple[int, ...], blobs: Mapping[bytes, Any], work: deque,
               moves: Moves) -> int | None:
        """Hold layers ``group`` of ``record`` in shared tier ``t`` in one transaction, evicting the policy's
        victims in that transaction while there is no room; the payload bytes written, None if refused."""
        slot = self.slots[t]
        if len(group) == 1 and record.layers[group[0]].blob_bytes > slot.tier.capacity:
            moves.refused.append((slot.tier.name, "too_large"))
            return None
        entries = [(j, record.layers[j].digests) for j in group]
        raw = record.encoded  # a shared tier keeps the model's record with its entries
        victims: list[Entry] = []  # released in the next hold's own transaction: one commit, not two
        if slot.full and len(slot.policy):  # likely full: no refused write first
            short = slot.tier.room(raw, record.model_id, entries, blobs)
            victims = self._victims(t, short, moves, work) if short else []
        slot.full = bool(victims)
        while True:
            admission = slot.tier.hold_many(raw, record.model_id, entries, blobs, self.origin, release=victims)
            for entry in victims:
                self._release_here(t, entry)
            victims = []
            if admission.held:
                break
            if admission.reason == "conflict" and raw is record.encoded:
                raw = _stored_twin(slot.tier, record) or raw  # the same model in another encoding: hold under it
                if raw is not record.encoded:
                    continue
            if admission.reason != "no_room" or not len(slot.policy):
                moves.refused.append((slot.tier.name, admission.reason or "dropped"))
                return None
            victims, slot.full = self._victims(t, admission.short, moves, work), True
        for j in group:
            self.note(t, record, j)
        return admission.written

    def note(self, t: int, record: ModelRecord, index: int) -> None:
        """Tier ``t``'s store holds layer ``index`` of ``record`` now: record it, and tell the tier's policy
        if it is new to the catalog or to the policy."""
        slot, entry = self.slots[t], record.entries[index]
        if self.catalog.hold(record, index, t) or entry not in slot.policy:
            layer = record.layers[index]
            slot.policy.handle(Inserted(entry, layer.blob_bytes, record.model_id, layer.depends_on))

    def found(self, t: int, record: ModelRecord, indices: Sequence[int]) -> None:
        """``note`` of each of layers ``indices`` of ``record``, which another process made tier ``t`` hold: the
        policy hears those new to it in one ``Found`` event."""
        slot, entries, layers = self.slots[t], record.entries, record.layers
        hold, policy = self.catalog.hold, slot.policy
        new = tuple([(entries[i], layers[i].blob_bytes, layers[i].depends_on) for i in indices
                     if hold(record, i, t) or entries[i] not in policy])
        if new:
            policy.handle(Found(record.model_id, new))

    def released_elsewhere(self, t: int, entry: Entry) -> None:
        """Tier ``t``'s store no longer holds ``entry`` (another process released it): release it here and
        tell the tier's policy."""
        if self._release_here(t, entry):
            self.slots[t].policy.handle(Released(entry))

    def check(self) -> list[str]:
        """Problems in each tier: its books against its store, used bytes over capacity, and (process-local
        tiers) residency against the policy, the books and the decoded layers kept."""
        problems = []
        for i, slot in enumerate(self.slots):
            name = slot.tier.name
            try:
                audit = slot.tier.audit()
            except StoreFailure as exc:  # e.g. Redis unreachable: its books cannot be read, nothing is known wrong
                problems.append(f"{name}: not checked, the store failed: {exc}")
                continue
            problems += [f"{name}: {p}" for p in audit.problems]
            if slot.tier.used_bytes() > slot.tier.capacity:
                problems.append(f"{name}: {slot.tier.used_bytes()} bytes used over {slot.tier.capacity}")
            held = set(self.catalog.held_in([i]))
            if any(entry not in slot.policy for entry in held):
                problems.append(f"{name}: entries held but unknown to the policy")
            if not slot.tier.shares_books and len(slot.policy) != len(held):
                problems.append(f"{name}: policy has {len(slot.policy)} entries, the tier {len(held)}")
            if slot.decoded is not None and not set(slot.decoded) <= held:
                problems.append(f"{name}: decoded layers kept for entries it no longer holds")
            if not slot.tier.shares_books and audit.entries != len(held):
                problems.append(f"{name}: books hold {audit.entries} entries, the catalog {len(held)}")
        return problems

    def close(self) -> None:
        """Drop the decoded layers kept and close every tier."""
        for slot in self.slots:
            if slot.decoded is not None:
                slot.decoded.clear()
            slot.tier.close()

    def tell(self, event: PolicyEvent) -> None:
        """Give every tier's policy one event."""
        for slot in self.slots:
            slot.policy.handle(event)

    def _victims(self, t: int, short: int, moves: Moves, work: deque) -> list[Entry]:
        """The policy's victims in tier ``t`` until their bytes cover ``short``, out of the policy now and their
        moves down queued; the caller releases them. Shared payloads may free less; the caller then asks again."""
        def size(entry: Entry) -> int | None:
            record = self.catalog.record(entry[0])
            return None if record is None else record.layers[entry[1]].blob_bytes

        victims = make_room(self.slots[t].policy, short, size)
        self._departing(t, victims, "capacity", moves, work)
        return victims

    def release(self, t: int, entry: Entry, reason: str, moves: Moves, work: deque | None = None) -> None:
        """Release ``entry`` from tier ``t`` for ``reason``; with a ``work`` list, queue its move to the next tier down."""
        self.slots[t].policy.handle(Released(entry))
        self._departing(t, [entry], reason, moves, work)
        self.slots[t].tier.release_many([entry], self.origin)
        self._release_here(t, entry)

    def _departing(self, t: int, entries: list[Entry], reason: str, moves: Moves, work: deque | None) -> None:
        """Say that ``entries`` (out of the policy already) leave tier ``t`` for ``reason``, queueing their moves
        down when there is a ``work`` list: one per model, so that a shared tier below takes a model's departing
        layers in one transaction (their bytes are read now, in one read per model, before they are released)."""
        slot = self.slots[t]
        down: dict[str, list[int]] = {}
        for entry in entries:
            moves.released.append((slot.tier.name, entry, reason))
            if work is not None and t + 1 < len(self.slots) and not self.catalog.holds(entry, t + 1):
                down.setdefault(entry[0], []).append(entry[1])
        if work is None:
            return
        for model_id, indices in down.items():
            record = self.catalog.record(model_id)
            if record is None:
                continue
            layers = [record.layers[j] for j in indices]
            got = iter(slot.tier.read([pair for layer in layers for pair in zip(layer.digests, layer.sizes)]))
            blobs: dict[bytes, Any] = {}
            whole = []
            for j, layer in zip(indices, layers):
                mine = [next(got) for _ in layer.digests]
                if all(g is not None and g is not WRONG_LENGTH and g is not UNREADABLE for g in mine):
                    blobs.update(zip(layer.digests, mine))
                    whole.append(j)
            if whole:
                work.append((t + 1, record, tuple(whole), blobs, False))

    def _release_here(self, t: int, entry: Entry) -> bool:
        """Release ``entry`` from this process's view of tier ``t`` (residency, decoded layer); True if the catalog had it there."""
        slot = self.slots[t]
        if slot.decoded is not None:
            slot.decoded.pop(entry, None)
        return self.catalog.release(entry, t)


def _with_queued(work: deque, t: int, model_id: str, group: tuple[int, ...], blobs: Mapping[bytes, Any]
                 ) -> tuple[tuple[int, ...], Mapping[bytes, Any]]:
    """A move of layers ``group`` of ``model_id`` down into tier ``t``, joined by every other such move queued on
    ``work`` (taken off it), so that the tier holds them in one transaction."""
    same = [item for item in work if item[0] == t and not item[4] and item[1].model_id == model_id]
    if not same:
        return group, blobs
    merged = dict(blobs)
    for item in same:
        work.remove(item)
        group += item[2]
        merged.update(item[3])
    return tuple(dict.fromkeys(group)), merged


def _unread(tier: Tier, got: list[Any], value: Any, size: int) -> Exception:
    """Why the payloads ``got`` read from ``tier`` cannot be decoded, ``value`` (one of ``size`` stored bytes) being
    absent or of the wrong length: StoreFailure if the tier could not be read for any of them, else PayloadError."""
    if any(v is UNREADABLE for v in got):
        return StoreFailure(f"the {tier.name} tier cannot be read now", reported=True)
    if value is None:
        return PayloadError("missing payload")
    return PayloadError(f"stored length differs from the record's {size} bytes")


def _stored_twin(tier: Tier, record: ModelRecord) -> bytes | None:
    """The record ``tier`` keeps for ``record``'s model id when it describes the same tensors (written by
    another process or version in other bytes), else None."""
    raw = tier.record(record.model_id) if tier.shares_books else None
    try:
        return raw if raw is not None and ModelRecord.from_bytes(raw).same_tensors(record) else None
    except PayloadError:
        return None
