"""A Redis restored from an older RDB snapshot: every reader notices, even when the writer then makes exactly
as many changes as were lost and the last of them is byte for byte the change the reader read last."""
from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tensorcache import TensorCache


class SavingRedis:
    """A redis-server of this test's own, with a dir and save points, that can SAVE and restart from a copy."""

    def __init__(self, binary: str, workdir: Path, port: int) -> None:
        self.binary, self.workdir, self.port = binary, workdir, port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
                                      str(self.workdir), "--dbfilename", "dump.rdb", "--save", "3600 1",
                                      "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                with redis.Redis(port=self.port, socket_connect_timeout=0.2) as client:
                    client.ping()
                return
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.02)

    def save_copy(self, name: str) -> None:
        """SAVE now and keep a copy of the snapshot as ``name``."""
        with redis.Redis(port=self.port) as client:
            client.save()
        shutil.copy(self.workdir / "dump.rdb", self.workdir / name)

    def restart_from(self, name: str) -> None:
        """Kill the server (no save on the way down) and start it again from the copy ``name``."""
        self.stop()
        shutil.copy(self.workdir / name, self.workdir / "dump.rdb")
        self.start()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture
def saving_redis(tmp_path: Path, redis_server) -> Iterator[SavingRedis]:
    port = redis_server.port  # a free port: take it over from the fixture's server
    redis_server.stop()
    server = SavingRedis(redis_server.binary, tmp_path, port)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_a_reader_notices_a_restore_from_an_older_rdb_when_the_writer_replays_as_many_changes(
        saving_redis: SavingRedis, layers_of, genuine) -> None:
    settings = {"memory": 0, "redis": saving_redis.url, "namespace": "restore", "redis_capacity": "10MB"}
    archs = {f"m{m}": (m, 1) for m in range(1, 5)}
    writer, reader = TensorCache(**settings), TensorCache(**settings)
    try:
        writer.put("m1", archs["m1"], layers_of(1, 2))
        assert reader.best_donor(archs["m1"]) == "m1"
        saving_redis.save_copy("older.rdb")  # the store at its first change
        writer.put("m2", archs["m2"], layers_of(2, 2))
        writer.put("m3", archs["m3"], layers_of(3, 2))
        assert reader.best_donor(archs["m3"]) == "m3"  # the reader has read up to "hold m3"
        saving_redis.restart_from("older.rdb")  # m2 and m3 are lost; same epoch, a shorter log
        assert writer.lookup(archs["m3"]) is None  # the writer notices (its sequence is ahead of the store's)
        writer.put("m4", archs["m4"], layers_of(4, 2))  # as many changes as were lost, the last one the
        writer.put("m3", archs["m3"], layers_of(3, 2))  # same as the reader's last: "hold m3" by this writer
        hit = reader.lookup(archs["m4"])
        assert hit is not None and hit.donor == "m4", "the reader never saw a model put after the restore"
        genuine(hit, archs, archs["m4"])
        assert reader.best_donor(archs["m2"]) != "m2"  # nor does it believe in a model the restore lost
        assert reader.check_invariants() == []
    finally:
        writer.close()
        reader.close()
