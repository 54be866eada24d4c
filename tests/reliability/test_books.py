"""Shared tiers keep their own books: orphans are reclaimed, demotions are seen by every process, garbled
bookkeeping is rebuilt instead of disabling a tier, readers notice a lost or restored log, the log stays
bounded, namespaces isolate on LMDB, and a value's length is checked before its bytes are read."""
from __future__ import annotations

import logging
import os
import signal
import struct
import subprocess
import sys
import time
import tracemalloc

import lmdb
import numpy as np
import pytest
import redis

from tensorcache import TensorCache
from tensorcache.keys import namespace_key
from tensorcache.payload import encode
from tensorcache.tiers import books


def _books_key(namespace: str, key: bytes) -> bytes:
    """Where the LMDB tier keeps one of its book keys."""
    return namespace_key(namespace) + b"k" + key


def test_demotions_into_a_shared_tier_are_seen_by_every_process_and_leave_no_orphan(tmp_path, layers_of):
    settings = {"memory": "250KB", "disk": tmp_path / "c.lmdb", "disk_capacity": "450KB", "policy": "fifo"}
    a, b = TensorCache(**settings), TensorCache(**settings)
    for m in range(4):
        (a if m % 2 else b).put(f"m{m}", (m, 0), layers_of(m, 2, 20_000))  # 80 kB a layer
    for cache in (a, b):
        assert cache.check_invariants() == [], "used bytes must be what held entries name, no orphans"
    audit = a.tiers[-1].audit()
    assert audit.healthy and audit.used == audit.held_bytes > 0
    seen = {m for m in range(4) if b.best_donor((m, 0)) == f"m{m}"}
    assert seen == {m for m in range(4) if a.best_donor((m, 0)) == f"m{m}"}
    a.close()
    b.close()


@pytest.mark.parametrize("damage", ["flipped-bit", "three-bytes", "huge"])
def test_a_garbled_lmdb_counter_is_rebuilt_and_the_tier_keeps_working(tmp_path, layers_of, genuine, damage, caplog):
    path = tmp_path / "c.lmdb"
    with TensorCache(memory=0, disk=path, disk_capacity="1MB") as cache:
        cache.put("m1", (1, 2), layers_of(1, 2))
        used = cache.tiers[0].used_bytes()
    with lmdb.open(str(path)) as env, env.begin(write=True) as txn:
        key = _books_key("default", books.USED)
        value = {"flipped-bit": struct.pack(">Q", used ^ (1 << 40)), "three-bytes": b"\x00\x01\x02",
                 "huge": struct.pack(">Q", 2**62)}[damage]
        txn.put(key, value)
    with caplog.at_level(logging.WARNING, logger="tensorcache"), TensorCache(memory=0, disk=path,
                                                                              disk_capacity="1MB") as cache:
        assert cache.put("m2", (2, 2), layers_of(2, 2)).written > 0  # neither 0 nor an exception
        assert cache.stats()["tiers"]["lmdb"]["used_bytes"] == 2 * used
        genuine(cache.lookup((1, 2)), {"m1": (1, 2)}, (1, 2))
        assert cache.check_invariants() == []
    assert "rebuilt its books" in caplog.text


@pytest.mark.parametrize("value", [b"garbage", str(2**62).encode(), struct.pack(">Q", 2**62), b"\xff" * 8])
def test_a_garbled_redis_counter_never_escapes_and_is_rebuilt(redis_url, redis_namespace, layers_of, genuine, value):
    settings = {"memory": 0, "redis": redis_url, "namespace": redis_namespace, "redis_capacity": "1MB"}
    with TensorCache(**settings) as cache:
        cache.put("m1", (1, 2), layers_of(1, 2))
        used = cache.tiers[0].used_bytes()
        with redis.Redis.from_url(redis_url) as raw:
            raw.set(f"tc:{redis_namespace}:b:u".encode(), value)
        assert cache.stats()["tiers"]["redis"]["used_bytes"] in (used, struct.unpack(">Q", value)[0]
                                                                 if len(value) == 8 else used)
        assert cache.put("m2", (2, 2), layers_of(2, 2)).written > 0
        assert cache.stats()["tiers"]["redis"]["used_bytes"] == 2 * used
        genuine(cache.lookup((1, 2)), {"m1": (1, 2)}, (1, 2))
        assert cache.check_invariants() == []


