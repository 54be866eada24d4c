"""Redis faults: killed mid-search and restarted, unreachable at start, password and TLS URLs, no secret logged."""
from __future__ import annotations

import contextlib
import itertools
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tensorcache import TensorCache

WIDTH = 256  # float32 values per layer: about 1.1 kB per stored payload


def _unreachable(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _until(condition, seconds: float = 10.0, what: str = "condition"):
    """Poll ``condition()`` until it returns something truthy (the tier backs off after an outage)."""
    deadline = time.monotonic() + seconds
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return result


def test_redis_killed_mid_search_is_a_miss_warned_once_per_outage_and_used_again(redis_server, layers_of,
                                                                                 genuine, caplog):
    archs: dict[str, tuple[int, ...]] = {}
    worker = TensorCache(memory=6_000, redis=redis_server.url, policy="lru", namespace="search")

    def put(cache: TensorCache, m: int, arch: tuple[int, ...]) -> int:
        archs[f"m{m}"] = arch
        return cache.put(f"m{m}", arch, layers_of(m, 3, WIDTH), score=float(m)).written

    for m in range(8):
        put(worker, m, (m, 0, 0))
    assert worker.lookup((0, 0, 1)).slowest_tier == "redis"  # m0 left the small memory tier long ago
    with caplog.at_level(logging.WARNING, logger="tensorcache"):
        for outage in range(2):
            redis_server.stop()
            start = time.monotonic()
            for m in range(10 + 40 * outage, 40 + 40 * outage):  # the search goes on without Redis
                child = (m % 10, 1, 0)
                hit = worker.lookup(child)
                if hit is not None:
                    assert hit.slowest_tier == "memory"
                    genuine(hit, archs, child)
                assert put(worker, m, (m, 1, 0)) > 0  # stored in memory, the Redis copy dropped
                worker.notify_evaluation()
            assert time.monotonic() - start < 5.0, "a dead server must not cost a timeout per call"
            assert len(_unreachable(caplog)) == outage + 1, "one warning per outage, not one per call"
            redis_server.start()  # same port, empty (no persistence)
            fresh = itertools.count(10_000 * (outage + 1))
            with redis.Redis.from_url(redis_server.url) as raw:
                _until(lambda: put(worker, m := next(fresh), (m, 2, 0)) and raw.get(b"tc:search:b:u"),
                       what="puts to reach Redis again")
    assert worker.lookup((0, 0, 0)) is None  # m0 lived only in the lost Redis: a miss, not an error
    stats = worker.stats()
    assert stats["dropped_puts"] > 0 and stats["corrupt"] == 0
    # another worker joins after the restart; each sees what the other puts, through Redis
    other = TensorCache(memory=6_000, redis=redis_server.url, policy="lru", namespace="search",
                        redis_required=True)
    assert put(other, 2000, (7, 7, 7)) > 0
    hit = _until(lambda: worker.lookup((7, 7, 7)), what="the first worker to see the second worker's model")
    assert hit.donor == "m2000" and hit.slowest_tier == "redis" and hit.prefix_len == 3
    genuine(hit, archs, (7, 7, 7))
    assert put(worker, 2001, (8, 8, 8)) > 0
    hit = other.lookup((8, 8, 8))
    assert hit.donor == "m2001" and hit.slowest_tier == "redis"
    genuine(hit, archs, (8, 8, 8))
    worker.close()
    other.close()


@contextlib.contextmanager
def _within(seconds: float) -> Iterator[None]:
    """Fail with TimeoutError if the block runs longer than ``seconds`` (a lookup that loops never returns)."""
    def expire(*_: object) -> None:
        raise TimeoutError(f"still running after {seconds} s")

    before = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, before)


