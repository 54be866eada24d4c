import errno
import hashlib
import logging
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import lmdb
import numpy as np
import pytest

from tensorcache.tiers import LMDBTier, MemoryTier, Tier
from tensorcache.tiers.lmdb import file_system, writes_in_place
from tensorcache.tiers.prefault import POPULATES

# A separate interpreter (what multiprocessing's "spawn" gives) holding self-checking entries: each payload
# is 32 bytes of blake2b over the rest, and its record names its digest. argv: path tag shared own mode;
# mode "once" or "loop" ("loop" holds fresh entries round after round and releases some of the previous
# round, until killed). Shared entries carry the same bytes in every worker: stored once, counted twice.
WORKER = r"""
import hashlib, random, sys
from tensorcache.tiers import LMDBTier
path, tag, shared, own, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
tier = LMDBTier(path, capacity=1 << 30, map_size=1 << 16)

def hold(model, seed):
    body = random.Random(seed).randbytes(1 + hashlib.blake2b(seed.encode(), digest_size=2).digest()[0] * 256)
    value = hashlib.blake2b(body, digest_size=32).digest() + body
    digest = hashlib.blake2b(value, digest_size=16).digest()
    assert tier.hold(f"{model} {digest.hex()}".encode(), model, 0, [digest], {digest: value}).held, model

round = 0
while True:
    for i in range(shared):
        hold(f"{tag}-shared-{i}", f"shared-{i}")
    for i in range(own):
        hold(f"{tag}-{round}-{i}", f"{tag}-{round}-{i}")
    if mode == "once":
        break
    print("wrote", round, flush=True)
    for i in range(0, own, 3):
        assert tier.release(f"{tag}-{round}-{i}", 0)
    round += 1
tier.close()
"""


def _worker(path: Path, tag: str, shared: int, own: int, mode: str = "once") -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WORKER, str(path), tag, str(shared), str(own), mode],
                            stdout=subprocess.PIPE, text=True)


def _held(tier: LMDBTier) -> dict[str, bytes]:
    """Every held model's payload, each checked whole."""
    out = {}
    for _, record, indices in tier.snapshot().models:
        assert indices == (0,)
        model, digest = record.decode().split()
        value = tier.get(bytes.fromhex(digest))
        assert value is not None and hashlib.blake2b(value[32:], digest_size=32).digest() == value[:32]
        out[model] = value
    return out


def test_round_trip_returns_bytes_and_accounts(tmp_path):
    tier = LMDBTier(tmp_path / "db", capacity=1 << 20)
    assert isinstance(tier, Tier) and tier.name == "lmdb" and tier.shares_books and tier.capacity == 1 << 20
    array = np.arange(100, dtype=np.float64).reshape(10, 10)
    assert tier.put(b"array", array) and tier.put(b"bytes", b"abc") and tier.put(b"view", memoryview(b"xy"))
    got = tier.get(b"array")
    assert isinstance(got, bytes) and np.array_equal(np.frombuffer(got).reshape(10, 10), array)
    assert tier.put(b"bytes", b"something else")  # present already: kept, not counted twice
    assert tier.get(b"bytes") == b"abc" and tier.get(b"missing") is None
    assert tier.used_bytes() == array.nbytes + 5
    assert b"view" in tier and b"missing" not in tier
    tier.delete(b"array")
    tier.delete(b"missing")
    assert b"array" not in tier and tier.used_bytes() == 5
    assert tier.get_many([b"view", b"missing", b"bytes"]) == [b"xy", None, b"abc"]  # one read transaction
    tier.close()


def test_books_and_payloads_survive_reopening_and_orphans_do_not(tmp_path, caplog):
    with LMDBTier(tmp_path / "db", capacity=1 << 20) as tier:
        assert tier.hold(b"record", "m", 0, [b"d" * 16], {b"d" * 16: b"value"}).written == 5
        tier.put(b"o" * 16, b"an orphan no entry names")
    with caplog.at_level(logging.WARNING, logger="tensorcache"), LMDBTier(tmp_path / "db", capacity=1 << 20) as tier:
        assert tier.get(b"d" * 16) == b"value" and tier.get(b"o" * 16) is None  # reclaimed on open
        assert tier.used_bytes() == 5 and tier.audit().healthy and tier.record("m") == b"record"
    assert "rebuilt its books" in caplog.text and "named by no entry" in caplog.text


