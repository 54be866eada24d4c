import logging
import os
import re
import socket
import threading
import time

import pytest
import redis

from tensorcache.tiers import RedisTier, Tier
from tensorcache.tiers.base import UNREADABLE
from tensorcache.tiers.books import Change, log_key


@pytest.fixture
def raw(redis_url):
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def tier(redis_url, redis_namespace):
    tier = RedisTier(redis_url, capacity=1 << 30, namespace=redis_namespace, chunk_size=1000, required=True)
    yield tier
    tier.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _unreachable_warnings(caplog) -> list[str]:
    return [r.message for r in caplog.records if "unreachable" in r.message]


def test_round_trip_accounting_delete_and_contains(tier):
    assert isinstance(tier, Tier) and tier.name == "redis" and tier.shares_books
    assert tier.put(b"a", b"1234") and tier.put(b"empty", b"") and tier.put(b"view", memoryview(b"xy"))
    assert tier.put(b"a", b"another value")  # present already: kept, not counted twice
    assert tier.get(b"a") == b"1234" and tier.get(b"empty") == b"" and tier.get(b"nope") is None
    assert tier.used_bytes() == 6
    assert b"a" in tier and b"empty" in tier and b"nope" not in tier
    tier.delete(b"a")
    tier.delete(b"nope")
    assert tier.get(b"a") is None and b"a" not in tier and tier.used_bytes() == 2


def _count_round_trips(monkeypatch) -> list[str]:
    trips: list[str] = []
    for cls, name in ((redis.client.Pipeline, "execute"), (redis.Redis, "execute_command")):
        original = getattr(cls, name)
        monkeypatch.setattr(cls, name, lambda self, *a, _f=original, _n=name, **k: trips.append(_n) or _f(self, *a, **k))
    return trips


def _many_values(tier) -> dict[bytes, bytes]:
    values = {b"p%d" % i: os.urandom(50 + i) for i in range(30)}
    values[b"empty"], values[b"big"] = b"", os.urandom(2500)  # chunk_size 1000: 3 chunks
    for key, value in values.items():
        assert tier.put(key, value)
    return values


def test_a_read_of_many_payloads_is_two_round_trips_plus_one_per_chunked_value(tier, monkeypatch):
    from tensorcache.tiers.books import WRONG_LENGTH

    values = _many_values(tier)
    wanted = [(k, len(v)) for k, v in values.items()] + [(b"nope", 3), (b"p1", 7)]
    assert tier.read(wanted[:2]) == [values[b"p0"], values[b"p1"]]  # the server learns the lengths script
    trips = _count_round_trips(monkeypatch)
    assert tier.read(wanted[:31]) == list(values.values())[:31]
    assert trips == ["execute_command"] * 2, trips  # the lengths of all 31 (one script), their values (one MGET)
    trips.clear()
    got = tier.read(wanted)
    assert got[:len(values)] == list(values.values()) and got[-2] is None and got[-1] is WRONG_LENGTH
    # the lengths script, then a pipeline for the two it found no plain value for (absent, chunked: the
    # manifest), the plain values of the right length, the chunked one's chunks
    assert trips == ["execute_command", "execute", "execute_command", "execute_command"], trips


@pytest.mark.parametrize("said", ["NOPERM this user has no permissions to run the 'evalsha' command",
                                  "ERR unknown command 'EVALSHA'", "ERR Unsupported command"])
def test_a_server_that_refuses_scripts_is_read_in_two_round_trips_with_one_warning(tier, raw, monkeypatch, caplog,
                                                                                    said):
    from tensorcache.tiers.books import WRONG_LENGTH

    values = _many_values(tier)
    refused = redis.ResponseError(said)
    monkeypatch.setattr(redis.commands.core.Script, "__call__", lambda *a, **k: (_ for _ in ()).throw(refused))
    wanted = [(k, len(v)) for k, v in values.items()] + [(b"nope", 3), (b"p1", 7)]
    with caplog.at_level(logging.WARNING, logger="tensorcache"):
        for _ in range(2):
            got = tier.read(wanted)
            assert got[:len(values)] == list(values.values()) and got[-2] is None and got[-1] is WRONG_LENGTH
    assert sum("refuses scripts" in r.getMessage() for r in caplog.records) == 1
    trips = _count_round_trips(monkeypatch)
    tier.read(wanted)
    assert len(trips) == 3, trips  # lengths and manifests of all 33, the plain values, the chunked one's chunks