def test_garbled_log_and_sequence_keys_are_a_resync_not_an_exception(redis_url, redis_namespace, layers_of, caplog):
    settings = {"memory": 0, "redis": redis_url, "namespace": redis_namespace}
    writer, reader = TensorCache(**settings), TensorCache(**settings)
    writer.put("m1", (1, 2), layers_of(1, 2))
    assert reader.best_donor((1, 2)) == "m1"
    with redis.Redis.from_url(redis_url) as raw:
        raw.set(f"tc:{redis_namespace}:b:s".encode(), b"\xff" * 8)  # a sequence number from nowhere
    writer.put("m2", (2, 2), layers_of(2, 2))
    with caplog.at_level(logging.WARNING, logger="tensorcache"):
        assert reader.best_donor((2, 2)) == "m2" and reader.best_donor((1, 2)) == "m1"
    reader.stats()
    writer.close()
    reader.close()


def test_readers_notice_a_lost_truncated_or_restored_log_and_resynchronise(redis_url, redis_namespace, layers_of,
                                                                          caplog):
    settings = {"memory": "1MB", "redis": redis_url, "namespace": redis_namespace}
    writer, reader = TensorCache(**settings), TensorCache(**settings)
    prefix = f"tc:{redis_namespace}:b:".encode()
    with redis.Redis.from_url(redis_url) as raw, caplog.at_level(logging.WARNING, logger="tensorcache"):
        for m in range(3):
            writer.put(f"m{m}", (m, 1), layers_of(m, 2))
        assert reader.best_donor((2, 1)) == "m2"
        writer.put("m3", (3, 1), layers_of(3, 2))
        seq = struct.unpack(">Q", raw.get(prefix + b"s"))[0]
        raw.delete(prefix + books.log_key(seq))  # the log loses a change the reader has not read
        assert reader.best_donor((3, 1)) == "m3"
        raw.set(prefix + b"s", struct.pack(">Q", seq - 2))  # restored from an older snapshot: a shorter log
        for k in range(seq - 1, seq + 1):
            raw.delete(prefix + books.log_key(k))
        writer.put("m4", (4, 1), layers_of(4, 2))
        assert reader.best_donor((4, 1)) == "m4"
        raw.delete(prefix + b"e")  # the epoch is gone too: a server restarted with other books
        writer.put("m5", (5, 1), layers_of(5, 2))
        assert reader.best_donor((5, 1)) == "m5"
    resyncs = [r for r in caplog.records if "resynchronised" in r.getMessage()]
    assert reader.stats()["resyncs"] >= 3  # one log line each time, in each process that resynchronised
    assert len(resyncs) == reader.stats()["resyncs"] + writer.stats()["resyncs"]
    writer.close()
    reader.close()


def test_the_change_log_stays_bounded_and_a_reader_left_behind_resynchronises(tmp_path, layers_of, monkeypatch):
    monkeypatch.setattr(books, "LOG_KEEP", 8)
    path = tmp_path / "c.lmdb"
    writer, reader = TensorCache(memory=0, disk=path), TensorCache(memory=0, disk=path)
    assert reader.best_donor((0, 1)) is None
    for m in range(30):
        writer.put(f"m{m}", (m, 1), layers_of(m, 2))
    writer.close()
    reader.close()
    with lmdb.open(str(path)) as env, env.begin() as txn:
        logged = [k for k, _ in txn.cursor() if k.startswith(_books_key("default", b"l:"))]
    assert len(logged) == 8  # 60 changes, 8 kept
    reader = TensorCache(memory=0, disk=path)
    assert all(reader.best_donor((m, 1)) == f"m{m}" for m in range(30))
    reader.close()


def test_a_memory_only_cache_keeps_no_log(layers_of):
    cache = TensorCache(memory="1MB")
    for m in range(200):
        cache.put(f"m{m}", (m, 1), layers_of(m, 2))
    memory = cache.tiers[0]
    assert not memory.shares_books
    assert memory.used_bytes() == memory.audit().held_bytes  # payloads only: books hold no change log


def test_namespaces_on_one_lmdb_file_isolate_models_puts_and_evictions(tmp_path, layers_of, genuine):
    path = tmp_path / "c.lmdb"
    a = TensorCache(memory=0, disk=path, disk_capacity="20KB", namespace="a", policy="fifo")
    b = TensorCache(memory=0, disk=path, disk_capacity="20KB", namespace="b", policy="fifo")
    a.put("m1", (1, 2), layers_of(1, 2))
    assert b.lookup((1, 2)) is None and b.stats()["models"] == 0
    assert b.put("m1", (1, 2), layers_of(2, 2)).written > 0  # the same id in B is B's own model
    for m in range(3, 12):
        b.put(f"m{m}", (m, 2), layers_of(m, 2))  # B evicts its own models only
    genuine(a.lookup((1, 2)), {"m1": (1, 2)}, (1, 2))
    assert a.check_invariants() == [] and b.check_invariants() == []
    a.close()
    b.close()


