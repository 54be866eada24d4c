"""A background thread that prepares the pages of a file that a writable map will write next.

The first write through a shared map into a page of a file that no one has written yet costs a page fault:
a fresh page-cache page and (on ext4 and XFS) the block's conversion from reserved to written, several
microseconds of CPU per 4 KiB, paid by whichever thread copies into the map. This thread pays it ahead
instead, in bulk: it reserves the blocks (``allocate``) and calls ``madvise(MADV_POPULATE_WRITE)``
(Linux 5.14+) on the writer's own map of the file (found in /proc/self/maps), which faults each page in as
a write would without changing a byte; the writer's copy is then a plain copy. Neither call changes what
any mapping or file holds, even on an address the writer has just unmapped, so the thread shares no lock
with the file's writers. The calls go through ctypes or ``os`` so that they run without the GIL. The thread
runs at the lowest priority: on a machine whose cores are all busy it prepares pages in what the others
leave, and a write whose pages it has not reached yet faults them in itself, as without the thread.
"""
from __future__ import annotations

import ctypes
import errno
import logging
import mmap
import os
import queue
import sys
import threading
import time

log = logging.getLogger("tensorcache")

_MADV_POPULATE_WRITE = 23
_libc = ctypes.CDLL(None, use_errno=True)
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_fallocate = getattr(_libc, "fallocate64", None) or getattr(_libc, "fallocate", None)
if _fallocate is not None:
    _fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]

AHEAD = (8 * 2**20, 64 * 2**20)  # bytes prepared past the file's last used byte: at least, at most
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EFAULT)  # the disk cannot back the pages now
_GONE = errno.ENOMEM  # the map was replaced since it was looked up: look again at the next wake


def allocate(fd: int, offset: int, length: int) -> None:
    """Allocate the blocks of ``length`` bytes of file ``fd`` from ``offset``, changing none of its bytes, with
    the file system's own call (Linux fallocate(2)). Never by writing: where the file system cannot allocate,
    glibc's posix_fallocate writes a zero byte into each block it reads as zero, which can overwrite what
    another process has just written there through a map. OSError: EOPNOTSUPP where the file system (or
    the platform) cannot allocate, ENOSPC or EDQUOT where the disk has no room."""
    if _fallocate is None:
        raise OSError(errno.EOPNOTSUPP, "no fallocate on this platform")
    while _fallocate(fd, 0, offset, length) != 0:
        code = ctypes.get_errno()
        if code != errno.EINTR:
            raise OSError(code, os.strerror(code))


def populate(address: int, length: int) -> None:
    """Fault in ``length`` bytes of this process's memory from ``address`` (page-aligned) as a write would,
    changing none of them; OSError if the kernel refuses (EINVAL: a kernel without MADV_POPULATE_WRITE;
    ENOMEM: not mapped; EFAULT: a page the disk cannot back)."""
    if _libc.madvise(address, length, _MADV_POPULATE_WRITE) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))


def _kernel_populates() -> bool:
    """Whether this kernel knows MADV_POPULATE_WRITE (Linux 5.14+), tried on one anonymous page."""
    page = mmap.mmap(-1, mmap.PAGESIZE)
    view = ctypes.c_char.from_buffer(page)
    try:
        return _libc.madvise(ctypes.addressof(view), mmap.PAGESIZE, _MADV_POPULATE_WRITE) == 0
    finally:
        del view
        page.close()


POPULATES = _kernel_populates()  # without it a Prefaulter has nothing to do: its owner need not start one


def mapped_at(fd: int, length: int) -> int | None:
    """The address of this process's shared, writable map of the first ``length`` bytes of file ``fd``
    (None if there is none)."""
    st = os.fstat(fd)
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}"
    with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
        for line in f:
            fields = line.split(maxsplit=5)
            if len(fields) < 5 or fields[4] != str(st.st_ino) or fields[3] != device or int(fields[2], 16):
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if fields[1].startswith("rw") and fields[1][3] == "s" and end - start == length:
                return start
    return None


