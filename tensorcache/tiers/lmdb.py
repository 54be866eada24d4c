"""Node-local disk tier: one LMDB environment that every process on the node can open at once.

Values live in the "blobs" database, the catalog log in "log" (big-endian uint64 sequence keys) and
the stored-bytes counter in "meta", which each put/delete updates in its own write transaction, so all
processes agree on it and a process killed mid-put leaves the file as it was before that put.
"""
from __future__ import annotations

import mmap
import os
import struct
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

import lmdb

from .base import Tier, as_bytes_view, check_key, check_start

T = TypeVar("T")
A = TypeVar("A")

_USED = b"used_bytes"
_COUNTER = struct.Struct(">q")
_MAX_READERS = 1024
_SLACK = 32 * 2**20  # room for B-tree pages and snapshots held by readers, beyond 2x capacity
_MAX_TRIES = 64


class _Env:
    """An open environment and its databases; LMDB forbids opening one file twice in a process."""

    def __init__(self, path: str, map_size: int) -> None:
        self.env = self._open(path, map_size)
        # No fsync per commit: a killed process loses nothing (the OS holds the pages) and every read
        # re-checks payload digests; only a machine crash can lose the newest entries of this cache.
        try:
            self.env.reader_check()  # free reader slots left by killed processes
            self.blobs, self.log, self.meta = self._open_dbs()
        except lmdb.Error:
            self.env.close()
            raise
        self.lock = threading.Lock()  # no transaction may be open in this process while the map is resized
        self.users = 0

    @staticmethod
    def _open(path: str, map_size: int) -> lmdb.Environment:
        return _while_resized(lambda: lmdb.open(path, map_size=map_size, max_dbs=3, max_readers=_MAX_READERS,
                                                readahead=False, sync=False, metasync=False),
                              lambda: None, "the environment was opened")  # a fresh open reads the new size

    def _open_dbs(self) -> list[lmdb._Database]:
        return _while_resized(lambda: [self.env.open_db(name) for name in (b"blobs", b"log", b"meta")],
                              lambda: self.env.set_mapsize(0), "the databases were opened")


def _while_resized(attempt: Callable[[], T], adopt: Callable[[], object], what: str) -> T:
    """``attempt()``, again after ``adopt()`` each time another process grew the map meanwhile."""
    for _ in range(_MAX_TRIES):
        try:
            return attempt()
        except lmdb.MapResizedError:
            adopt()
    raise lmdb.MapResizedError(f"the map kept growing while {what}")


_envs: dict[str, _Env] = {}
_envs_lock = threading.Lock()


def _acquire(path: str, map_size: int) -> _Env:
    with _envs_lock:
        shared = _envs.get(path)
        if shared is None:
            shared = _envs[path] = _Env(path, map_size)
        shared.users += 1
        return shared


def _release(path: str, shared: _Env) -> None:
    with _envs_lock:
        shared.users -= 1
        if shared.users == 0:
            del _envs[path]
            shared.env.close()


# Transaction bodies: (environment, transaction, argument) -> result.
def _get(e: _Env, txn: lmdb.Transaction, key: bytes) -> bytes | None:
    view = txn.get(key, db=e.blobs)
    return None if view is None else bytes(view)  # the one copy, made before the transaction ends


def _get_many(e: _Env, txn: lmdb.Transaction, keys: list[bytes]) -> list[bytes | None]:
    return [_get(e, txn, key) for key in keys]


def _contains(e: _Env, txn: lmdb.Transaction, key: bytes) -> bool:
    return txn.get(key, db=e.blobs) is not None


def _used(e: _Env, txn: lmdb.Transaction, _: None) -> int:
    raw = txn.get(_USED, db=e.meta)
    return 0 if raw is None else _COUNTER.unpack(raw)[0]


def _add_used(e: _Env, txn: lmdb.Transaction, delta: int) -> None:
    txn.put(_USED, _COUNTER.pack(max(0, _used(e, txn, None) + delta)), db=e.meta)


def _put(e: _Env, txn: lmdb.Transaction, item: tuple[bytes, memoryview]) -> bool:
    key, value = item
    if txn.put(key, value, db=e.blobs, overwrite=False):  # False: present already, nothing written
        _add_used(e, txn, len(value))
    return True


def _put_many(e: _Env, txn: lmdb.Transaction, items: list[tuple[bytes, memoryview]]) -> bool:
    for item in items:
        _put(e, txn, item)
    return True


def _delete(e: _Env, txn: lmdb.Transaction, key: bytes) -> None:
    view = txn.get(key, db=e.blobs)
    if view is not None:
        size = len(view)
        txn.delete(key, db=e.blobs)
        _add_used(e, txn, -size)


def _append(e: _Env, txn: lmdb.Transaction, record: bytes) -> None:
    cursor = txn.cursor(db=e.log)
    seq = int.from_bytes(cursor.key(), "big") + 1 if cursor.last() else 0
    txn.put(seq.to_bytes(8, "big"), record, db=e.log, append=True)


