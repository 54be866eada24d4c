"""The Tier contract: a payload store with a byte capacity that keeps its own books (see ``books``).

What a tier can do is said by capability flags, the one way the cache asks (never by the tier's class):

* ``shares_books``: other processes see what it holds; it keeps a bounded change log (``changes``),
  snapshots (``snapshot``) and model records (``record``).
* ``trusted_bytes``: stored bytes cannot change under this process (its own memory), so reads skip the
  digest check unless the cache is told to verify.
* ``keeps_decoded``: decoded layers may be kept while the tier holds them (process-local tiers).
* ``device_views``: serves typed tensors on a device without a host copy (``view``).

A method that belongs to a flag is declared here and raises NotImplementedError on a tier without it.
"""
from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from . import books
from .books import Admission, Audit, BooksDamaged, Txn

log = logging.getLogger("tensorcache")
T = TypeVar("T")

MAX_KEY_BYTES = 494  # LMDB's 511-byte key limit less the 17-byte namespace and area prefix, for every tier


def warn_once(seen: set[str], kind: str, message: str, *args: object) -> None:
    """Log ``message`` as a warning unless ``kind`` is already in ``seen`` (one warning per failure kind)."""
    if kind not in seen:
        seen.add(kind)
        log.warning(message, *args)


def check_key(key: bytes) -> bytes:
    """Return ``key`` if it is 1..511 bytes; raise TypeError/ValueError naming it otherwise."""
    if not isinstance(key, bytes):
        raise TypeError(f"tier keys are bytes, got {type(key).__name__} {key!r:.80}")
    if not 0 < len(key) <= MAX_KEY_BYTES:
        raise ValueError(f"tier key must be 1..{MAX_KEY_BYTES} bytes, got {len(key)}: {key!r:.80}")
    return key


def as_bytes_view(value: bytes | bytearray | memoryview) -> memoryview:
    """A flat unsigned-byte view of ``value`` without copying (it must be C-contiguous)."""
    return memoryview(value).cast("B")


class StoreFailure(Exception):
    """A store could not do what was asked (I/O error, full, unreachable); the tier reports a miss.
    ``reported``: the tier has warned about it already."""

    def __init__(self, message: str, reported: bool = False) -> None:
        super().__init__(message)
        self.reported = reported


class _Unreadable:
    """What ``Tier.read`` gives for each payload asked when the store failed (unreachable, an I/O error): the
    store may still hold it, so its entry stays known (None, absent, drops it)."""

    def __repr__(self) -> str:
        return "UNREADABLE"


UNREADABLE = _Unreadable()