def test_two_tiers_on_one_path_share_the_environment(tmp_path):
    first = LMDBTier(tmp_path / "db", capacity=1000)
    second = LMDBTier(tmp_path / "db", capacity=1000)
    first.hold(b"r", "m", 0, [b"k" * 16], {b"k" * 16: b"v"})
    assert second.get(b"k" * 16) == b"v" and second.snapshot().models == [("m", b"r", (0,))]
    first.close()
    assert second.get(b"k" * 16) == b"v"
    second.close()
    with pytest.raises(ValueError, match="closed"):
        second.get(b"k")


def test_namespaces_on_one_file_never_see_each_other(tmp_path):
    a = LMDBTier(tmp_path / "db", capacity=1000, namespace="a")
    b = LMDBTier(tmp_path / "db", capacity=1000, namespace="b")
    a.hold(b"r", "m", 0, [b"k" * 16], {b"k" * 16: b"from a"})
    assert b.get(b"k" * 16) is None and b.snapshot().models == [] and not b.release("m", 0)
    assert b.hold(b"r", "m", 0, [b"k" * 16], {b"k" * 16: b"from b"}).written == 6  # not a no-op
    assert b.release("m", 0) and a.get(b"k" * 16) == b"from a" and a.used_bytes() == 6
    a.close()
    b.close()


def test_map_grows_from_a_tiny_initial_size(tmp_path):
    tier = LMDBTier(tmp_path / "db", capacity=8 << 20, map_size=1 << 15)
    values = {b"k%d" % i: os.urandom(100_000 + i) for i in range(40)}
    assert all(tier.put(k, v) for k, v in values.items())
    assert all(tier.get(k) == v for k, v in values.items())
    assert tier.used_bytes() == sum(map(len, values.values()))
    assert (tmp_path / "db" / "data.mdb").stat().st_size > 4_000_000


def test_a_large_tier_starts_with_a_small_map_and_doubles_it(tmp_path):
    # the data file of a sparse, writable map is as long as the map: a 20 GB tier must not start 40 GB long
    tier = LMDBTier(tmp_path / "db", capacity=20 << 30)
    data = tmp_path / "db" / "data.mdb"
    assert data.stat().st_size <= 64 << 20
    values = {b"k%d" % i: os.urandom(8 << 20) for i in range(12)}  # 96 MiB: past the first map
    assert all(tier.put(k, v) for k, v in values.items())
    assert all(tier.get(k) == v for k, v in values.items())
    assert 96 << 20 < data.stat().st_size <= 2 * (96 << 20) + (64 << 20)
    tier.close()


def _prepares(path: str) -> bool:
    """Whether an LMDB tier at ``path`` prepares its next pages on a thread (writable map, kernel 5.14+)."""
    return writes_in_place(path) and POPULATES


def _prefaulting(path: str) -> bool:
    """Whether a thread prepares pages ahead of writes to the LMDB file at ``path`` in this process."""
    return f"tensorcache-lmdb-prefault {os.path.realpath(path)}" in [t.name for t in threading.enumerate()]


def test_after_a_put_the_pages_past_the_last_one_are_prepared(tmp_path, holes):
    # On ext4 and XFS a reserved page that no one has written is a hole to SEEK_HOLE until it is faulted in;
    # LMDB's own pages are data from the file's start, so the first hole is where the prepared pages end
    with LMDBTier(tmp_path / "db", capacity=1 << 30) as tier:
        data = os.open(tmp_path / "db" / "data.mdb", os.O_RDONLY)
        try:
            for i in range(3):
                size = os.path.getsize(tmp_path / "db" / "data.mdb")
                assert tier.put(b"k%d" % i, os.urandom(3 << 20))
                deadline = time.monotonic() + 30
                while (prepared := os.lseek(data, 0, os.SEEK_HOLE) - tier.used_bytes()) < 6 << 20:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.01)
                assert prepared >= 6 << 20, f"the first hole is {prepared} bytes past the stored ones"  # 2 puts
                assert os.path.getsize(tmp_path / "db" / "data.mdb") == size  # within the map: the file as long
        finally:
            os.close(data)
        assert all(tier.get(b"k%d" % i) is not None for i in range(3))


