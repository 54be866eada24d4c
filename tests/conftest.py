"""Shared fixtures: a real redis-server for the whole session, and a restartable one for fault tests."""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

_RUN = uuid.uuid4().hex[:8]  # keeps namespaces apart across runs sharing one external server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _redis_binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
        message = "redis-server is not installed (apt-get install redis-server)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


class RedisServer:
    """A redis-server on a loopback port that a test can stop and start again on the same port; ``save``: its
    save points (none by default; its snapshot is ``workdir``/dump.rdb)."""

    def __init__(self, binary: str, workdir: Path, save: str = "") -> None:
        self.binary, self.workdir, self.save = binary, workdir, save
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Start the server (again) on this object's port and wait until it answers PING."""
        if self._proc is not None:
            raise RuntimeError(f"redis-server on port {self.port} is already running")
        self._proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", self.save, "--appendonly", "no",
             "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.02)
            finally:
                client.close()

    def pause(self) -> None:
        """Stop the server's process (SIGSTOP): its port still accepts connections, nothing answers, data kept."""
        assert self._proc is not None, f"redis-server on port {self.port} is not running"
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused server go on (SIGCONT)."""
        assert self._proc is not None, f"redis-server on port {self.port} is not running"
        self._proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Kill the server and wait for it to exit."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None


def _start_server(workdir: Path) -> RedisServer:
    binary = _redis_binary()
    for _ in range(5):  # another process may grab the free port between choosing and binding it
        server = RedisServer(binary, workdir)
        try:
            server.start()
            return server
        except RuntimeError:
            continue
    raise RuntimeError("could not start redis-server on a free loopback port")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """$TENSORCACHE_TEST_REDIS_URL if set, else the URL of a redis-server started for this session."""
    url = os.environ.get("TENSORCACHE_TEST_REDIS_URL")
    if url:
        yield url
        return
    server = _start_server(tmp_path_factory.mktemp("redis"))
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server for fault tests (``.stop()`` / ``.start()`` keep the port)."""
    server = _start_server(tmp_path)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_namespace(request: pytest.FixtureRequest, redis_url: str) -> Iterator[str]:
    """A namespace unique to this test and run; keys under it (or names starting with it) go afterwards."""
    digest = hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:12]
    namespace = f"test-{_RUN}-{digest}"
    yield namespace
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"tc:{namespace}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
