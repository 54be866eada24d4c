"""A tier's own books: which model entries it holds, payload refcounts and used bytes, kept in the store.

Every change to the books happens in the same transaction as the payloads it concerns (one LMDB write
transaction, one Redis WATCH/MULTI/EXEC, one step in process memory), so a payload is deleted exactly
when the store's own count of entries naming it reaches zero and a process killed mid-put leaves nothing
behind. The algorithm is written once, here, over a small ``Txn`` interface each store implements.

Keys (each store puts them under its namespace): ``u`` used bytes, ``c`` the store's byte capacity (set
by the first hold; every process sharing the store adopts it), ``s`` change sequence, ``e`` epoch
(renewed when a store loses its books, so readers resynchronise), ``r:<model>`` the model record,
``h:<model>`` its held layer indices, ``d:<model>:<index>`` the digests of one entry, ``n:<digest>`` a
payload's refcount. A store shared between processes also keeps the last ``LOG_KEEP`` changes, keyed by
sequence number, so readers follow along; older ones are trimmed, and a reader that fell behind the trim
point (or sees a restored, truncated or lost log) rebuilds its view from a snapshot of the books. Each
logged change carries a link, a hash of the link before it (``t``, the log's tip) and of itself, so the
change at a reader's position differs whenever any change up to it does: a log restored from an older
snapshot and written again to the same length is told from the one the reader followed.
"""
from __future__ import annotations

import logging
import os
import struct
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..keys import digest

log = logging.getLogger("tensorcache")

LOG_KEEP = 65536  # changes a shared store keeps for readers; one that falls further behind resynchronises
MAX_INDEX = 2**31 - 1
_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")
USED, SEQ, EPOCH, CAPACITY, TIP = b"u", b"s", b"e", b"c", b"t"
MAX_CAPACITY = 2**56  # a stored capacity above this (64 PiB) is garbled


class BooksDamaged(Exception):
    """A bookkeeping value read back is implausible; the store's books are rebuilt from what it holds."""


class Admission(NamedTuple):
    """What one ``hold`` did: ``held`` (the entry is in the tier now), payload bytes ``written``, and
    ``reason`` it was not held: ``no_room`` (evict at least ``short`` bytes and try again), ``conflict`` (the
    store keeps another record under that model id) or ``dropped`` (the store refused it). A named tuple:
    a process-local tier answers one or two per layer put."""

    held: bool
    written: int = 0
    reason: str | None = None
    short: int = 0


def no_room(short: int) -> Admission:
    """The refusal of a hold that needs ``short`` more bytes than the tier has free."""
    return Admission(False, 0, "no_room", short)


HELD = Admission(True)  # held already: nothing written
DROPPED = Admission(False, 0, "dropped")
CONFLICT = Admission(False, 0, "conflict")
_CHANGE = struct.Struct("<c8s8sHI")  # op (H: hold, R: release), link, record tag, origin bytes, index count;
_OPS = {b"H": "hold", b"R": "release"}  # then origin, indices, model id. (Earlier forms, ops h and r, are refused.)
NO_LINK = bytes(8)


def record_tag(record: bytes) -> bytes:
    """8 bytes that tell one stored record from another (a hold's change carries its record's)."""
    return digest(record)[:8]