class Tier(ABC):
    """A payload store with a byte capacity and its own books. Re-putting a stored key keeps the stored
    value (keys address content). Tiers never evict on their own and never raise on I/O: a failure is
    logged once per kind and reported as a miss, a refused hold or the last known count."""

    name: str
    capacity: int
    shares_books = False
    trusted_bytes = False
    keeps_decoded = False
    device_views = False

    def __init__(self, name: str, capacity: int) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            raise ValueError(f"{name} tier capacity must be a non-negative int of bytes, got {capacity!r}")
        self.name, self.capacity = name, capacity
        self._warned: set[str] = set()
        self._last_used = 0
        self._used_checked = -1  # the used-bytes count the last repair found true (it may exceed the capacity)

    @property
    def background_cpu_s(self) -> float:
        """CPU seconds this tier's own threads have spent in this process: cache work no caller's clock sees."""
        return 0.0

    def _warn(self, kind: str, message: str, *args: object) -> None:
        """Warn once per kind of failure of this tier."""
        warn_once(self._warned, kind, message, *args)

    @abstractmethod
    def _run(self, write: bool, body: Callable[[Txn], T]) -> T:
        """``body(txn)`` in one transaction, committed if ``write`` and it returns; StoreFailure if the
        store failed (the transaction then changed nothing)."""

    def _attempt(self, kind: str, write: bool, body: Callable[[Txn], T], default: T, what: str = "") -> T:
        """``_run``, turning a store failure into ``default`` (warned about once per ``kind``, as ``what`` failed:
        e.g. the model put) and damaged books into a repair and one retry."""
        for tries in range(2):
            try:
                return self._run(write, body)
            except StoreFailure as exc:
                if not exc.reported:
                    self._warn(kind, "%s tier: %s failed (%s); %s", self.name, what or kind, exc,
                               "nothing was changed" if write else "treating as a miss")
                return default
            except BooksDamaged as exc:
                if tries or not self._repair(str(exc)):
                    return default
        return default

    def _adopt_capacity(self, stored: int) -> None:
        """Use the capacity the store keeps in its books (a shared store has one capacity, whoever asks for
        another), with one warning when this process asked for a different one."""
        if stored != self.capacity:
            self._warn("capacity", "%s tier: the store's capacity is %d bytes, set by the first process that "
                       "used it; this process asked for %d and uses the store's", self.name, stored, self.capacity)
            self.capacity = stored

    def _repair(self, why: str) -> bool:
        """Rebuild the books from the store's contents, with one warning; False if that failed too."""
        try:
            before = self._run(True, books.repair)
        except (StoreFailure, BooksDamaged) as exc:
            self._warn("repair", "%s tier: its books are damaged (%s) and could not be rebuilt (%s)",
                       self.name, why, exc)
            return False
        if before.problems:
            log.warning("%s tier: rebuilt its books from the store (%s; %s)", self.name, why,
                        "; ".join(before.problems[:3]))
        self._used_checked = self._run(False, lambda txn: books.read_u64(txn.get(books.USED), "used bytes"))
        return True

    # ------------------------------------------------------------------ payload bytes
    def get(self, key: bytes) -> Any:
        """The stored value, or None on a miss or any store failure."""
        check_key(key)
        return self._attempt("read", False, lambda txn: txn.get_blob(key), None)

    def get_many(self, keys: Sequence[bytes]) -> list[Any]:
        """``get`` of each key, from one transaction."""
        keys = [check_key(k) for k in keys]
        return self._attempt("read", False, lambda txn: [txn.get_blob(k) for k in keys], [None] * len(keys))

    def read(self, wanted: Sequence[tuple[bytes, int]]) -> list[Any]:
        """Payloads by (digest, expected length), from one transaction: None if absent, ``books.WRONG_LENGTH``
        if the stored length differs (found before its bytes are fetched), ``UNREADABLE`` each if the store
        failed (warned about by the tier)."""
        return self._attempt("read", False, lambda txn: txn.get_blobs(wanted), [UNREADABLE] * len(wanted))

    def put(self, key: bytes, value: bytes | bytearray | memoryview) -> bool:
        """Store a payload outside the books (tier tests and benches; the cache uses ``hold``)."""
        check_key(key)
        src = as_bytes_view(value)
        return self._attempt("write", True, lambda txn: _raw_put(txn, key, src), False)

    def delete(self, key: bytes) -> None:
        """Remove a payload stored with ``put``."""
        check_key(key)
        self._attempt("delete", True, lambda txn: _raw_delete(txn, key), None)

    def __contains__(self, key: bytes) -> bool:
        check_key(key)
        return self._attempt("read", False, lambda txn: txn.blob_size(key) is not None, False)

    # ------------------------------------------------------------------ books
    def hold(self, record: bytes, model_id: str, index: int, digests: Sequence[bytes],
             blobs: Mapping[bytes, Any], origin: str = "") -> Admission:
        """Hold one entry in one transaction (see ``books.hold``); a store failure drops it."""
        return self.hold_many(record, model_id, [(index, digests)], blobs, origin)

    def hold_many(self, record: bytes, model_id: str, entries: Sequence[tuple[int, Sequence[bytes]]],
                  blobs: Mapping[bytes, Any], origin: str = "", release: Sequence[tuple[str, int]] = ()
                  ) -> Admission:
        """Hold several entries of one model in one transaction, all or none (see ``books.hold``), after
        dropping the entries ``release`` names in the same transaction (an eviction to make room costs no
        commit of its own); those stay dropped whether the hold succeeds or not, unless the store fails."""
        def body(txn: Txn) -> Admission:
            txn.prefetch([books.USED, books.CAPACITY])
            for gone_model, indices in _by_model(release).items():
                books.release(txn, gone_model, indices, origin)
            stored = books.read_capacity(txn)
            if stored:
                self._adopt_capacity(stored)
            else:
                txn.set(books.CAPACITY, books.pack_u64(self.capacity))
            used = books.read_u64(txn.get(books.USED), "the used-bytes counter")
            if used > self.capacity and used != self._used_checked:
                raise BooksDamaged(f"used bytes {used} exceed the capacity {self.capacity}")
            return books.hold(txn, record, model_id, entries, blobs, self.capacity, origin)

        return self._attempt("write", True, body, books.DROPPED, f"the put of model {model_id!r}")

    def release(self, model_id: str, index: int, origin: str = "") -> bool:
        """Drop one entry in one transaction (see ``books.release``); False if it was not held."""
        return self.release_many([(model_id, index)], origin) == 1

    def release_many(self, entries: Sequence[tuple[str, int]], origin: str = "") -> int:
        """Drop entries in one transaction (see ``books.release``); how many the tier held."""
        return self._attempt("delete", True, lambda txn: sum(len(books.release(txn, model_id, indices, origin))
                                                             for model_id, indices in _by_model(entries).items()), 0)

    def used_bytes(self) -> int:
        """Payload bytes the store counts (the last known count while it fails)."""
        used = self._attempt("read", False, lambda txn: books.read_u64(txn.get(books.USED), "the used-bytes counter"),
                             None)
        if used is not None:
            self._last_used = used
        return self._last_used

    def audit(self) -> Audit:
        """The books checked against the store's contents (nothing is changed)."""
        return self._run(False, lambda txn: books.audit(txn)[0])

    # ------------------------------------------------------------------ by capability
    def snapshot(self) -> books.Snapshot | None:
        """``shares_books``: every held model with its record, as of one log position."""
        raise NotImplementedError(f"the {self.name} tier does not share its books")

    def changes(self, since: books.Position, last: bytes | None) -> tuple[list[bytes], books.Position] | None:
        """``shares_books``: raw logged changes after ``since`` and the new position (None: resynchronise)."""
        raise NotImplementedError(f"the {self.name} tier does not share its books")

    def record(self, model_id: str) -> bytes | None:
        """``shares_books``: the stored record of ``model_id`` (None if absent or the store fails)."""
        raise NotImplementedError(f"the {self.name} tier keeps no model records")

    def view(self, key: bytes) -> tuple[Any, str] | None:
        """``device_views``: the stored payload as (typed tensor on the device, dtype name), None on a miss."""
        raise NotImplementedError(f"the {self.name} tier serves no device views")

    @abstractmethod
    def close(self) -> None:
        """Release files and connections; the tier is unusable afterwards."""

    def __enter__(self) -> Tier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _by_model(entries: Sequence[tuple[str, int]]) -> dict[str, list[int]]:
    """Entries' indices grouped by model id, in order (a release takes one model's indices at a time)."""
    by_model: dict[str, list[int]] = {}
    for model_id, index in entries:
        by_model.setdefault(model_id, []).append(index)
    return by_model


