"""A Redis restored from an older RDB snapshot: every reader notices, even when the writer then makes exactly
as many changes as were lost and the last of them is byte for byte the change the reader read last."""
from __future__ import annotations

import shutil
from typing import Any

import pytest
import redis

from tensorcache import TensorCache


def _save_copy(server, name: str) -> None:
    """SAVE now and keep a copy of the snapshot as ``name``."""
    with redis.Redis.from_url(server.url) as client:
        client.save()
    shutil.copy(server.workdir / "dump.rdb", server.workdir / name)


def _restart_from(server, name: str) -> None:
    """Kill the server (no save on the way down) and start it again from the snapshot copy ``name``."""
    server.stop()
    shutil.copy(server.workdir / name, server.workdir / "dump.rdb")
    server.start()


@pytest.fixture
def saving_redis(redis_server: Any) -> Any:
    """The test's own redis-server, restarted with a save point (``--dir`` is its tmp_path)."""
    redis_server.stop()
    redis_server.save = "3600 1"
    redis_server.start()
    return redis_server


def test_a_reader_notices_a_restore_from_an_older_rdb_when_the_writer_replays_as_many_changes(
        saving_redis, layers_of, genuine) -> None:
    settings = {"memory": 0, "redis": saving_redis.url, "namespace": "restore", "redis_capacity": "10MB"}
    archs = {f"m{m}": (m, 1) for m in range(1, 5)}
    writer, reader = TensorCache(**settings), TensorCache(**settings)
    try:
        writer.put("m1", archs["m1"], layers_of(1, 2))
        assert reader.best_donor(archs["m1"]) == "m1"
        _save_copy(saving_redis, "older.rdb")  # the store at its first change
        writer.put("m2", archs["m2"], layers_of(2, 2))
        writer.put("m3", archs["m3"], layers_of(3, 2))
        assert reader.best_donor(archs["m3"]) == "m3"  # the reader has read up to "hold m3"
        _restart_from(saving_redis, "older.rdb")  # m2 and m3 are lost; same epoch, a shorter log
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