def test_large_values_are_chunked_and_removed_whole(tier, raw, redis_namespace):
    prefix = f"tc:{redis_namespace}:".encode()
    exact, big = os.urandom(1000), os.urandom(3500)
    assert tier.put(b"exact", exact) and tier.put(b"big", big)
    assert tier.get(b"exact") == exact and tier.get(b"big") == big
    assert sorted(raw.keys(prefix + b"*")) == sorted(
        [prefix + k for k in (b"b:u", b"v:exact", b"m:big")] + [prefix + b"c:big:c%d" % i for i in range(4)])
    assert tier.used_bytes() == 4500
    tier.delete(b"big")
    assert sorted(raw.keys(prefix + b"*")) == [prefix + b"b:u", prefix + b"v:exact"]
    assert tier.used_bytes() == 1000


@pytest.mark.parametrize("damage", ["missing", "short", "manifest"])
def test_damaged_chunked_value_is_a_miss(tier, raw, redis_namespace, damage, caplog):
    prefix = f"tc:{redis_namespace}:".encode()
    tier.put(b"big", os.urandom(2500))
    if damage == "missing":
        raw.delete(prefix + b"c:big:c1")
    elif damage == "short":
        raw.set(prefix + b"c:big:c2", b"x")
    else:
        raw.set(prefix + b"m:big", b"garbage")
    with caplog.at_level(logging.WARNING, logger="tensorcache"):
        assert tier.get(b"big") is None
        assert tier.get(b"big") is None
    assert len(caplog.records) == 1


def test_namespaces_never_collide(redis_url, redis_namespace):
    first = RedisTier(redis_url, capacity=100, namespace=redis_namespace + "-1")
    second = RedisTier(redis_url, capacity=100, namespace=redis_namespace + "-2")
    try:
        first.hold(b"r1", "m", 0, [b"k" * 16], {b"k" * 16: b"one"})
        assert second.get(b"k" * 16) is None and b"k" * 16 not in second and second.used_bytes() == 0
        assert second.snapshot().models == [] and not second.release("m", 0)
        assert second.hold(b"r2", "m", 0, [b"k" * 16], {b"k" * 16: b"two!"}).written == 4
        assert first.get(b"k" * 16) == b"one" and second.get(b"k" * 16) == b"two!" and first.used_bytes() == 3
    finally:
        for t in (first, second):
            t.release("m", 0)
            t.close()


def test_changes_are_ordered_shared_and_a_lost_log_is_noticed(redis_url, tier, raw, redis_namespace):
    other = RedisTier(redis_url, capacity=1 << 20, namespace=redis_namespace)
    start = tier.snapshot().position
    for i in range(4):
        (tier if i % 2 else other).hold(b"r%d" % i, f"m{i}", 0, [b"%d" % i * 16], {b"%d" % i * 16: b"v"})
    got, now = tier.changes(start, None)
    assert [Change.decode(c).model_id for c in got] == ["m0", "m1", "m2", "m3"] and now.seq == start.seq + 4
    assert tier.changes(now, got[-1]) == ([], now)
    assert other.release("m0", 0)
    later, after = tier.changes(now, got[-1])
    assert [Change.decode(c).op for c in later] == ["release"]
    raw.delete(f"tc:{redis_namespace}:b:".encode() + log_key(after.seq))  # the newest change is lost
    assert tier.changes(now, got[-1]) is None  # the reader must resynchronise from a snapshot
    raw.delete(f"tc:{redis_namespace}:b:e".encode())  # a new epoch: the books were rebuilt or restored
    other.hold(b"r9", "m9", 0, [b"9" * 16], {b"9" * 16: b"v"})
    assert tier.changes(after, later[-1]) is None
    other.close()