def test_a_huge_value_under_a_small_payloads_key_is_not_read(redis_url, redis_namespace, tmp_path, layers_of):
    huge = b"\0" * (64 << 20)
    for settings in ({"disk": tmp_path / "c.lmdb"}, {"redis": redis_url, "namespace": redis_namespace}):
        with TensorCache(memory=0, **settings) as writer:
            writer.put("m1", (1, 2), layers_of(1, 2))
        digest = encode(layers_of(1, 2)[1]["w1"])[0]
        if "disk" in settings:
            with lmdb.open(str(tmp_path / "c.lmdb"), map_size=1 << 30) as env, env.begin(write=True) as txn:
                txn.put(namespace_key("default") + b"b" + digest, huge)
        else:
            with redis.Redis.from_url(redis_url) as raw:
                raw.set(f"tc:{redis_namespace}:v:".encode() + digest, huge)
        reader = TensorCache(memory=0, **settings)
        tracemalloc.start()
        start = time.monotonic()
        hit = reader.lookup((1, 2))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert hit.prefix_len == 1 and reader.stats()["corrupt"] == 1
        assert peak < 4 << 20 and time.monotonic() - start < 1.0, (settings, peak)
        reader.close()


@pytest.mark.parametrize("keep", [0.75, 0.5, 0.1])
def test_a_truncated_lmdb_file_is_refused_at_open_and_the_search_goes_on(lmdb_store, python, keep):
    path = lmdb_store.path
    python("""
import sys
from tensorcache import TensorCache
with TensorCache(memory=0, disk=sys.argv[1], disk_capacity="64MB") as cache:
    for m in range(40):
        cache.put(f"m{m}", (m, 1), make_layers(m, 2, 20_000))
""", str(path))
    os.truncate(path / "data.mdb", int(lmdb_store.in_use() * keep))
    done = python("""
import sys
from tensorcache import TensorCache
cache = TensorCache(memory="1MB", disk=sys.argv[1])
assert [t.name for t in cache.tiers] == ["memory"], cache.tiers
cache.put("fresh", (1, 1), make_layers(1, 2))
assert cache.lookup((1, 1)).donor == "fresh"
print("went on")
""", str(path))
    assert "went on" in done.stdout and "LMDB tier refused" in done.stderr and "truncated" in done.stderr


STOPPED_WRITER = r"""
import sys, time, lmdb
env = lmdb.open(sys.argv[1])
txn = env.begin(write=True)  # holds LMDB's write lock, then stops
print("locked", flush=True)
time.sleep(600)
"""


def test_a_writer_stopped_while_it_holds_the_write_lock_does_not_block_readers_opening(tmp_path, python, layers_of):
    path = tmp_path / "c.lmdb"
    with TensorCache(memory=0, disk=path) as cache:
        cache.put("m1", (1, 2), layers_of(1, 2))
    holder = subprocess.Popen([sys.executable, "-c", STOPPED_WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        holder.send_signal(signal.SIGSTOP)
        start = time.monotonic()
        python("""
import sys
from tensorcache import TensorCache
cache = TensorCache(memory="1MB", disk=sys.argv[1])
hit = cache.lookup((1, 2))
assert hit is not None and hit.donor == "m1" and hit.prefix_len == 2
""", str(path), timeout=60)
        assert time.monotonic() - start < 30
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


def test_bad_inputs_are_named(layers_of):
    cache = TensorCache(memory="1MB")
    for arch, named in [((2**63, 1), "0..9223372036854775807"), ((float("inf"), 1), "inf"), ("12", "'12'"),
                        ((True, False), "True"), ((1.5, 2), "1.5"), ((), "non-empty")]:
        with pytest.raises(ValueError, match=named.replace(".", r"\.").replace("(", r"\(")):
            cache.put("m", arch, layers_of(1, max(1, len(arch)) if not isinstance(arch, str) else 2))
    with pytest.raises(ValueError, match="9 dimensions"):
        cache.put("m", (1,), [{"w": np.zeros([1] * 9, np.float32)}])
    assert cache.stats()["models"] == 0


def test_nan_scores_rank_last(layers_of):
    cache = TensorCache(memory="1MB")
    cache.put("nan", (1, 2), layers_of(1, 2), score=float("nan"))
    cache.put("good", (1, 3), layers_of(2, 2), score=0.95)
    cache.put("none", (1, 4), layers_of(3, 2))
    assert cache.best_donor((1, 9)) == "good"


def test_big_endian_arrays_come_back_with_their_values(layers_of):
    cache = TensorCache(memory="1MB")
    values = np.arange(8, dtype=">f8")
    cache.put("be", (1,), [{"w": values}])
    assert np.array_equal(cache.lookup((1,)).layers[0]["w"], values)
