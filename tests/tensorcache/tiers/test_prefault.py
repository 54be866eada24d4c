import errno
import logging
import mmap
import os
import sys
import threading
import time

import pytest

from tensorcache.tiers.prefault import AHEAD, Prefaulter, allocate, mapped_at, populate

MiB = 1 << 20


def _threads(name: str) -> int:
    return sum(t.name == name for t in threading.enumerate())


def _wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _sparse_file(tmp_path, length: int) -> tuple[int, bytes]:
    """A file of ``length`` bytes, 1 MiB of random ones then a hole, opened to read and write: (fd, those bytes);
    its tests ask for the ``holes`` fixture."""
    content = os.urandom(MiB)
    (tmp_path / "file").write_bytes(content)
    fd = os.open(tmp_path / "file", os.O_RDWR)
    os.ftruncate(fd, length)
    return fd, content


def _data_end(fd: int, offset: int = 0) -> int:
    """Where the file's first hole past ``offset`` starts: its written or prepared bytes end there."""
    return os.lseek(fd, offset, os.SEEK_HOLE)


def test_mapped_at_finds_the_writable_shared_map_of_a_file_and_populate_changes_no_byte(tmp_path, holes):
    fd, content = _sparse_file(tmp_path, 8 * MiB)
    try:
        assert mapped_at(fd, 8 * MiB) is None
        with mmap.mmap(fd, 8 * MiB) as writer, mmap.mmap(fd, 8 * MiB, prot=mmap.PROT_READ) as reader:
            address = mapped_at(fd, 8 * MiB)
            assert address is not None and mapped_at(fd, 4 * MiB) is None  # the writable one, of that length
            allocate(fd, MiB, 4 * MiB)
            assert _data_end(fd) == MiB  # reserved, not written: a hole
            populate(address, 5 * MiB)
            assert _data_end(fd) >= 5 * MiB
            assert writer[:MiB] == content == reader[:MiB] and writer[MiB:] == bytes(7 * MiB)
    finally:
        os.close(fd)
    with pytest.raises(OSError):  # nothing mapped there any more
        populate(address, MiB)


def test_allocate_reserves_blocks_without_writing_and_refuses_what_it_cannot_allocate(tmp_path, holes):
    fd, content = _sparse_file(tmp_path, 8 * MiB)
    try:
        blocks = os.fstat(fd).st_blocks
        allocate(fd, MiB, 4 * MiB)
        assert os.fstat(fd).st_blocks >= blocks + 4 * MiB // 512  # the blocks are the file's now
        assert _data_end(fd) == MiB and os.pread(fd, 8 * MiB, 0) == content + bytes(7 * MiB)  # none written
    finally:
        os.close(fd)
    read, write = os.pipe()
    try:  # no blocks to allocate: an error, where glibc's posix_fallocate would fall back to writing
        with pytest.raises(OSError) as refused:
            allocate(write, 0, MiB)
        assert refused.value.errno in (errno.ESPIPE, errno.ENODEV, errno.EOPNOTSUPP)
    finally:
        os.close(read)
        os.close(write)


def test_a_prefaulter_prepares_twice_the_growth_past_the_used_end_in_the_writers_map(tmp_path, holes):
    fd, content = _sparse_file(tmp_path, 100 * MiB)  # as long as a writable map
    try:
        writer = mmap.mmap(fd, 45 * MiB)
        worker = Prefaulter(fd, "test-prefault")
        time.sleep(0.05)
        assert _data_end(fd) == MiB  # nothing until woken
        worker.wake(MiB, 100 * MiB)
        time.sleep(0.1)
        assert _data_end(fd) == MiB  # no map of that length: nothing to prepare
        worker.wake(MiB, 45 * MiB)
        _wait_for(lambda: _data_end(fd) == MiB + AHEAD[0], "the least distance ahead")
        worker.wake(11 * MiB, 45 * MiB)  # grew by 10 MiB: 20 MiB ahead now
        _wait_for(lambda: _data_end(fd, 11 * MiB) == 31 * MiB, "twice the growth ahead")
        worker.wake(40 * MiB, 45 * MiB)  # never past the map
        _wait_for(lambda: worker.ready == 45 * MiB, "the end of the map")
        assert _data_end(fd, 40 * MiB) == 45 * MiB
        writer.close()
        bigger = mmap.mmap(fd, 100 * MiB)  # the writer grew its map: the prefaulter finds the new one
        worker.wake(50 * MiB, 100 * MiB)  # 2 x 29 MiB ahead, to the map's end
        _wait_for(lambda: worker.ready == 100 * MiB, "the new map's end")
        assert _data_end(fd, 50 * MiB) == 100 * MiB
        worker.stop()
        assert _threads("test-prefault") == 0
        worker.wake(0, 100 * MiB)  # after stop: nothing runs, nothing raises
        assert bigger[:MiB] == content and bigger[MiB:] == bytes(99 * MiB)
        bigger.close()
    finally:
        os.close(fd)


def test_a_wake_with_the_ends_of_the_last_one_is_dropped(tmp_path, holes, monkeypatch):
    rounds = []
    prepare = Prefaulter._prepare
    monkeypatch.setattr(Prefaulter, "_prepare", lambda self, used, limit: (rounds.append(used), prepare(self, used, limit)))
    fd, _ = _sparse_file(tmp_path, 32 * MiB)
    try:
        with mmap.mmap(fd, 32 * MiB):
            worker = Prefaulter(fd, "test-prefault-same")
            worker.wake(MiB, 32 * MiB)
            _wait_for(lambda: worker.ready == MiB + AHEAD[0], "the first round")
            worker.wake(MiB, 32 * MiB)  # a write that reused freed pages: the used end did not move
            _wait_for(worker._wakes.empty, "the thread to take any wake")  # taken wakes are not merged with later ones
            worker.wake(2 * MiB, 32 * MiB)
            _wait_for(lambda: worker.ready == 2 * MiB + AHEAD[0], "the round for the moved end")
            worker.stop()
        assert rounds == [MiB, 2 * MiB]  # no round, and no thread switch, for the wake that changed nothing
    finally:
        os.close(fd)


def test_a_prefaulter_that_fails_ends_with_one_log_line(tmp_path, caplog):
    (tmp_path / "file").write_bytes(bytes(MiB))
    fd = os.open(tmp_path / "file", os.O_RDONLY)  # no reserving through it: EBADF
    try:
        with open(tmp_path / "file", "r+b") as f, mmap.mmap(f.fileno(), MiB), \
                caplog.at_level(logging.INFO, logger="tensorcache"):
            worker = Prefaulter(fd, "test-prefault-failing")
            worker.wake(0, MiB)
            _wait_for(lambda: _threads("test-prefault-failing") == 0, "the thread to end")
            worker.wake(0, MiB)
            worker.stop()
        assert caplog.text.count("no longer preparing file pages") == 1, caplog.text
    finally:
        os.close(fd)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a thread's own priority is a Linux notion")
def test_the_page_thread_runs_at_the_lowest_priority(tmp_path):
    fd = os.open(tmp_path / "file", os.O_RDWR | os.O_CREAT)
    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    worker = Prefaulter(fd, "test-prefault-nice")
    try:
        thread = next(t for t in threading.enumerate() if t.name == "test-prefault-nice")
        _wait_for(lambda: os.getpriority(os.PRIO_PROCESS, thread.native_id) == 19, "the thread at nice 19")
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before  # the caller keeps its own
    finally:
        worker.stop()
        os.close(fd)