def test_concurrent_puts_of_one_key_count_it_once(redis_url, tier, redis_namespace):
    clients = [RedisTier(redis_url, capacity=1 << 20, namespace=redis_namespace, chunk_size=1000) for _ in range(4)]
    values = {b"k%d" % i: os.urandom(700 + 300 * (i % 3)) for i in range(30)}  # some are chunked
    threads = [threading.Thread(target=lambda c=c: [c.put(k, v) for k, v in values.items()]) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(tier.get(k) == v for k, v in values.items())
    assert tier.used_bytes() == sum(map(len, values.values()))
    for c in clients:
        c.close()


def test_server_errors_are_misses_warned_once(tier, raw, redis_namespace, caplog):
    raw.rpush(f"tc:{redis_namespace}:v:".encode() + b"k" * 16, b"a list where a payload belongs")
    with caplog.at_level(logging.WARNING, logger="tensorcache"):
        assert tier.get(b"k" * 16) is None and tier.get(b"k" * 16) is None
        # a read that failed proves no absence: the payload is unreadable (its entry is kept), not missing
        assert tier.read([(b"k" * 16, 1)]) == [UNREADABLE] and b"k" * 16 not in tier
    assert len([r for r in caplog.records if "WRONGTYPE" in r.message]) == 1  # one per kind of failure
    raw.delete(f"tc:{redis_namespace}:v:".encode() + b"k" * 16)
    assert tier.hold(b"r", "m", 0, [b"k" * 16], {b"k" * 16: b"v"}).held and tier.get(b"k" * 16) == b"v"


def test_dead_server_costs_no_timeouts_and_is_used_again_after_restart(redis_server, caplog):
    tier = RedisTier(redis_server.url, capacity=1 << 20, namespace="fault", required=True)
    assert tier.put(b"before", b"1") and tier.used_bytes() == 1
    redis_server.stop()
    with caplog.at_level(logging.WARNING, logger="tensorcache"):
        start = time.monotonic()
        for i in range(200):
            assert tier.get(b"before") is None
            assert not tier.put(b"k%d" % i, b"v")
            assert b"before" not in tier
            assert tier.snapshot() is None
        assert tier.used_bytes() == 1  # the last count the server gave
        assert time.monotonic() - start < 1.0
        redis_server.start()  # same port, empty server (no persistence)
        deadline = time.monotonic() + 5.0
        while not tier.put(b"after", b"22"):
            assert time.monotonic() < deadline, "the tier did not come back after the server did"
            time.sleep(0.05)
    assert tier.get(b"after") == b"22" and tier.used_bytes() == 2
    assert _unreachable_warnings(caplog) == [
        f"redis at 127.0.0.1:{redis_server.port} unreachable; continuing on local tiers (ConnectionError)"]
    tier.close()


def test_a_silent_server_times_out_once_then_is_skipped(caplog):
    with socket.socket() as listener:  # accepts connections, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        url = f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
        with caplog.at_level(logging.WARNING, logger="tensorcache"):
            start = time.monotonic()
            tier = RedisTier(url, capacity=100, namespace="silent", socket_timeout=0.2)
            assert 0.15 < time.monotonic() - start < 1.0
            start = time.monotonic()
            assert all(tier.get(b"k") is None for _ in range(100))
            assert time.monotonic() - start < 0.1
        assert len(_unreachable_warnings(caplog)) == 1
        tier.close()


def test_unreachable_server_required_or_not_and_password_never_shown(caplog):
    url = f"redis://admin:hunter2@127.0.0.1:{_closed_port()}/0?password=hunter2"
    with pytest.raises(ConnectionError) as info:
        RedisTier(url, capacity=100, namespace="x", required=True)
    message = str(info.value)
    assert "\n" not in message and "unreachable" in message and "hunter2" not in message
    assert "redis://admin:***@127.0.0.1" in message
    with caplog.at_level(logging.WARNING, logger="tensorcache"):
        tier = RedisTier(url, capacity=100, namespace="x")
        assert tier.get(b"k") is None and not tier.put(b"k", b"v")
    assert len(_unreachable_warnings(caplog)) == 1
    assert "hunter2" not in repr(tier) and "hunter2" not in caplog.text
    tier.close()


def test_rejects_bad_arguments(redis_url):
    with pytest.raises(ValueError, match="'a:b'"):
        RedisTier(redis_url, capacity=1, namespace="a:b")
    with pytest.raises(ValueError, match="chunk_size"):
        RedisTier(redis_url, capacity=1, namespace="n", chunk_size=0)
    with pytest.raises(ValueError, match=re.escape("bad redis URL 'http://u:***@h'")):
        RedisTier("http://u:pw@h", capacity=1, namespace="n")


def test_a_key_of_another_type_fails_that_read_and_the_script_stays_in_use(tier, raw, redis_namespace, monkeypatch):
    from tensorcache.tiers.base import UNREADABLE

    assert tier.put(b"ok", b"fine")
    raw.lpush(f"tc:{redis_namespace}:v:".encode() + b"list", b"1")  # not a string: STRLEN refuses it
    assert tier.read([(b"list", 1), (b"ok", 4)]) == [UNREADABLE, UNREADABLE]  # failed, as on the pipeline way
    trips = _count_round_trips(monkeypatch)
    assert tier.read([(b"ok", 4)]) == [b"fine"] and trips == ["execute_command"] * 2  # the script, then MGET