@dataclass(frozen=True)
class Change:
    """One change to a shared store's books, as readers see it: ``op`` (hold or release) of layers
    ``indices`` of one model, made by the process ``origin``; ``link`` hashes the log up to and including
    it (set when it is logged); ``record``: a hold's ``record_tag`` of the record it holds under (a reader
    knowing the model by another record learns that the store's is not its own). Stored packed, ~60 bytes."""

    op: str
    model_id: str
    indices: tuple[int, ...]
    origin: str
    link: bytes = field(default=NO_LINK, compare=False)  # the log's bookkeeping, not what changed
    record: bytes = field(default=NO_LINK, compare=False)

    def encode(self, link: bytes | None = None) -> bytes:
        """The packed change, with ``link`` in place of its own if given."""
        origin = self.origin.encode()
        return b"".join((_CHANGE.pack(self.op[0].upper().encode(), self.link if link is None else link, self.record,
                                      len(origin), len(self.indices)),
                         origin, struct.pack(f"<{len(self.indices)}I", *self.indices), self.model_id.encode()))

    @classmethod
    def decode(cls, raw: bytes) -> Change:
        """Parse one logged change; BooksDamaged if it is not one."""
        try:
            op, link, tag, origin_len, count = _CHANGE.unpack_from(raw)
            at = _CHANGE.size + origin_len
            indices = struct.unpack_from(f"<{count}I", raw, at) if count <= len(raw) else None
            origin, model_id = raw[_CHANGE.size:at].decode(), raw[at + 4 * count:].decode()
        except (struct.error, UnicodeDecodeError) as exc:
            raise BooksDamaged(f"unreadable change record: {exc!r:.80}") from None
        if op not in _OPS or not indices or max(indices) > MAX_INDEX or not model_id:
            raise BooksDamaged(f"malformed change record {raw[:80]!r}")
        return cls(_OPS[op], model_id, indices, origin, link, tag)


@dataclass(frozen=True)
class Position:
    """Where a reader is in a shared store's change log: the log's epoch and the last sequence read."""

    epoch: bytes
    seq: int


@dataclass(frozen=True)
class Snapshot:
    """A shared store's books at one position: each held model's id, record bytes and held layer indices."""

    position: Position
    models: list[tuple[str, bytes, tuple[int, ...]]]
    last: bytes | None = None  # the change at the position, which tells a later reader the log is the same


class _WrongLength(bytes):
    """What a read returns for a stored value whose length is not the one asked for (read no further)."""


WRONG_LENGTH = _WrongLength()


@dataclass(frozen=True)
class Audit:
    """A store's books against its contents: ``used`` as counted, ``held_bytes`` the payload bytes held
    entries name, ``orphan_bytes`` stored payload bytes no entry names, and any ``problems`` found."""

    used: int
    held_bytes: int
    orphan_bytes: int
    entries: int
    problems: tuple[str, ...]

    @property
    def healthy(self) -> bool:
        return not self.problems and self.used == self.held_bytes and not self.orphan_bytes


class Txn(ABC):
    """One transaction on a store's books and payloads (all keys relative to the store's namespace);
    ``logs``: the store is shared and keeps the change log."""

    logs = False

    @abstractmethod
    def get(self, key: bytes) -> bytes | None: ...

    def version(self) -> Any:
        """The store's version this transaction reads (the tier's ``_version`` as of its snapshot); None where
        the store has none."""
        return None

    def prefetch(self, keys: Sequence[bytes]) -> None:
        """Hint: these book keys are read next (a remote store fetches them in one round trip)."""

    def prefetch_blobs(self, digests: Sequence[bytes]) -> None:
        """Hint: these payloads' sizes are asked next."""

    @abstractmethod
    def set(self, key: bytes, value: bytes) -> None: ...

    @abstractmethod
    def delete(self, key: bytes) -> None: ...

    @abstractmethod
    def keys(self, prefix: bytes) -> Iterator[bytes]:
        """Book keys starting with ``prefix``."""

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """``get`` of each key, in order (a remote store reads them in one round trip)."""
        self.prefetch(keys)
        return [self.get(k) for k in keys]

    def set_many(self, pairs: Sequence[tuple[bytes, bytes]]) -> None:
        """``set`` of each (key, value)."""
        for key, value in pairs:
            self.set(key, value)

    def delete_many(self, keys: Sequence[bytes]) -> None:
        """``delete`` of each key."""
        for key in keys:
            self.delete(key)

    def delete_blobs(self, digests: Sequence[bytes]) -> int:
        """``delete_blob`` of each payload; the bytes they held."""
        self.prefetch_blobs(digests)
        return sum(self.delete_blob(d) or 0 for d in digests)

    def items(self, prefix: bytes) -> list[tuple[bytes, bytes]]:
        """(key, value) of every book key starting with ``prefix``, the prefix stripped (one bulk read)."""
        keys = [bytes(k) for k in self.keys(prefix)]
        self.prefetch(keys)
        got = [(k[len(prefix):], self.get(k)) for k in keys]
        return [(k, v) for k, v in got if v is not None]

    def blob_sizes(self) -> dict[bytes, int]:
        """Stored length of every payload by digest (for audits)."""
        digests = list(self.blob_digests())
        self.prefetch_blobs(digests)
        sizes = {d: self.blob_size(d) for d in digests}
        return {d: n for d, n in sizes.items() if n is not None}

    @abstractmethod
    def blob_size(self, digest: bytes) -> int | None:
        """Stored length of a payload, without reading its bytes (None: absent)."""

    @abstractmethod
    def get_blob(self, digest: bytes, size: int | None = None) -> Any:
        """A payload's bytes, None if absent, or WRONG_LENGTH if it is not ``size`` bytes long (checked
        before its bytes are fetched)."""

    def get_blobs(self, wanted: Sequence[tuple[bytes, int | None]]) -> list[Any]:
        """``get_blob`` of each (digest, size), in order (a remote store reads them in as few round trips
        as it can)."""
        self.prefetch_blobs([d for d, _ in wanted])
        return [self.get_blob(d, size) for d, size in wanted]

    @abstractmethod
    def put_blob(self, digest: bytes, value: bytes | bytearray | memoryview) -> None: ...

    @abstractmethod
    def delete_blob(self, digest: bytes) -> int | None:
        """Delete a payload; the length it had (None: absent)."""

    @abstractmethod
    def blob_digests(self) -> Iterator[bytes]:
        """Every stored payload's digest (for audits)."""


