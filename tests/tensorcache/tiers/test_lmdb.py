import hashlib
import logging
import os
import random
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import lmdb
import numpy as np
import pytest

from tensorcache.tiers import LMDBTier, Tier

# A separate interpreter (what multiprocessing's "spawn" gives) writing self-checking values: 32 bytes of
# blake2b over the payload, then the payload. argv: path tag shared own mode; mode "once" or "loop".
# "loop" puts fresh keys round after round and deletes some of the previous round, until killed.
WORKER = r"""
import hashlib, os, sys
from tensorcache.tiers import LMDBTier
path, tag, shared, own, mode = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
tier = LMDBTier(path, capacity=1 << 30, map_size=1 << 16)

def put(key):
    payload = os.urandom(1 + hashlib.blake2b(key, digest_size=2).digest()[0] * 256)
    assert tier.put(key, hashlib.blake2b(payload, digest_size=32).digest() + payload), key

round = 0
while True:
    for i in range(shared):
        put(b"shared-%d" % i)
    for i in range(own):
        put(b"%s-%d-%d" % (tag, round, i))
        tier.append_log(b"%s-%d-%d" % (tag, round, i))
    if mode == "once":
        break
    print("wrote", round, flush=True)
    for i in range(0, own, 3):
        tier.delete(b"%s-%d-%d" % (tag, round, i))
    round += 1
tier.close()
"""


def _worker(path: Path, tag: str, shared: int, own: int, mode: str = "once") -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WORKER, str(path), tag, str(shared), str(own), mode],
                            stdout=subprocess.PIPE, text=True)


def _scan(path: Path) -> tuple[dict[bytes, bytes], int, list[bytes]]:
    """Every stored value, the stored-bytes counter and the log, read with plain lmdb."""
    with lmdb.open(str(path), max_dbs=3, readonly=True, lock=False) as env:
        blobs, meta, log = env.open_db(b"blobs"), env.open_db(b"meta"), env.open_db(b"log")
        with env.begin() as txn:
            values = dict(txn.cursor(db=blobs))
            raw = txn.get(b"used_bytes", db=meta)
            records = list(txn.cursor(db=log))
    seqs = [int.from_bytes(k, "big") for k, _ in records]
    assert seqs == list(range(len(seqs))), "log sequence numbers must be contiguous from 0"
    return values, (struct.unpack(">q", raw)[0] if raw else 0), [v for _, v in records]


def _check_whole(values: dict[bytes, bytes]) -> None:
    for key, value in values.items():
        assert hashlib.blake2b(value[32:], digest_size=32).digest() == value[:32], f"torn value under {key!r}"


def test_round_trip_returns_bytes_and_accounts(tmp_path):
    tier = LMDBTier(tmp_path / "db", capacity=1 << 20)
    assert isinstance(tier, Tier) and tier.name == "lmdb" and tier.shared and tier.capacity == 1 << 20
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


def test_data_log_and_counter_survive_reopening(tmp_path):
    with LMDBTier(tmp_path / "db", capacity=1 << 20) as tier:
        tier.put(b"k", b"value")
        for i in range(3):
            tier.append_log(b"r%d" % i)
    with LMDBTier(tmp_path / "db", capacity=1 << 20) as tier:
        assert tier.get(b"k") == b"value" and tier.used_bytes() == 5
        tier.append_log(b"r3")
        assert tier.read_log(0) == ([b"r0", b"r1", b"r2", b"r3"], 4)
        assert tier.read_log(2) == ([b"r2", b"r3"], 4)
        assert tier.read_log(4) == ([], 4)


def test_two_tiers_on_one_path_share_the_environment(tmp_path):
    first = LMDBTier(tmp_path / "db", capacity=1000)
    second = LMDBTier(tmp_path / "db", capacity=1000)
    first.put(b"k", b"v")
    second.append_log(b"r")
    assert second.get(b"k") == b"v" and first.read_log(0) == ([b"r"], 1)
    first.close()
    assert second.get(b"k") == b"v"
    second.close()
    with pytest.raises(ValueError, match="closed"):
        second.get(b"k")


def test_map_grows_from_a_tiny_initial_size(tmp_path):
    tier = LMDBTier(tmp_path / "db", capacity=8 << 20, map_size=1 << 15)
    values = {b"k%d" % i: os.urandom(100_000 + i) for i in range(40)}
    assert all(tier.put(k, v) for k, v in values.items())
    assert all(tier.get(k) == v for k, v in values.items())
    assert tier.used_bytes() == sum(map(len, values.values()))
    assert (tmp_path / "db" / "data.mdb").stat().st_size > 4_000_000


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
    assert tier.put(b"mine", b"1")
    worker = _worker(tmp_path / "db", "other", shared=0, own=60)
    assert worker.wait(timeout=60) == 0
    values = {k: tier.get(k) for k in (b"other-0-%d" % i for i in range(60))}
    assert all(v is not None for v in values.values()), "values written under a grown map must be readable"
    _check_whole(values)
    assert tier.used_bytes() == 1 + sum(map(len, values.values())) > 1 << 16
    assert tier.put(b"mine-too", b"22") and b"mine-too" in tier


def test_two_processes_writing_at_once_lose_and_duplicate_nothing(tmp_path):
    workers = [_worker(tmp_path / "db", tag, shared=40, own=40) for tag in ("a", "b")]
    assert [w.wait(timeout=120) for w in workers] == [0, 0]
    values, used, log = _scan(tmp_path / "db")
    expected = {b"shared-%d" % i for i in range(40)} | {b"%s-0-%d" % (t, i) for t in (b"a", b"b") for i in range(40)}
    assert set(values) == expected
    _check_whole(values)
    assert used == sum(map(len, values.values()))
    assert sorted(log) == sorted(b"%s-0-%d" % (t, i) for t in (b"a", b"b") for i in range(40))
    with LMDBTier(tmp_path / "db", capacity=1 << 30) as tier:
        assert tier.used_bytes() == used and tier.read_log(0) == (log, len(log))


def test_a_process_killed_mid_put_leaves_a_consistent_file(tmp_path):
    rng = random.Random(7)
    for attempt in range(4):
        worker = _worker(tmp_path / "db", f"w{attempt}", shared=0, own=30, mode="loop")
        assert worker.stdout.readline().startswith("wrote")  # a round finished; puts are under way
        time.sleep(rng.uniform(0, 0.2))
        worker.send_signal(signal.SIGKILL)
        assert worker.wait(timeout=30) == -signal.SIGKILL
        values, used, _ = _scan(tmp_path / "db")
        assert values, "the killed worker stored nothing"
        _check_whole(values)
        assert used == sum(map(len, values.values()))
    with LMDBTier(tmp_path / "db", capacity=1 << 30) as tier:
        assert tier.used_bytes() == used
        key = rng.choice(sorted(values))
        assert tier.get(key) == values[key]


def test_rejects_bad_arguments(tmp_path):
    (tmp_path / "file").write_bytes(b"not a directory")
    with pytest.raises(OSError, match="file"):
        LMDBTier(tmp_path / "file", capacity=10)
    with pytest.raises(ValueError, match="map_size"):
        LMDBTier(tmp_path / "db", capacity=10, map_size=0)
    with pytest.raises(ValueError, match="capacity"):
        LMDBTier(tmp_path / "db", capacity=-5)
    with LMDBTier(tmp_path / "db", capacity=10) as tier:
        with pytest.raises(ValueError, match="1..511"):
            tier.put(b"k" * 600, b"v")
        with pytest.raises(ValueError, match="-1"):
            tier.read_log(-1)