@pytest.mark.parametrize("outage", ["killed", "stopped"])
def test_a_redis_down_between_put_and_lookup_is_a_miss_its_entries_kept_and_served_again(
        redis_server, outage, layers_of, genuine, caplog):
    """Killed (restarted from its RDB snapshot) or stopped (SIGSTOP, then SIGCONT): while it is down a lookup
    of a model only Redis holds is a miss, a better donor only Redis holds is passed over for one in memory,
    puts are kept in memory and refused by Redis; one warning in all; its entries stay known, and once it is
    back they are served from it again."""
    if outage == "killed":
        redis_server.stop()
        redis_server.save = "3600 1"
        redis_server.start()
    archs = {f"m{m}": (m, 0, 0) for m in range(6)} | {"m100": (0, 0, 0), "m200": (9, 9, 9)}
    cache = TensorCache(memory=6_000, redis=redis_server.url, policy="lru", namespace="down")
    for m in range(6):
        cache.put(f"m{m}", archs[f"m{m}"], layers_of(m, 3, WIDTH), score=float(m))
    cache.put("m100", archs["m100"], layers_of(100, 3, WIDTH), score=-1.0)  # a worse donor of m0's architecture
    assert cache.best_donor(archs["m0"]) == "m0" and cache.local_models() == {"m100", "m5"}
    held = cache.stats()["tiers"]["redis"]["entries"]
    dropped = cache.stats()["dropped_puts"]
    if outage == "killed":
        with redis.Redis.from_url(redis_server.url) as raw:
            raw.save()
        redis_server.stop()  # SIGKILL: no save on the way down
    else:
        redis_server.pause()
    with caplog.at_level(logging.WARNING, logger="tensorcache"), _within(30):
        for _ in range(3):
            hit = cache.lookup(archs["m0"])  # m0 is unreadable now: m100 serves from memory
            assert hit.donor == "m100" and hit.slowest_tier == "memory" and hit.prefix_len == 3
            genuine(hit, archs, archs["m0"])
            for m in range(1, 6):
                assert cache.lookup(archs[f"m{m}"]) is None
                assert cache.best_donor(archs[f"m{m}"]) == f"m{m}"  # still known: not released
        assert cache.put("m200", archs["m200"], layers_of(200, 3, WIDTH)).written > 0  # kept in memory
        assert cache.lookup(archs["m200"]).slowest_tier == "memory"
        assert [p for p in cache.check_invariants() if p.startswith("redis: not checked")] != []  # not a raise
    assert [r.getMessage() for r in caplog.records] == _unreachable(caplog) and len(caplog.records) == 1
    stats = cache.stats()
    assert stats["tiers"]["redis"]["entries"] == held and stats["corrupt"] == 0
    assert stats["dropped_puts"] == dropped + 1  # Redis refused m200
    if outage == "killed":
        redis_server.start()  # from its snapshot: the same books and payloads
    else:
        redis_server.resume()
    for m in range(6):
        hit = _until(lambda: cache.lookup(archs[f"m{m}"]), seconds=40, what=f"m{m} to be served from Redis again")
        assert hit.donor == f"m{m}" and hit.slowest_tier == "redis" and hit.prefix_len == 3
        genuine(hit, archs, archs[f"m{m}"])
    assert cache.check_invariants() == []
    cache.close()


def test_puts_while_redis_is_down_reach_the_lmdb_tier(redis_server, tmp_path, layers_of, genuine, caplog):
    disk = tmp_path / "node.lmdb"
    archs = {f"m{m}": (m, 1) for m in range(6)}
    cache = TensorCache(memory=6_000, disk=disk, redis=redis_server.url, policy="lru", namespace="down")
    cache.put("m0", archs["m0"], layers_of(0, 2, WIDTH))
    assert cache.stats()["tiers"]["redis"]["entries"] == 2 and cache.stats()["tiers"]["lmdb"]["entries"] == 0
    redis_server.stop()
    with caplog.at_level(logging.WARNING, logger="tensorcache"):
        for m in range(1, 6):
            assert cache.put(f"m{m}", archs[f"m{m}"], layers_of(m, 2, WIDTH)).written > 0
    assert len(caplog.records) == 1 and len(_unreachable(caplog)) == 1
    stats = cache.stats()
    assert stats["dropped_puts"] == 5 and stats["tiers"]["lmdb"]["entries"] >= 10
    cache.close()
    with TensorCache(memory=0, disk=disk, namespace="down") as later:  # the node's next process
        for m in range(1, 6):
            hit = later.lookup(archs[f"m{m}"])
            assert hit.donor == f"m{m}" and hit.slowest_tier == "lmdb"
            genuine(hit, archs, archs[f"m{m}"])


def test_a_write_redis_refuses_is_warned_once_naming_the_model_and_the_failure_not_bytes(redis_server, layers_of,
                                                                                       caplog):
    cache = TensorCache(memory="1MB", redis=redis_server.url, namespace="full")
    with redis.Redis.from_url(redis_server.url) as raw:  # every write is refused from now on
        raw.config_set("maxmemory-policy", "noeviction")
        raw.config_set("maxmemory", 1)
    with caplog.at_level(logging.WARNING, logger="tensorcache"):
        for m in range(3):
            assert cache.put(f"m{m}", (m, 1), layers_of(m, 2)).written > 0  # the memory tier takes it
    [message] = [r.getMessage() for r in caplog.records]
    assert "model 'm0'" in message and "OutOfMemoryError" in message and "maxmemory" in message, message
    assert message.isascii() and message.isprintable() and "tc:full" not in message and "Command #" not in message
    assert cache.stats()["dropped_puts"] == 3 and cache.lookup((2, 1)).slowest_tier == "memory"
    cache.close()