def _read_log(e: _Env, txn: lmdb.Transaction, start: int) -> tuple[list[bytes], int]:
    cursor = txn.cursor(db=e.log)
    records, nxt = [], start
    if cursor.set_range(start.to_bytes(8, "big")):
        for seq, record in cursor:
            records.append(bytes(record))
            nxt = int.from_bytes(seq, "big") + 1
    return records, nxt


class LMDBTier(Tier):
    """A byte store in the LMDB environment directory ``path`` (created if missing).

    The map starts at ``map_size`` (default: the growth limit, 2x capacity + 32 MiB) and doubles up to
    that limit when full; past it a put is dropped with one warning.
    """

    def __init__(self, path: str | os.PathLike, capacity: int, map_size: int | None = None) -> None:
        super().__init__("lmdb", capacity, shared=True)
        if map_size is not None and (isinstance(map_size, bool) or not isinstance(map_size, int) or map_size <= 0):
            raise ValueError(f"map_size must be a positive int of bytes, got {map_size!r}")
        self.path = os.path.realpath(os.fspath(path))
        self._map_limit = -(-max(map_size or 0, 2 * capacity + _SLACK) // mmap.PAGESIZE) * mmap.PAGESIZE
        try:
            os.makedirs(self.path, exist_ok=True)
            self._env: _Env | None = _acquire(self.path, map_size or self._map_limit)
        except (OSError, lmdb.Error) as exc:
            raise OSError(f"cannot open LMDB tier at {self.path!r}: {exc}") from exc

    def _run(self, kind: str, write: bool, body: Callable[[_Env, lmdb.Transaction, A], T], arg: A,
             default: T) -> T:
        """``body(env, txn, arg)`` in one transaction; on a failure that cannot be fixed, ``default``."""
        shared = self._env
        if shared is None:
            raise ValueError(f"LMDB tier at {self.path!r} is closed")
        with shared.lock:
            try:
                with shared.env.begin(write=write, buffers=True) as txn:
                    return body(shared, txn, arg)
            except lmdb.Error as exc:
                return self._recover(shared, exc, kind, write, body, arg, default)

    def _recover(self, shared: _Env, exc: lmdb.Error, kind: str, write: bool,
                 body: Callable[[_Env, lmdb.Transaction, A], T], arg: A, default: T) -> T:
        """Adopt a map another process grew, or grow a full one, and run ``body`` again; else warn once."""
        try:
            for _ in range(_MAX_TRIES):
                if isinstance(exc, lmdb.MapResizedError):
                    shared.env.set_mapsize(0)
                elif not isinstance(exc, lmdb.MapFullError):
                    raise exc
                elif not self._grow(shared.env):
                    self._warn("full", "LMDB tier at %s is full at its %d-byte map limit; dropping writes",
                               self.path, self._map_limit)
                    return default
                try:
                    with shared.env.begin(write=write, buffers=True) as txn:
                        return body(shared, txn, arg)
                except lmdb.Error as again:
                    exc = again
            raise exc
        except lmdb.Error as failure:
            self._warn(kind, "LMDB tier at %s: %s failed (%s); treating as a miss", self.path, kind, failure)
        return default

    def _grow(self, env: lmdb.Environment) -> bool:
        size = env.info()["map_size"]
        if size >= self._map_limit:
            return False
        env.set_mapsize(min(2 * size, self._map_limit))
        return True

    def get(self, key: bytes) -> bytes | None:
        return self._run("read", False, _get, check_key(key), None)

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """All values from one read transaction (one snapshot, one reader slot)."""
        return self._run("read", False, _get_many, [check_key(key) for key in keys], [None] * len(keys))

    def put(self, key: bytes, value: bytes | bytearray | memoryview) -> bool:
        return self._run("write", True, _put, (check_key(key), as_bytes_view(value)), False)

    def put_many(self, items: Sequence[tuple[bytes, bytes | bytearray | memoryview]]) -> bool:
        """All values in one write transaction: one commit and one writer lock instead of one per tensor
        (commits do not fsync, see ``_Env``), and the layer is stored whole or not at all."""
        batch = [(check_key(key), as_bytes_view(value)) for key, value in items]
        return self._run("write", True, _put_many, batch, False)

    def delete(self, key: bytes) -> None:
        self._run("delete", True, _delete, check_key(key), None)

    def __contains__(self, key: bytes) -> bool:
        return self._run("read", False, _contains, check_key(key), False)

    def used_bytes(self) -> int:
        return self._run("read", False, _used, None, 0)

    def append_log(self, record: bytes) -> None:
        self._run("log append", True, _append, record, None)

    def read_log(self, start: int) -> tuple[list[bytes], int]:
        return self._run("log read", False, _read_log, check_start(start), ([], start))

    def close(self) -> None:
        if self._env is not None:
            _release(self.path, self._env)
            self._env = None

    def __repr__(self) -> str:
        return f"LMDBTier({self.path!r}, capacity={self.capacity})"