def test_the_first_write_finds_its_pages_prepared(tmp_path, holes):
    # opening the tier starts the thread: nothing written yet, the pages past LMDB's header are prepared
    with LMDBTier(tmp_path / "db", capacity=1 << 30) as tier:
        data = os.open(tmp_path / "db" / "data.mdb", os.O_RDONLY)
        try:
            deadline = time.monotonic() + 30
            while os.lseek(data, 0, os.SEEK_HOLE) < 8 << 20 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert os.lseek(data, 0, os.SEEK_HOLE) >= 8 << 20
        finally:
            os.close(data)
        assert tier.put(b"k", os.urandom(3 << 20)) and tier.used_bytes() == 3 << 20


def test_the_map_grows_after_the_write_before_the_one_that_needs_it(tmp_path):
    # with a writable map the data file is as long as the map: after every write, two more of the same size fit
    if not writes_in_place(str(tmp_path)):
        pytest.skip(f"needs a file system with writable maps, not {file_system(str(tmp_path))!r}")
    with LMDBTier(tmp_path / "db", capacity=1 << 30, map_size=4 << 20) as tier:
        data = tmp_path / "db" / "data.mdb"
        values = {b"k%d" % i: os.urandom(1 << 20) for i in range(24)}
        for key, value in values.items():
            assert tier.put(key, value)
            assert data.stat().st_size - tier.used_bytes() >= 2 << 20, f"no room ahead after {key!r}"
        assert all(tier.get(k) == v for k, v in values.items())
        assert data.stat().st_size <= 2 * (24 << 20)  # doubled, as when full, not more


def test_the_map_takes_its_growth_limit_at_once_when_the_doubling_after_would_pass_it(tmp_path):
    # each remap makes every page of the file fault once more as the next writes reuse it: one remap fewer
    if not writes_in_place(str(tmp_path)):
        pytest.skip(f"needs a file system with writable maps, not {file_system(str(tmp_path))!r}")
    with LMDBTier(tmp_path / "db", capacity=6 << 20, map_size=4 << 20) as tier:  # growth limit: 44 MiB
        data = tmp_path / "db" / "data.mdb"
        lengths = []
        for i in range(24):
            assert tier.put(b"k%d" % i, os.urandom(1 << 20))
            lengths.append(data.stat().st_size >> 20)
        assert sorted(set(lengths)) == [4, 8, 16, 44]  # not 32 on the way: 2 x 32 would pass 44


def test_closing_the_last_tier_on_a_file_joins_its_prefaulting_thread(tmp_path):
    path = str(tmp_path / "db")
    first, second = LMDBTier(path, capacity=1 << 30), LMDBTier(path, capacity=1 << 30)
    assert _prefaulting(path) == _prepares(path)  # started by opening: the first write's pages are prepared too
    assert first.put(b"k", os.urandom(1 << 20))
    assert _prefaulting(path) == _prepares(path)
    first.close()
    assert _prefaulting(path) == _prepares(path)  # the environment is still open
    second.close()
    assert not _prefaulting(path)


def _hold(tier: LMDBTier, model: str, value: bytes) -> bytes:
    """Hold ``value`` as the one layer of ``model``; its digest."""
    digest = hashlib.blake2b(value, digest_size=16).digest()
    assert tier.hold(model.encode(), model, 0, [digest], {digest: value}).held
    return digest