def _raw_put(txn: Txn, key: bytes, src: memoryview) -> bool:
    if txn.blob_size(key) is None:
        txn.put_blob(key, src)
        used = books.read_u64(txn.get(books.USED), "the used-bytes counter")
        txn.set(books.USED, books.pack_u64(used + len(src)))
    return True


def _raw_delete(txn: Txn, key: bytes) -> None:
    size = txn.delete_blob(key)
    if size is not None:
        used = books.read_u64(txn.get(books.USED), "the used-bytes counter")
        txn.set(books.USED, books.pack_u64(max(0, used - size)))


class SharedTier(Tier):
    """A tier other processes read too: it logs each change of its books and serves snapshots."""

    shares_books = True

    _opening: books.Snapshot | None = None
    _quiet: tuple[books.Position, bytes | None, Any] | None = None  # (since, last, version) of a read that found nothing new

    def _check_on_open(self) -> None:
        """Audit the books against the store; rebuild them if they disagree (orphans of killed writers).
        The snapshot read with the audit is kept for the first ``snapshot`` call."""
        try:
            checked, self._opening = self._run(False, books.survey)
            stored = self._run(False, books.read_capacity)
        except (StoreFailure, BooksDamaged):
            checked = None
        else:
            if stored:
                self._adopt_capacity(stored)
        if checked is None or not checked.healthy:
            self._opening = None
            self._repair("checked on open")

    def room(self, record: bytes, model_id: str, entries: Sequence[tuple[int, Sequence[bytes]]],
             blobs: Mapping[bytes, Any]) -> int:
        """Bytes ``hold_many`` of these entries would be short of now (0: it would not be refused for room),
        read without a write transaction: a full tier's evictions can then go into the hold's own one."""
        return self._attempt("read", False, lambda txn: books.hold(txn, record, model_id, entries, blobs,
                                                                   self.capacity, "", dry=True).short, 0)

    def snapshot(self) -> books.Snapshot | None:
        """Every held model with its record, as of one log position (None if the store fails); the first
        call returns the one read on open if the books have not changed since."""
        opening, self._opening = self._opening, None
        if opening is not None and self._attempt("snapshot", False, books.position, None) == opening.position:
            return opening
        return self._attempt("snapshot", False, books.snapshot, None)

    def changes(self, since: books.Position, last: bytes | None) -> tuple[list[bytes], books.Position] | None:
        """Raw changes after ``since`` and the new position, or None when the reader must resynchronise:
        the log was lost, restored, truncated, trimmed past ``since``, or its change at ``since`` is no longer
        ``last`` (what the reader found there, None for nothing)."""
        version = self._version()
        if version is not None and self._quiet == (since, last, version):
            return [], since  # nothing committed since the log was last read and found to hold nothing new

        def body(txn: Txn) -> tuple[list[bytes], books.Position] | None:
            check = since.seq > 0
            txn.prefetch([books.EPOCH, books.SEQ, *([books.log_key(since.seq)] if check else [])])
            now = books.position(txn)
            fresh = since == books.Position(b"", 0)  # read before the store's first change
            if (now.epoch != since.epoch and not fresh) or now.seq < since.seq or now.seq - since.seq > books.LOG_KEEP:
                return None
            if check and txn.get(books.log_key(since.seq)) != last:
                return None  # the change read there is gone or another: the log was restored or rewritten
            if now.seq == since.seq:
                if now == since and version is not None:  # keyed by the version this snapshot is of, which
                    self._quiet = (since, last, txn.version())  # ``version`` may be ahead of (see LMDB's _version)
                return [], now
            keys = [books.log_key(s) for s in range(since.seq + 1, now.seq + 1)]
            txn.prefetch(keys)
            raw = [txn.get(k) for k in keys]
            if any(r is None for r in raw):
                return None
            return raw, now

        return self._attempt("log read", False, body, ([], since))

    def _version(self) -> Any:
        """A value that changes whenever the store may have changed (another process's write included), read
        without a transaction; None where the store has none (every ``changes`` then reads the log)."""
        return None

    def record(self, model_id: str) -> bytes | None:
        """The stored record of ``model_id`` (None if absent or the store fails)."""
        return self._attempt("read", False, lambda txn: txn.get(books.model_key(b"r", model_id)), None)