def pack_u64(n: int) -> bytes:
    return _U64.pack(n)


def read_u64(raw: bytes | None, what: str) -> int:
    """A stored counter (0 when absent); BooksDamaged when it is not 8 bytes."""
    if raw is None:
        return 0
    if len(raw) != 8:
        raise BooksDamaged(f"{what} is {len(raw)} bytes, not 8")
    return _U64.unpack(raw)[0]


def read_capacity(txn: Txn) -> int:
    """The byte capacity a shared store keeps in its books (0: none set yet); BooksDamaged if garbled."""
    capacity = read_u64(txn.get(CAPACITY), "the store's capacity")
    if capacity > MAX_CAPACITY:
        raise BooksDamaged(f"the store's capacity {capacity} is implausible")
    return capacity


def pack_indices(indices: Sequence[int]) -> bytes:
    return b"".join(_U32.pack(i) for i in sorted(indices))


def read_indices(raw: bytes | None) -> set[int]:
    if raw is None:
        return set()
    if len(raw) % 4:
        raise BooksDamaged(f"held-layer list of {len(raw)} bytes")
    return set(struct.unpack(f">{len(raw) // 4}I", raw))


def read_digests(raw: bytes | None) -> list[bytes]:
    if raw is None or len(raw) % 16:
        raise BooksDamaged("an entry's digest list is missing or not whole")
    return [raw] if len(raw) == 16 else [bytes(raw[k:k + 16]) for k in range(0, len(raw), 16)]


def model_key(kind: bytes, model_id: str) -> bytes:
    return kind + b":" + model_id.encode()


def entry_key(model_id: str, index: int) -> bytes:
    return b"d:" + model_id.encode() + b"\x00" + _U32.pack(index)


def new_epoch() -> bytes:
    return os.urandom(8)