def _hold_in_a_forked_child(path: str) -> tuple[bool, bool]:
    """(the value held read back whole, a prefaulting thread running) in a child forked from the test."""
    with LMDBTier(path, capacity=1 << 30) as tier:
        value = os.urandom(2 << 20)
        return tier.get(_hold(tier, "child", value)) == value, _prefaulting(path)


def test_a_forked_child_writes_with_a_prefaulting_thread_of_its_own(tmp_path):
    path = str(tmp_path / "db")
    with LMDBTier(path, capacity=1 << 30) as tier:
        value = os.urandom(4 << 20)
        digest = _hold(tier, "parent", value)  # the parent's thread is busy while the child forks
        with multiprocessing.get_context("fork").Pool(1) as pool:
            assert pool.apply(_hold_in_a_forked_child, (path,)) == (True, _prepares(path))
        assert tier.get(digest) == value and tier.audit().healthy and tier.audit().entries == 2


def test_full_map_drops_puts_with_one_warning(tmp_path, caplog):
    tier = LMDBTier(tmp_path / "db", capacity=0, map_size=1 << 20)  # growth limit: 32 MiB
    big = np.zeros(40 << 20, dtype=np.uint8)
    with caplog.at_level(logging.WARNING, logger="tensorcache"):
        assert not tier.put(b"big", big)
        assert not tier.put(b"big2", big)
    assert len(caplog.records) == 1 and "full" in caplog.records[0].message
    assert tier.get(b"big") is None and tier.used_bytes() == 0
    assert tier.put(b"small", b"still fine") and tier.get(b"small") == b"still fine"


def test_adopts_a_map_grown_by_another_process(tmp_path):
    tier = LMDBTier(tmp_path / "db", capacity=1 << 30, map_size=1 << 16)
    mine = hashlib.blake2b(b"1", digest_size=32).digest() + b"1"
    assert tier.hold(b"mine " + (b"m" * 16).hex().encode(), "mine", 0, [b"m" * 16], {b"m" * 16: mine}).held
    worker = _worker(tmp_path / "db", "other", shared=0, own=60)
    assert worker.wait(timeout=60) == 0
    values = _held(tier)  # written under a grown map, readable here
    assert len(values) == 61 and tier.used_bytes() == sum(map(len, values.values())) > 1 << 16
    assert tier.hold(b"r", "mine-too", 0, [b"n" * 16], {b"n" * 16: b"22"}).held and b"n" * 16 in tier


def test_a_quiet_log_is_read_again_once_any_process_commits(tmp_path):
    reader = LMDBTier(tmp_path / "db", capacity=1000, namespace="n")
    other = LMDBTier(tmp_path / "db", capacity=1000, namespace="other")
    snap = reader.snapshot()
    since, last = snap.position, snap.last
    reads = []
    run = reader._run
    reader._run = lambda write, body: reads.append(write) or run(write, body)  # counts its transactions
    assert reader.changes(since, last) == ([], since) and reader.changes(since, last) == ([], since)
    assert len(reads) == 1  # nothing committed since the first read found nothing new: not read again
    other.hold(b"r", "m", 0, [b"k" * 16], {b"k" * 16: b"v"})  # a commit, in another namespace
    assert reader.changes(since, last) == ([], since) and len(reads) == 2
    writer = "from tensorcache.tiers import LMDBTier; import sys; t = LMDBTier(sys.argv[1], 1000, namespace='n'); " \
             "assert t.hold(b'r', 'm', 0, [b'k' * 16], {b'k' * 16: b'v'}, 'elsewhere').held; t.close()"
    subprocess.run([sys.executable, "-c", writer, str(tmp_path / "db")], check=True, timeout=60)
    for _ in range(2):  # another process's change, seen each time it is asked for from before it
        raws, now = reader.changes(since, last)
        assert len(raws) == 1 and now.seq == since.seq + 1
    assert len(reads) == 4
    reader.close()
    other.close()