def _lowest_priority() -> None:
    """Run the calling thread at the lowest priority (nice 19; on Linux a thread's own): work ahead of the
    writes may wait for a free core, not take one from the caller's training thread on a busy machine."""
    if not sys.platform.startswith("linux"):  # elsewhere the call would name a process, not this thread
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except OSError as exc:  # no such call here: the thread runs at its process's priority
        log.debug("tensorcache: the page thread keeps its process's priority (%s)", exc)


class Prefaulter:
    """One thread that, each time it is told where the used part of file ``fd`` ends (``wake``), reserves and
    prepares the bytes past it in the process's writable map of the file, as long as the ``limit`` given
    (at most the file's length): twice the largest growth between two wakes ahead, within ``AHEAD``. A full
    disk ends a round quietly (the write that needs the pages reports it); a kernel without the call, or
    anything else that goes wrong, ends the thread with one log line and the writes pay for their pages
    themselves. ``wake`` never blocks, and a wake with the ends of the one before is dropped: a file that
    reuses its freed pages (a full cache evicting in every write) leaves its used end where it was, and
    waking the thread for nothing to do would cost the writer a thread switch per write. ``stop`` ends and
    joins the thread."""

    def __init__(self, fd: int, name: str) -> None:
        self.fd = fd
        self.pid = os.getpid()  # a forked child has no such thread: its owner makes its own
        self.ready = 0  # prepared up to here (past the used end known at the time)
        self.cpu_s = 0.0  # this thread's CPU time spent preparing pages: part of the cache's cost off the caller
        self._used = -1  # the used end at the last wake (-1: none yet)
        self._ahead = AHEAD[0]
        self._map = (0, None)  # (length, address) of the writer's map as last looked up
        self._told: tuple[int, int] | None = None  # the ends of the last wake (the writer's side)
        self._wakes: queue.SimpleQueue[tuple[int, int] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def wake(self, used: int, limit: int) -> None:
        """The file's used bytes end at ``used`` now; prepare past them, but not past ``limit`` (nothing new
        if both are as at the last wake)."""
        if (used, limit) != self._told:
            self._told = (used, limit)
            self._wakes.put((used, limit))

    def stop(self) -> None:
        """End the thread after the range in hand, and wait for it."""
        self._wakes.put(None)
        if self.pid == os.getpid():
            self._thread.join()

    def _loop(self) -> None:
        _lowest_priority()
        while True:
            wake = self._wakes.get()
            while wake is not None and not self._wakes.empty():
                wake = self._wakes.get()  # only the latest counts
            if wake is None:
                return
            started = time.thread_time()
            try:
                self._prepare(*wake)
            except OSError as exc:
                if exc.errno == _GONE:
                    self._map = (0, None)
                if exc.errno in _FULL or exc.errno == _GONE:
                    continue
                log.info("tensorcache: no longer preparing file pages ahead of writes (%s)", exc)
                return
            except Exception as exc:  # never into the writer: the writes go on, paying for their own pages
                log.warning("tensorcache: preparing file pages ahead of writes stopped (%s: %s)",
                            type(exc).__name__, exc)
                return
            finally:
                self.cpu_s += time.thread_time() - started

    def _prepare(self, used: int, limit: int) -> None:
        if self._used >= 0:
            self._ahead = min(AHEAD[1], max(self._ahead, 2 * (used - self._used)))
        self._used = used
        if self._map[0] != limit or self._map[1] is None:  # none found yet, or the writer mapped the file anew
            self._map, self.ready = (limit, mapped_at(self.fd, limit)), 0  # a new map has none of the pages
        address = self._map[1]
        start, until = max(self.ready, used), min(used + self._ahead, limit)
        if address is not None and start < until:  # one call each: every return takes the GIL again
            allocate(self.fd, start, until - start)
            populate(address + start, until - start)
            self.ready = until