def hold(txn: Txn, record: bytes, model_id: str, entries: Sequence[tuple[int, Sequence[bytes]]],
         blobs: Mapping[bytes, Any], capacity: int, origin: str, dry: bool = False) -> Admission:
    """Hold entries ``(model_id, index)``, each naming payloads ``digests`` (``entries``: (index, digests)
    pairs), all or none: store the payloads no entry holds yet (``blobs`` must have them), count refs and
    bytes, keep the record, log one change. ``no_room`` if they do not fit in ``capacity``; ``conflict``
    (nothing held) if the store keeps another ``record`` for ``model_id``; entries held already are skipped.
    ``dry``: change nothing, only answer (a read transaction may ask)."""
    held_key = model_key(b"h", model_id)
    all_digests = list(dict.fromkeys(d for _, digests in entries for d in digests))
    txn.prefetch([held_key, USED, SEQ, EPOCH, TIP, model_key(b"r", model_id), *(b"n:" + d for d in all_digests)])
    stored = txn.get(model_key(b"r", model_id))
    if stored is not None and stored != record:
        return CONFLICT  # one model id, one record: its entries name that record's payloads
    held = read_indices(txn.get(held_key))
    entries = [(index, digests) for index, digests in entries if index not in held]
    if not entries:
        return HELD
    need, fresh, counts = 0, {}, {}
    wanted = list(dict.fromkeys(d for _, digests in entries for d in digests))
    for d, raw in zip(wanted, txn.get_many([b"n:" + d for d in wanted])):
        counts[d] = read_u64(raw, "a refcount")
        if counts[d] == 0:
            blob = blobs.get(d)
            if blob is None:
                return DROPPED  # the caller no longer has bytes another process just dropped
            fresh[d] = blob
            need += len(blob)
    used = read_u64(txn.get(USED), "the used-bytes counter")
    if used + need > capacity:
        return no_room(used + need - capacity)
    if dry:
        return Admission(True, need)
    writes = [] if stored is not None else [(model_key(b"r", model_id), record)]
    for d, blob in fresh.items():
        txn.put_blob(d, blob)
    for index, digests in entries:
        for d in digests:
            counts[d] += 1
        writes.append((entry_key(model_id, index), b"".join(digests)))
        held.add(index)
    writes += [(b"n:" + d, pack_u64(count)) for d, count in counts.items()]
    writes += [(held_key, pack_indices(held)), (USED, pack_u64(used + need))]
    txn.set_many(writes)
    _log(txn, Change("hold", model_id, tuple(index for index, _ in entries), origin,
                     record=record_tag(stored if stored is not None else record)))
    return Admission(True, need)


def release(txn: Txn, model_id: str, indices: Sequence[int], origin: str) -> list[int]:
    """Drop entries ``(model_id, index)`` for each of ``indices``: payloads whose refcount reaches zero are
    deleted and their bytes uncounted; the record goes with the model's last entry; one change is logged.
    Returns the indices the store held (and dropped)."""
    held_key = model_key(b"h", model_id)
    ekeys = {index: entry_key(model_id, index) for index in indices}
    txn.prefetch([held_key, *ekeys.values(), USED, SEQ, EPOCH, TIP])
    held = read_indices(txn.get(held_key))
    gone = [index for index in ekeys if index in held]
    if not gone:
        return []
    gone_keys = [ekeys[index] for index in gone]
    named: dict[bytes, int] = {}  # payload -> how many of the dropped entries name it
    for raw in txn.get_many(gone_keys):
        for d in read_digests(raw):
            named[d] = named.get(d, 0) + 1
    txn.prefetch_blobs(list(named))
    writes, dead = [], []
    for (d, n), raw in zip(named.items(), txn.get_many([b"n:" + d for d in named])):
        left = read_u64(raw, "a refcount") - n
        if left > 0:
            writes.append((b"n:" + d, pack_u64(left)))
        else:
            dead.append(d)
    freed = txn.delete_blobs(dead)
    drop = [b"n:" + d for d in dead] + gone_keys
    held.difference_update(gone)
    if held:
        writes.append((held_key, pack_indices(held)))
    else:
        drop += [held_key, model_key(b"r", model_id)]
    writes.append((USED, pack_u64(max(0, read_u64(txn.get(USED), "the used-bytes counter") - freed))))
    txn.delete_many(drop)
    txn.set_many(writes)
    _log(txn, Change("release", model_id, tuple(gone), origin))
    return gone


def log_key(seq: int) -> bytes:
    return b"l:" + _U64.pack(seq)


def _log(txn: Txn, change: Change) -> None:
    """Append ``change`` to a shared store's log and trim it to ``LOG_KEEP`` (other stores keep none)."""
    if not txn.logs:
        return
    seq, epoch, tip = txn.get_many([SEQ, EPOCH, TIP])
    seq = read_u64(seq, "the change sequence") + 1
    if seq > 2**62:
        raise BooksDamaged(f"change sequence {seq} is implausible")
    link = digest(tip or NO_LINK, change.encode(NO_LINK))[:8]
    txn.set_many([(SEQ, pack_u64(seq)), *([] if epoch is not None else [(EPOCH, new_epoch())]), (TIP, link),
                  (log_key(seq), change.encode(link))])
    if seq > LOG_KEEP:
        txn.delete(log_key(seq - LOG_KEEP))