def test_a_log_read_behind_the_last_commit_s_id_does_not_mark_that_commit_read(tmp_path, monkeypatch):
    """LMDB writes a commit's meta page (whose id ``_version`` reads) before the id read transactions start
    from: a version read in between is ahead of the log the read then sees. That read found nothing new, but
    the commit's change is read once it is published, not skipped until the next commit."""
    reader = LMDBTier(tmp_path / "db", capacity=1000, namespace="n")
    writer = LMDBTier(tmp_path / "db", capacity=1000, namespace="n")
    snap = reader.snapshot()
    since, last = snap.position, snap.last
    ahead = reader._version() + 1  # the id the writer's commit gets, its meta page written but not published
    monkeypatch.setattr(reader, "_version", lambda: ahead)
    assert reader.changes(since, last) == ([], since)
    monkeypatch.undo()
    assert writer.hold(b"r", "m", 0, [b"k" * 16], {b"k" * 16: b"v"}, "elsewhere").held
    assert reader._version() == ahead
    raws, now = reader.changes(since, last)
    assert len(raws) == 1 and now.seq == since.seq + 1
    reader.close()
    writer.close()


# argv: path. A process with a 2 GiB map holds 40 MiB (its disk reserved a little further), another opens the
# file asking for a 34 MiB map and writes, then the first writes 2 MiB more and reads all back: through a
# writable map, a page past the end of a file shrunk under it is a SIGBUS.
SMALLER_MAP = r"""
import subprocess, sys
from tensorcache.tiers import LMDBTier
path = sys.argv[1]
big = LMDBTier(path, capacity=1 << 30)
values = {bytes([65 + i]) * 15 + b"!": bytes([i]) * (4 << 20) for i in range(10)}
assert all(big.hold(b"r", k.hex(), 0, [k], {k: v}).held for k, v in values.items())
other = "from tensorcache.tiers import LMDBTier; import sys; t = LMDBTier(sys.argv[1], capacity=1 << 20); assert t.hold(b'r', 'b', 0, [b'b' * 16], {b'b' * 16: b'second'}).held; t.close()"
subprocess.run([sys.executable, "-c", other, path], check=True)
values[b"c" * 16] = b"third" * (2 << 18)
assert big.hold(b"r", "c", 0, [b"c" * 16], {b"c" * 16: values[b"c" * 16]}).held
assert all(big.get(k) == v for k, v in values.items()) and big.get(b"b" * 16) == b"second"
big.close()
"""


def test_a_process_asking_for_a_smaller_map_never_shrinks_the_file_under_another(tmp_path):
    done = subprocess.run([sys.executable, "-c", SMALLER_MAP, str(tmp_path / "db")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, f"exit {done.returncode} (-7: SIGBUS)\n{done.stderr}"


def test_a_file_whose_pages_were_written_one_by_one_opens_serves_and_grows(tmp_path):
    def hold_all(tier: LMDBTier, values: dict[bytes, bytes]) -> bool:
        return all(tier.hold(b"r", k.hex(), 0, [k], {k: v}).held for k, v in values.items())

    values = {b"k%015d" % i: os.urandom(50_000 + i) for i in range(30)}
    with LMDBTier(tmp_path / "db", capacity=1 << 30) as tier:
        assert hold_all(tier, values)
    (tmp_path / "copy").mkdir()
    with lmdb.open(str(tmp_path / "db"), readonly=True, lock=False) as env:
        env.copy(str(tmp_path / "copy"), compact=True)  # written with write(): as long as its pages, not sparse
    with LMDBTier(tmp_path / "copy", capacity=1 << 30) as tier:
        assert all(tier.get(k) == v for k, v in values.items())
        more = {b"m%015d" % i: os.urandom(200_000) for i in range(30)}
        assert hold_all(tier, more)
        assert all(tier.get(k) == v for k, v in {**values, **more}.items())
        assert tier.audit().healthy


def test_a_process_with_a_file_size_limit_opens_and_writes_without_a_sparse_map(tmp_path):
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (8 << 20, 8 << 20)); "
            "from tensorcache.tiers import LMDBTier; t = LMDBTier(sys.argv[1], capacity=1 << 30); "
            "k = b'k' * 16; assert t.hold(b'r', 'm', 0, [k], {k: b'v' * 100_000}).held and t.get(k) == b'v' * 100_000")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "db")], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stderr}"