class ProcessTier(Tier):
    """A process-local tier: payloads and books in dicts of this process, changed directly (no transaction to
    survive: the books die with the process), no log. Subclasses store values their own way and say their
    size; a hold is all-or-nothing (a failed allocation undoes it)."""

    trusted_bytes = True
    keeps_decoded = True

    def __init__(self, name: str, capacity: int) -> None:
        super().__init__(name, capacity)
        self._values: dict[bytes, Any] = {}  # digest -> stored payload
        self._refs: dict[bytes, int] = {}  # digest -> held entries naming it
        self._held: dict[tuple[str, int], tuple[bytes, ...]] = {}  # entry -> its digests
        self._used = 0

    @abstractmethod
    def _store(self, value: bytes | bytearray | memoryview) -> Any:
        """The stored form of one payload (``value`` as given: bytes, or any C-contiguous buffer); StoreFailure
        if it cannot be allocated."""

    @abstractmethod
    def _nbytes(self, stored: Any) -> int:
        """Bytes one stored value counts against the capacity."""

    @abstractmethod
    def _load(self, stored: Any) -> Any:
        """What ``get`` returns for a stored value."""

    def _run(self, write: bool, body: Callable[[Txn], T]) -> T:
        raise NotImplementedError("a process tier changes its dicts directly")

    def get(self, key: bytes) -> Any:
        stored = self._values.get(check_key(key))
        return None if stored is None else self._load(stored)

    def get_many(self, keys: Sequence[bytes]) -> list[Any]:
        return [self.get(k) for k in keys]

    def read(self, wanted: Sequence[tuple[bytes, int]]) -> list[Any]:
        out = []
        for digest, size in wanted:
            stored = self._values.get(digest)
            out.append(None if stored is None else
                       books.WRONG_LENGTH if self._nbytes(stored) != size else self._load(stored))
        return out

    def put(self, key: bytes, value: bytes | bytearray | memoryview) -> bool:
        if check_key(key) in self._values:
            return True
        try:
            stored = self._store(value)
        except StoreFailure:
            return False
        self._values[key] = stored
        self._used += self._nbytes(stored)
        return True

    def delete(self, key: bytes) -> None:
        stored = self._values.pop(check_key(key), None)
        if stored is not None:
            self._used -= self._nbytes(stored)

    def __contains__(self, key: bytes) -> bool:
        return check_key(key) in self._values

    def hold_many(self, record: bytes, model_id: str, entries: Sequence[tuple[int, Sequence[bytes]]],
                  blobs: Mapping[bytes, Any], origin: str = "", release: Sequence[tuple[str, int]] = ()
                  ) -> Admission:
        if release:
            self.release_many(release)
        held, refs = self._held, self._refs
        todo = []
        fresh: dict[bytes, Any] = {}
        need = 0
        for index, digests in entries:
            if (model_id, index) in held:
                continue
            todo.append(((model_id, index), digests))
            for d in digests:
                if d not in refs and d not in fresh:
                    blob = blobs.get(d)
                    if blob is None:
                        return books.DROPPED
                    fresh[d] = blob
                    need += len(blob) if type(blob) is bytes else memoryview(blob).nbytes
        if not todo:
            return books.HELD
        if self._used + need > self.capacity:
            return books.no_room(self._used + need - self.capacity)
        store = self._store
        try:
            stored = {d: store(blob) for d, blob in fresh.items()}
        except StoreFailure:
            return books.DROPPED  # nothing was changed yet
        self._values.update(stored)
        for entry, digests in todo:
            held[entry] = tuple(digests)
            for d in digests:
                refs[d] = refs.get(d, 0) + 1
        self._used += sum(map(self._nbytes, stored.values()))
        return Admission(True, need)

    def release_many(self, entries: Sequence[tuple[str, int]], origin: str = "") -> int:
        return sum(self.release(model_id, index) for model_id, index in entries)

    def release(self, model_id: str, index: int, origin: str = "") -> bool:
        digests = self._held.pop((model_id, index), None)
        if digests is None:
            return False
        refs, values = self._refs, self._values
        for d in digests:
            count = refs[d] - 1
            if count:
                refs[d] = count
            else:
                del refs[d]
                stored = values.pop(d, None)
                if stored is not None:
                    self._used -= self._nbytes(stored)
        return True

    def used_bytes(self) -> int:
        return self._used

    def audit(self) -> Audit:
        refs: dict[bytes, int] = {}
        for digests in self._held.values():
            for d in digests:
                refs[d] = refs.get(d, 0) + 1
        held = sum(self._nbytes(self._values[d]) for d in refs if d in self._values)
        orphans = sum(self._nbytes(v) for d, v in self._values.items() if d not in refs)
        problems = [f"{len([d for d in refs if d not in self._values])} payloads held entries name are missing"
                    ] if any(d not in self._values for d in refs) else []
        if refs != self._refs:
            problems.append("refcounts disagree with the held entries")
        if self._used != held + orphans:
            problems.append(f"used bytes counted {self._used}, stored payloads are {held + orphans}")
        if orphans:
            problems.append(f"{orphans} payload bytes are named by no entry")
        return Audit(self._used, held, orphans, len(self._held), tuple(problems))

    def close(self) -> None:
        self._values.clear()
        self._refs.clear()
        self._held.clear()
        self._used = 0

    def __len__(self) -> int:
        return len(self._values)
