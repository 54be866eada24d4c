"""Redis faults: killed mid-search and restarted, unreachable at start, password and TLS URLs, no secret logged."""
from __future__ import annotations

import itertools
import logging
import os
import shutil
import socket
import subprocess
import time
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