def test_a_file_system_that_cannot_allocate_blocks_keeps_the_plain_map(tmp_path, monkeypatch):
    def cannot(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.EOPNOTSUPP, "not supported")

    monkeypatch.setattr("tensorcache.tiers.lmdb.allocate", cannot)  # as on ext2, or ext3 without extents
    values = {b"k%015d" % i: os.urandom(100_000) for i in range(20)}
    with LMDBTier(tmp_path / "db", capacity=1 << 30) as tier:
        assert all(tier.hold(b"r", k.hex(), 0, [k], {k: v}).held for k, v in values.items())
        assert all(tier.get(k) == v for k, v in values.items()) and tier.audit().healthy
    assert os.path.getsize(tmp_path / "db" / "data.mdb") < 8 << 20  # written page by page: not a sparse map


def test_two_processes_writing_at_once_lose_and_duplicate_nothing(tmp_path):
    workers = [_worker(tmp_path / "db", tag, shared=40, own=40) for tag in ("a", "b")]
    assert [w.wait(timeout=120) for w in workers] == [0, 0]
    with LMDBTier(tmp_path / "db", capacity=1 << 30) as tier:
        values = _held(tier)
        assert len(values) == 160 and len(set(values.values())) == 120  # shared payloads are stored once
        audit = tier.audit()
        assert audit.healthy and audit.entries == 160
        assert tier.used_bytes() == sum(map(len, set(values.values())))


def test_a_process_killed_mid_put_leaves_a_consistent_file(tmp_path):
    rng = random.Random(7)
    for attempt in range(4):
        worker = _worker(tmp_path / "db", f"w{attempt}", shared=0, own=30, mode="loop")
        assert worker.stdout.readline().startswith("wrote")  # a round finished; puts are under way
        time.sleep(rng.uniform(0, 0.2))
        worker.send_signal(signal.SIGKILL)
        assert worker.wait(timeout=30) == -signal.SIGKILL
        with LMDBTier(tmp_path / "db", capacity=1 << 30) as tier:
            audit = tier.audit()  # before any repair could run: the killed put left nothing behind
            values = _held(tier)
        assert values, "the killed worker stored nothing"
        assert audit.healthy and audit.orphan_bytes == 0 and audit.used == sum(map(len, set(values.values())))


def test_rejects_bad_arguments(tmp_path):
    (tmp_path / "file").write_bytes(b"not a directory")
    with pytest.raises(OSError, match="file"):
        LMDBTier(tmp_path / "file", capacity=10)
    with pytest.raises(ValueError, match="map_size"):
        LMDBTier(tmp_path / "db", capacity=10, map_size=0)
    with pytest.raises(ValueError, match="capacity"):
        LMDBTier(tmp_path / "db", capacity=-5)
    with LMDBTier(tmp_path / "db", capacity=10) as tier:
        with pytest.raises(ValueError, match="1..494"):
            tier.put(b"k" * 600, b"v")
    with pytest.raises(ValueError, match="namespace"):
        LMDBTier(tmp_path / "db", capacity=10, namespace="")


def test_the_page_thread_counts_its_cpu_and_the_cache_reports_it(tmp_path, holes):
    from tensorcache import TensorCache
    cache = TensorCache(memory=0, disk=str(tmp_path / "tier"), disk_capacity="64MB")
    try:
        for i in range(4):
            cache.put(f"m{i}", [i], [{"w": np.full(2**19, i, np.float32)}])
        tier = cache.tiers[-1]
        deadline = time.monotonic() + 30
        while tier.background_cpu_s == 0.0:
            assert time.monotonic() < deadline, "the page thread's CPU was never counted"
            time.sleep(0.01)
        assert cache.stats()["background_cpu_s"] >= tier.background_cpu_s > 0
    finally:
        cache.close()
    assert MemoryTier(1).background_cpu_s == 0.0