def position(txn: Txn) -> Position:
    """The log position of the books as they are now."""
    txn.prefetch([EPOCH, SEQ])
    return Position(txn.get(EPOCH) or b"", read_u64(txn.get(SEQ), "the change sequence"))


def snapshot(txn: Txn) -> Snapshot:
    """Every held model's record and held indices, with the position they are as of."""
    at = position(txn)  # first: a change made while the models are read is also in the log after it
    return _snapshot(txn, at, txn.items(b"h:"))


def survey(txn: Txn) -> tuple[Audit, Snapshot]:
    """The audit and the snapshot from one transaction and one pass over the held lists (what opening needs)."""
    at = position(txn)
    held = txn.items(b"h:")
    return audit(txn, held)[0], _snapshot(txn, at, held)


def _snapshot(txn: Txn, at: Position, held_lists: list[tuple[bytes, bytes]]) -> Snapshot:
    last = txn.get(log_key(at.seq)) if at.seq else None
    records = dict(txn.items(b"r:"))
    models = []
    for key, raw in held_lists:
        record = records.get(key)
        held = read_indices(raw)
        if record is not None and held:
            models.append((key.decode(errors="replace"), record, tuple(sorted(held))))
    return Snapshot(at, models, last)


def audit(txn: Txn, held_lists: list[tuple[bytes, bytes]] | None = None
          ) -> tuple[Audit, dict[bytes, int], set[bytes], list[tuple[str, int]]]:
    """Check the books against the store; also returns what ``repair`` needs: the true refcounts, the
    orphaned digests and the entries whose payloads are gone. Each area is read in one bulk pass
    (``held_lists``: the held lists read already in this transaction)."""
    txn.get(SEQ)  # read first: a store that watches reads (Redis) then refuses to commit over a concurrent change
    problems = []
    try:
        used = read_u64(txn.get(USED), "the used-bytes counter")
    except BooksDamaged as exc:
        used, problems = -1, [str(exc)]
    digests_of = dict(txn.items(b"d:"))
    sizes = txn.blob_sizes()
    counts = dict(txn.items(b"n:"))
    held_lists = txn.items(b"h:") if held_lists is None else held_lists
    whole = _tally_whole(held_lists, digests_of, sizes, counts)
    if whole is not None:
        (refs, entries), broken = whole, []
    else:
        refs, entries, broken = _tally(held_lists, digests_of, sizes, counts, problems)
    held_bytes = sum(map(sizes.__getitem__, refs))
    orphans = sizes.keys() - refs.keys()
    orphan_bytes = sum(map(sizes.__getitem__, orphans))
    if used != held_bytes:
        problems.append(f"used bytes counted {used}, held payloads are {held_bytes}")
    try:
        if read_u64(txn.get(SEQ), "the change sequence") > 2**62:
            problems.append("the change sequence is implausible")
    except BooksDamaged as exc:
        problems.append(str(exc))
    if orphans:
        problems.append(f"{len(orphans)} payloads ({orphan_bytes} bytes) are named by no entry")
    try:
        read_capacity(txn)
    except BooksDamaged as exc:
        problems.append(str(exc))
    return Audit(used, held_bytes, orphan_bytes, entries, tuple(problems)), refs, orphans, broken


