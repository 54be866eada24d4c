"""Node-local disk tier: one LMDB environment that every process on the node can open at once.

Payloads and the tier's books (``books``) live in LMDB's main database under a prefix of the namespace
(then ``b`` for a payload, ``k`` for a book key), so searches sharing one file never see each other. A put, an eviction, a demotion: each
is one write transaction over payloads and books together, so a killed process leaves the file as it
was before, and the books are checked against the payloads on open (orphans reclaimed). A damaged file
(shorter than its own header says) is refused at open with a clear error instead of a SIGBUS later.
Opening takes no write transaction (there are no named databases to create), so a writer stopped while
it holds LMDB's write lock does not block other processes from opening the file and reading it.

On file systems that overwrite a file's blocks in place (ext2/3/4, XFS, tmpfs) the map is writable
(MDB_WRITEMAP): a commit then writes its pages through the map instead of one write call per page at the
end of a growing file, several times cheaper on ext4. The data file is then sparse and as long as the map
(``ls`` shows the map, ``du`` what is used; the map starts small and doubles as it fills). Writing a page
the disk cannot back would kill the process (SIGBUS), so before a write transaction touches a page past
LMDB's last one, the blocks it can reach are allocated (fallocate, which never writes): LMDB's last page,
plus the bytes the transaction writes, a few pages per change and 1 MiB, rounded up to 4 MiB; a disk that
cannot give them refuses the write (a dropped hold and one warning). Every process resizes the file under
one lock and never below its current size, so it never shrinks under another process's map. A process with a file size limit (``ulimit -f``), or a file system
that cannot allocate blocks without writing them (ext2, ext3 without extents), keeps the plain map.
From the environment's opening on and after each write, a thread of the process's own (``prefault``)
reserves the pages just past LMDB's last one and faults them into the map, writable, changing none of their
bytes (twice the largest growth seen, 8 to 64 MiB ahead, within the map), so that the next put, the first
one included, is a plain copy into the map instead of a page fault per 4 KiB on the caller's thread. For the
same reason the map doubles after the write that leaves too little room for two more as large as the
largest one seen, rather than during the write that finds it full (which would start over in the larger map,
its copies made twice and its pages unprepared).
"""
from __future__ import annotations

import errno
import fcntl
import logging
import mmap
import os
import re
import resource
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import lmdb

from ..keys import check_namespace, namespace_key
from .base import SharedTier, StoreFailure
from .books import WRONG_LENGTH, Txn
from .prefault import POPULATES, Prefaulter, allocate

T = TypeVar("T")
log = logging.getLogger("tensorcache")

_MAX_READERS = 1024
_LOCK_BYTES = (_MAX_READERS + 2) * 64  # LMDB's reader table in lock.mdb: a 192-byte header holding one slot, 64 per slot
_SLACK = 32 * 2**20  # room for B-tree pages and snapshots held by readers, beyond 2x capacity
_FIRST_MAP = 64 * 2**20  # a new map's size when none is asked for: it doubles as the file fills
_MAX_TRIES = 64
_TXN_SLACK = 2**20  # reserved past a write transaction's own pages: the free list it saves at commit
_RESERVE_STEP = 4 * 2**20  # disk is reserved in steps of this many bytes (one call per step, not per change)
_IN_PLACE = frozenset({"ext2", "ext3", "ext4", "xfs", "tmpfs"})  # file systems that never copy on write
_META = struct.Struct("<II")  # magic, version at offset 16 of a meta page
_MAGIC = 0xBEEFC0DE


class DamagedFile(OSError):
    """An LMDB data file that does not match its own header (truncated or overwritten)."""


def check_data_file(path: str) -> None:
    """Raise DamagedFile if ``path``/data.mdb is shorter than its newest meta page says, or has no valid
    meta page; LMDB itself would map the missing pages and die of SIGBUS on touching them."""
    name = os.path.join(path, "data.mdb")
    try:
        with open(name, "rb") as f:
            head = f.read(2 * 65536)
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        return
    if size == 0:
        return
    metas = []
    for offset in _meta_offsets(head):
        magic, version = _META.unpack_from(head, offset + 16)
        if magic != _MAGIC or version != 1:
            continue
        psize = struct.unpack_from("<I", head, offset + 40)[0]
        last_page, txn_id = struct.unpack_from("<QQ", head, offset + 136)
        if psize and psize & (psize - 1) == 0:
            metas.append((txn_id, (last_page + 1) * psize))
    if not metas:
        raise DamagedFile(f"{name} has no valid LMDB header")
    _, needed = max(metas)
    if size < needed:
        raise DamagedFile(f"{name} is {size} bytes but its header names {needed}: the file was truncated")