def test_unreachable_redis_at_start_is_one_clear_error_if_required_else_local_tiers(tmp_path, layers_of, caplog):
    url = f"redis://127.0.0.1:{_closed_port()}/0"
    disk = tmp_path / "cache.lmdb"
    with pytest.raises(ConnectionError) as info:
        TensorCache(memory="1MB", disk=disk, redis=url, redis_required=True)
    message = str(info.value)
    assert "\n" not in message and "unreachable" in message and url in message
    assert not _open_files_under(disk), "a failed constructor must not leave the LMDB file open"
    with caplog.at_level(logging.WARNING, logger="tensorcache"):
        cache = TensorCache(memory="1MB", disk=disk, redis=url)
        for m in range(5):
            assert cache.put(f"m{m}", (m, 1), layers_of(m, 2)).written > 0
            assert cache.lookup((m, 1)).donor == f"m{m}"
    assert len(_unreachable(caplog)) == 1
    assert cache.stats()["hits"] == 5
    cache.close()


def _open_files_under(path: Path) -> list[str]:
    """Files under ``path`` that this process holds open."""
    fds = Path("/proc/self/fd")
    links = []
    for fd in fds.iterdir():
        try:
            links.append(os.readlink(fd))
        except OSError:
            continue
    return [link for link in links if link.startswith(str(path))]


# ---------------------------------------------------------------- password and TLS pass through to redis-py
PASSWORD = "s3cret-Pa55word"


class _SecuredServer:
    """A redis-server that wants a password, optionally on a TLS port only."""

    def __init__(self, workdir: Path, tls: bool) -> None:
        port = _closed_port()
        args = ["redis-server", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir),
                "--requirepass", PASSWORD]
        self.host = f"127.0.0.1:{port}/0"
        self.query = ""
        if tls:
            cert, key = workdir / "cert.pem", workdir / "key.pem"
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                            "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=60)
            args += ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert), "--tls-key-file",
                     str(key), "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"]
            self.query = f"?ssl_ca_certs={cert}"
        else:
            args += ["--port", str(port)]
        self.scheme = "rediss" if tls else "redis"
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url(PASSWORD), socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert self.proc.poll() is None and time.monotonic() < deadline, "secured redis-server did not start"
                time.sleep(0.05)
        client.close()

    def url(self, password: str) -> str:
        return f"{self.scheme}://:{password}@{self.host}{self.query}"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture(params=["password", "password+tls"])
def secured(request, tmp_path):
    tls = request.param.endswith("tls")
    if tls and shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    server = _SecuredServer(tmp_path, tls)
    yield server
    server.stop()


def test_password_and_tls_urls_pass_through_and_no_secret_is_logged(secured, layers_of, genuine, caplog):
    with caplog.at_level(logging.DEBUG):
        writer = TensorCache(memory="1MB", redis=secured.url(PASSWORD), namespace="auth", redis_required=True)
        writer.put("m1", (1, 2), layers_of(1, 2))
        reader = TensorCache(memory="1MB", redis=secured.url(PASSWORD), namespace="auth", redis_required=True)
        hit = reader.lookup((1, 2))
        assert hit.slowest_tier == "redis"
        genuine(hit, {"m1": (1, 2)}, (1, 2))
        wrong = "Wr0ng-" + PASSWORD
        for password in (wrong, ""):
            with pytest.raises(ConnectionError) as info:
                TensorCache(memory="1MB", redis=secured.url(password), namespace="auth", redis_required=True)
            assert "\n" not in str(info.value) and (not password or password not in str(info.value))
        lenient = TensorCache(memory="1MB", redis=secured.url(wrong), namespace="auth")
        assert lenient.lookup((1, 2)) is None and lenient.put("m2", (2, 2), layers_of(2, 2)).written > 0
        shown = " ".join([caplog.text, repr(writer.stats()), repr(lenient.stats())])
    assert len(_unreachable(caplog)) == 1
    assert PASSWORD not in shown and wrong not in shown
    for cache in (writer, reader, lenient):
        cache.close()