def _tally_whole(held_lists: list[tuple[bytes, bytes]], digests_of: Mapping[bytes, bytes],
                 sizes: Mapping[bytes, int], counts: Mapping[bytes, bytes]) -> tuple[dict[bytes, int], int] | None:
    """(refcounts, entries) of books in which every held list and entry is whole, every payload present
    and every stored refcount right, counted in bulk (opening a store of 10^5 entries audits them all); None
    otherwise, and ``_tally`` then finds and names what is wrong."""
    keys = []
    for key, raw in held_lists:
        if len(raw) % 4:
            return None
        prefix = key + b"\x00"
        keys += [prefix + _U32.pack(index) for index in read_indices(raw)]
    raws = list(map(digests_of.get, keys))
    if None in raws:
        return None
    named: list[bytes] = raws
    if set(map(len, raws)) != {16}:  # some entries name two or more payloads
        if any(len(raw) % 16 for raw in raws):
            return None
        named = [d for raw in raws for d in read_digests(raw)]
    refs = dict(Counter(named))
    if not refs.keys() <= sizes.keys() or counts.keys() != refs.keys() \
            or set(map(len, counts.values())) - {8}:
        return None
    stored = b"".join(map(counts.__getitem__, refs))
    if struct.unpack(f">{len(refs)}Q", stored) != tuple(refs.values()):
        return None
    return refs, len(raws)


def _tally(held_lists: list[tuple[bytes, bytes]], digests_of: Mapping[bytes, bytes], sizes: Mapping[bytes, int],
           counts: Mapping[bytes, bytes], problems: list[str]) -> tuple[dict[bytes, int], int, list[tuple[str, int]]]:
    """The true refcounts, the whole entries and the broken ones (model id, index; -1: its held list) of
    books ``_tally_whole`` refused, one entry at a time, each problem named in ``problems``."""
    refs: dict[bytes, int] = {}
    broken: list[tuple[str, int]] = []
    entries = 0
    for key, raw in held_lists:
        model_id = key.decode(errors="replace")
        try:
            held = read_indices(raw)
        except BooksDamaged as exc:
            problems.append(f"{model_id}: {exc}")
            broken.append((model_id, -1))
            continue
        for index in held:
            try:
                digests = read_digests(digests_of.get(key + b"\x00" + _U32.pack(index)))
            except BooksDamaged as exc:
                problems.append(f"{model_id}[{index}]: {exc}")
                broken.append((model_id, index))
                continue
            if any(d not in sizes for d in digests):
                problems.append(f"{model_id}[{index}]: a payload is missing")
                broken.append((model_id, index))
                continue
            entries += 1
            for d in digests:
                refs[d] = refs.get(d, 0) + 1
    for d, count in refs.items():
        try:
            stored = read_u64(counts.get(d), "a refcount")
        except BooksDamaged:
            stored = -1
        if stored != count:
            problems.append(f"refcount of {d.hex()} is {stored}, entries name it {count} times")
    for d in counts:
        if d not in refs:
            problems.append(f"refcount kept for unheld payload {d.hex()}")
    return refs, entries, broken


def repair(txn: Txn) -> Audit:
    """Rebuild the books from what the store holds: true refcounts and used bytes, orphans deleted,
    entries with lost payloads dropped; a new epoch makes every reader resynchronise. Returns the audit
    made before the repair."""
    before, refs, orphans, broken = audit(txn)
    if not before.problems:
        return before
    for model_id, index in broken:
        held_key = model_key(b"h", model_id)
        try:
            held = read_indices(txn.get(held_key))
        except BooksDamaged:
            held = set()
        held.discard(index)
        if index < 0:
            held = set()
        if index >= 0:
            txn.delete(entry_key(model_id, index))
        if held:
            txn.set(held_key, pack_indices(held))
        else:
            txn.delete(held_key)
            txn.delete(model_key(b"r", model_id))
    for key in list(txn.keys(b"n:")):
        if bytes(key[2:]) not in refs:
            txn.delete(key)
    for d in orphans:
        txn.delete_blob(d)
    for d, count in refs.items():
        txn.set(b"n:" + d, pack_u64(count))
    for key in list(txn.keys(b"r:")):  # records of models holding nothing
        if txn.get(b"h:" + key[2:]) is None:
            txn.delete(key)
    txn.set(USED, pack_u64(sum(txn.blob_size(d) or 0 for d in refs)))
    try:
        read_capacity(txn)
    except BooksDamaged:
        txn.delete(CAPACITY)  # the next hold sets it again
    if txn.logs:  # a new log: every reader resynchronises from the rebuilt books
        for key in list(txn.keys(b"l:")):
            txn.delete(key)
        txn.set(SEQ, pack_u64(0))
        txn.delete(TIP)
        txn.set(EPOCH, new_epoch())
    return before