def _meta_offsets(head: bytes) -> list[int]:
    """Offsets of the two meta pages: page 0, and page 1 at the page size page 0 names."""
    if len(head) < 152:
        return []
    out = [0]
    psize = struct.unpack_from("<I", head, 40)[0]
    if 152 <= psize <= len(head) - 152 and psize & (psize - 1) == 0:
        out.append(psize)
    return out


def file_system(path: str) -> str:
    """The type of the file system holding ``path`` as /proc/self/mountinfo names it ("" if it does not)."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return ""
    best, kind = "", ""
    for line in lines:
        left, _, right = line.partition(" - ")
        fields = left.split()
        if len(fields) < 5 or not right:
            continue
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, right.split()[0]
    return kind


def writes_in_place(path: str) -> bool:
    """Whether the file system holding ``path`` overwrites a file's allocated blocks in place, so that a
    write into blocks reserved with fallocate cannot fail later (False for copy-on-write file
    systems, overlays and whatever /proc/self/mountinfo does not name)."""
    return file_system(path) in _IN_PLACE


class _Env:
    """An open environment and its databases; LMDB forbids opening one file twice in a process."""

    def __init__(self, path: str, map_size: int) -> None:
        check_data_file(path)
        self.path = path
        # a sparse map's length could pass a file size limit (ulimit -f) at open, whatever is stored
        reserved = _reserve_lock_file(path)
        self.writemap = (reserved and writes_in_place(path)
                         and resource.getrlimit(resource.RLIMIT_FSIZE)[0] == resource.RLIM_INFINITY)
        self.fd = os.open(os.path.join(path, "data.mdb"), os.O_RDWR | os.O_CREAT, 0o644)
        self.reserved = 0  # the file's blocks are allocated up to here (known to this process)
        try:
            with _file_lock(self.fd):
                size = self._fit_file(map_size)
                self.env = _while_resized(lambda: lmdb.open(path, map_size=size, max_dbs=0,
                                                            max_readers=_MAX_READERS, readahead=False, sync=False,
                                                            metasync=False, writemap=self.writemap),
                                          lambda: None, "the environment was opened")
        except BaseException:
            os.close(self.fd)
            raise
        # No fsync per commit: a killed process loses nothing (the OS holds the pages) and every read
        # re-checks payload digests; only a machine crash can lose the newest entries of this cache.
        try:
            self.env.reader_check()  # free reader slots left by killed processes
        except lmdb.Error:
            self.close()
            raise
        self.lock = threading.Lock()  # no transaction may be open in this process while the map is resized
        self.users = 0
        self.page = self.env.stat()["psize"]
        self.mapped = self.env.info()["map_size"]  # this process's map length: only set_map changes it
        self.prefaulter: Prefaulter | None = None
        self.prefaulting = self.writemap and POPULATES  # a kernel without the call keeps the faults
        self.used = self.used_end()
        self.growth = 0  # the most one write transaction of this process moved LMDB's last page
        self.prepare()  # the first write's pages too, not only the next ones

    def used_end(self) -> int:
        """Where LMDB's last page ends in the file."""
        return (self.env.info()["last_pgno"] + 1) * self.page

    def wrote(self, start: int) -> None:
        """A write transaction that began with LMDB's last page ending at ``start`` committed: note how far it
        moved that end."""
        self.used = self.used_end()
        self.growth = max(self.growth, self.used - start)

    def prepare(self) -> None:
        """Have the pages past LMDB's last one (``used``, as of this process's last look) prepared on this
        process's own thread, within its map (writemap only)."""
        if not self.prefaulting:
            return
        if self.prefaulter is None or self.prefaulter.pid != os.getpid():
            try:
                self.prefaulter = Prefaulter(self.fd, f"tensorcache-lmdb-prefault {self.path}")
            except RuntimeError as exc:  # no thread to be had: the puts pay for their pages themselves
                log.warning("LMDB tier: no thread to prepare pages ahead of writes (%s)", exc)
                self.prefaulting = False
                return
        self.prefaulter.wake(self.used, self.mapped)

    def _fit_file(self, size: int) -> int:
        """The map size to use for ``size`` (0: the one another process set): with writemap, never less
        than the file, which is extended to it first, so that LMDB's own resize of the file can neither
        shrink it under another process's map nor fail after unmapping the old map (OSError if it cannot
        grow, e.g. EFBIG); without writemap, or for a new file that LMDB has yet to write its header
        into, ``size``."""
        now = os.fstat(self.fd).st_size
        if not self.writemap or now == 0:
            return size
        size = max(size, now)
        os.ftruncate(self.fd, size)
        return size

    def set_map(self, size: int) -> None:
        """Map ``size`` bytes of the file (0: adopt the size another process grew the map to)."""
        with _file_lock(self.fd):
            self.env.set_mapsize(self._fit_file(size))
        self.mapped = self.env.info()["map_size"]

    def reserve(self, end: int) -> None:
        """With writemap, allocate the file's blocks up to ``end``, rounded up to whole steps of 4 MiB if the
        disk has them (at most the map), before LMDB writes them through the map; OSError (ENOSPC, EDQUOT)
        if the disk cannot give even ``end``."""
        if not self.writemap or end <= self.reserved:
            return
        limit = self.mapped
        for until in (min(-(-end // _RESERVE_STEP) * _RESERVE_STEP, limit), min(end, limit)):
            try:
                if until > self.reserved:
                    allocate(self.fd, self.reserved, until - self.reserved)
                    self.reserved = until
                return
            except OSError:
                if until <= end:  # the exact amount was refused: the disk is full
                    raise

    def close(self) -> None:
        if self.prefaulter is not None:
            self.prefaulter.stop()
        self.env.close()
        os.close(self.fd)


def _reserve_lock_file(path: str) -> bool:
    """Allocate lock.mdb's blocks before LMDB maps it and writes its reader table through the map: on a full
    disk that write to a sparse page would kill the process (SIGBUS); here it is an OSError (ENOSPC). False
    where the file system cannot allocate blocks (the file stays as LMDB makes it)."""
    fd = os.open(os.path.join(path, "lock.mdb"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        allocate(fd, 0, _LOCK_BYTES)
        return True
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.ENOSYS):
            return False
        raise OSError(exc.errno, f"no disk space for the LMDB lock file {os.path.join(path, 'lock.mdb')}: "
                                 f"{exc.strerror}") from exc
    finally:
        os.close(fd)


@contextmanager
def _file_lock(fd: int) -> Iterator[None]:
    """An exclusive lock on the data file across processes, held while the file is resized."""
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


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
            shared.close()


def _after_fork() -> None:
    """In a forked child: the parent's prefaulters do not run here; the child's first write starts its own."""
    for shared in _envs.values():
        shared.prefaulter = None


os.register_at_fork(after_in_child=_after_fork)


class _Room:
    """The disk one write transaction can reach, reserved before each change it makes (writemap only):
    LMDB's last page (ending at ``used``), 1 MiB, then per change its bytes and a few pages."""

    def __init__(self, shared: _Env, used: int) -> None:
        self.shared, self.page = shared, shared.page
        # a change copies one root-to-leaf path and may split each page on it and add a root
        self.per_change = (2 * shared.env.stat()["depth"] + 2) * self.page
        self.end = used + _TXN_SLACK
        shared.reserve(self.end)

    def add(self, nbytes: int, changes: int = 1) -> None:
        """Reserve for ``changes`` changes that write ``nbytes`` (keys and values) in all."""
        self.end += nbytes + changes * self.per_change
        if self.end > self.shared.reserved:
            self.shared.reserve(self.end)

    def freed(self, nbytes: int) -> int:
        """What deleting a value of ``nbytes`` writes: the free list grows by one page number per page."""
        return 8 * (nbytes // self.page + 1)


class _LMDBTxn(Txn):
    """Books and payloads of one namespace in one LMDB transaction."""

    logs = True

    def __init__(self, txn: lmdb.Transaction, ns: bytes, room: _Room | None = None) -> None:
        self.txn, self.books, self.blobs, self.room = txn, ns + b"k", ns + b"b", room

    def version(self) -> int:
        """The id of the commit this transaction's snapshot ends with."""
        return self.txn.id()

    def get(self, key: bytes) -> bytes | None:
        view = self.txn.get(self.books + key)
        return None if view is None else bytes(view)

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        get, books = self.txn.get, self.books
        return [None if view is None else bytes(view) for view in [get(books + key) for key in keys]]

    def set(self, key: bytes, value: bytes) -> None:
        if self.room:
            self.room.add(len(key) + len(value))
        self.txn.put(self.books + key, value)

    def set_many(self, pairs: Sequence[tuple[bytes, bytes]]) -> None:
        if self.room:
            self.room.add(sum(len(key) + len(value) for key, value in pairs), len(pairs))
        put, books = self.txn.put, self.books
        for key, value in pairs:
            put(books + key, value)

    def delete(self, key: bytes) -> None:
        if self.room:
            self.room.add(0)
        self.txn.delete(self.books + key)

    def delete_many(self, keys: Sequence[bytes]) -> None:
        if self.room:
            self.room.add(0, len(keys))
        delete, books = self.txn.delete, self.books
        for key in keys:
            delete(books + key)

    def keys(self, prefix: bytes) -> Iterator[bytes]:
        return _prefixed(self.txn.cursor(), self.books + prefix, len(self.books))

    def items(self, prefix: bytes) -> list[tuple[bytes, bytes]]:
        full = self.books + prefix
        return list(_prefixed(self.txn.cursor(), full, len(full), values=bytes))

    def blob_sizes(self) -> dict[bytes, int]:
        return dict(_prefixed(self.txn.cursor(), self.blobs, len(self.blobs), values=len))

    def blob_size(self, digest: bytes) -> int | None:
        view = self.txn.get(self.blobs + digest)
        return None if view is None else len(view)

    def get_blob(self, digest: bytes, size: int | None = None) -> bytes | None:
        view = self.txn.get(self.blobs + digest)  # a view of the map: nothing read yet
        if view is None:
            return None
        if size is not None and len(view) != size:
            return WRONG_LENGTH
        return bytes(view)  # the one copy, made before the transaction ends

    def put_blob(self, digest: bytes, value: Any) -> None:
        if self.room:
            self.room.add(len(digest) + memoryview(value).nbytes)
        self.txn.put(self.blobs + digest, value)

    def delete_blob(self, digest: bytes) -> int | None:
        return self._delete_blobs([digest])[0]

    def delete_blobs(self, digests: Sequence[bytes]) -> int:
        return sum(size or 0 for size in self._delete_blobs(digests))

    def _delete_blobs(self, digests: Sequence[bytes]) -> list[int | None]:
        """Delete the payloads; the length each had (None: absent), each read once."""
        get, blobs = self.txn.get, self.blobs
        keys = [blobs + d for d in digests]
        sizes = [None if view is None else len(view) for view in [get(key) for key in keys]]
        held = [(key, size) for key, size in zip(keys, sizes) if size is not None]
        room = self.room
        if room and held:  # before the first delete: each may write pages
            room.add(sum(room.freed(size) for _, size in held), len(held))
        delete = self.txn.delete
        for key, _ in held:
            delete(key)
        return sizes

    def blob_digests(self) -> Iterator[bytes]:
        return _prefixed(self.txn.cursor(), self.blobs, len(self.blobs))


def _prefixed(cursor: lmdb.Cursor, prefix: bytes, strip: int,
              values: Callable[[memoryview], Any] | None = None) -> Iterator[Any]:
    """Keys starting with ``prefix``, less their first ``strip`` bytes, collected before the caller writes;
    with ``values``, (key, ``values(value)``) pairs instead (one cursor pass either way)."""
    out: list[Any] = []
    if cursor.set_range(prefix):
        for item in cursor.iternext(values=values is not None):
            key = bytes(item if values is None else item[0])
            if not key.startswith(prefix):
                break
            out.append(key[strip:] if values is None else (key[strip:], values(item[1])))
    return iter(out)


def _map_limit(capacity: int) -> int:
    """How far the map may grow for a tier of ``capacity`` bytes: 2x capacity + slack, in whole pages."""
    return -(-(2 * capacity + _SLACK) // mmap.PAGESIZE) * mmap.PAGESIZE


class LMDBTier(SharedTier):
    """A payload store with its own books in the LMDB environment directory ``path`` (created if missing).

    The map starts at ``map_size`` (default: 64 MiB, or the growth limit if smaller) and doubles when full up
    to the growth limit, 2x capacity + 32 MiB (or ``map_size`` if larger), taking the limit at once when the
    doubling after would pass it; past it a hold is dropped with one warning. A sparse data file is so at
    most about twice the bytes it holds. OSError if the file is damaged.
    """

    def __init__(self, path: str | os.PathLike, capacity: int, map_size: int | None = None,
                 namespace: str = "default") -> None:
        super().__init__("lmdb", capacity)
        if map_size is not None and (isinstance(map_size, bool) or not isinstance(map_size, int) or map_size <= 0):
            raise ValueError(f"map_size must be a positive int of bytes, got {map_size!r}")
        self.path, self.namespace = os.path.realpath(os.fspath(path)), check_namespace(namespace)
        self._ns = namespace_key(namespace)
        self._map_limit = max(map_size or 0, _map_limit(capacity))
        try:
            os.makedirs(self.path, exist_ok=True)
            self._env: _Env | None = _acquire(self.path, map_size or min(_FIRST_MAP, self._map_limit))
        except (OSError, lmdb.Error) as exc:
            raise OSError(f"cannot open LMDB tier at {self.path!r}: {exc}") from exc
        self._check_on_open()

    def _run(self, write: bool, body: Callable[[Txn], T]) -> T:
        shared = self._env
        if shared is None:
            raise ValueError(f"LMDB tier at {self.path!r} is closed")
        with shared.lock:
            for _ in range(_MAX_TRIES):
                try:
                    with shared.env.begin(write=write, buffers=True) as txn:
                        start = shared.used_end() if write else 0
                        room = _Room(shared, start) if write and shared.writemap else None
                        result = body(_LMDBTxn(txn, self._ns, room))
                    if write:
                        shared.wrote(start)
                        self._grow_ahead(shared)
                        shared.prepare()
                    return result
                except lmdb.MapResizedError:
                    shared.set_map(0)  # another process grew the map: adopt it and run again
                except lmdb.MapFullError:
                    if not self._grow(shared):
                        self._warn("full", "LMDB tier at %s is full at its %d-byte map limit; dropping writes",
                                   self.path, self._map_limit)
                        raise StoreFailure("map full", reported=True) from None
                except lmdb.Error as exc:
                    raise StoreFailure(str(exc)) from None
                except OSError as exc:
                    raise self._no_disk(exc) from None
            raise StoreFailure("the map kept being resized")

    def _no_disk(self, exc: OSError) -> StoreFailure:
        """The failure to report when the disk cannot back the map's next pages (ENOSPC, EFBIG, EDQUOT)."""
        self._warn("disk", "LMDB tier at %s gets no more disk space (%s); dropping writes", self.path, exc)
        return StoreFailure("no disk space", reported=True)

    @property
    def background_cpu_s(self) -> float:
        """CPU seconds the thread preparing this file's pages has spent in this process (one thread per file
        and process, whichever tiers have it open)."""
        shared = self._env
        worker = shared.prefaulter if shared is not None else None
        return worker.cpu_s if worker is not None and worker.pid == os.getpid() else 0.0

    def _version(self) -> int | None:
        """The id of the file's last committed write transaction (any process's, any namespace's), from its
        meta page: LMDB writes a commit's id there a moment before new read transactions start from it."""
        shared = self._env
        if shared is None:
            return None
        with shared.lock:
            return shared.env.info()["last_txnid"]

    def _adopt_capacity(self, stored: int) -> None:
        super()._adopt_capacity(stored)
        self._map_limit = max(self._map_limit, _map_limit(stored))

    def _grow_ahead(self, shared: _Env) -> None:
        """After a write: double the map now, within its growth limit, if two more writes as large as the
        largest seen might not fit in it, so that the next write neither fills the map and starts over (its
        copies made twice) nor copies into pages that were not prepared (the thread prepares the new map's
        next pages after this). A map that cannot grow now is left as it is: the write that needs the room
        grows it or reports, as before."""
        size = shared.mapped
        if shared.used + 2 * shared.growth <= size or size >= self._map_limit:
            return
        try:
            shared.set_map(self._next_map(size, shared.used + 2 * shared.growth))
        except (OSError, lmdb.Error) as exc:
            log.debug("LMDB tier at %s: the map was not grown ahead of the next write (%s)", self.path, exc)

    def _next_map(self, size: int, wanted: int) -> int:
        """The map size after ``size`` that holds ``wanted`` bytes: twice ``size`` or ``wanted``, within the growth
        limit, and the limit itself when the size after that would pass it: one remap fewer where the file settles
        between the last doubling and the limit (after a remap each page of the file faults once more on the next
        write that touches it, a whole file's worth of faults over the next writes of a full tier, which reuse
        its freed pages)."""
        new = min(max(2 * size, wanted), self._map_limit)
        return self._map_limit if 2 * new > self._map_limit else new

    def _grow(self, shared: _Env) -> bool:
        size = shared.mapped
        if size >= self._map_limit:
            return False
        try:
            shared.set_map(self._next_map(size, 0))
        except OSError as exc:
            raise self._no_disk(exc) from None
        return True

    def close(self) -> None:
        if self._env is not None:
            _release(self.path, self._env)
            self._env = None

    def __repr__(self) -> str:
        return f"LMDBTier({self.path!r}, capacity={self.capacity}, namespace={self.namespace!r})"
