"""Soak across processes: three workers share an LMDB file and a Redis server through tiny memory tiers while
workers are SIGKILLed and replaced and redis-server restarts. No served tensor is ever wrong, and after
reopening the books need no repair: no orphaned bytes, used bytes equal to what the stores hold."""
from __future__ import annotations

import logging
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from tensorcache import TensorCache

SECONDS = 20.0

# argv: lmdb path, redis url, first model number. Puts and looks up forever; every hit is checked against
# the donor's own tensors (model m's layer i holds m * 1000 + i, its arch follows from m).
WORKER = r"""
import random, sys
from tensorcache import TensorCache
path, url, first = sys.argv[1], sys.argv[2], int(sys.argv[3])
def arch_of(m): return (m % 3, m % 4, m % 5, m)
cache = TensorCache(memory="48KB", disk=path, disk_capacity="400KB", redis=url, redis_capacity="1MB",
                    policy="lru", namespace="soak3")
rng = random.Random(first)
m = first
while True:
    donor = rng.randrange(max(0, m - 40), m + 1)
    child = arch_of(donor)[:3] + (10**7 + m,)
    hit = cache.lookup(child)
    if hit is not None:
        d = int(hit.donor[1:])
        assert arch_of(d)[:hit.prefix_len] == child[:hit.prefix_len], (hit.donor, child)
        for i, layer in zip(hit.indices, hit.layers):
            assert (layer[f"w{i}"] == d * 1000 + i).all(), f"wrong tensor from {hit.donor} layer {i}"
    cache.put(f"m{m}", arch_of(m), make_layers(m, 4, 64), score=rng.random())
    cache.notify_evaluation()
    print("ok", m, flush=True)
    m += 1
"""


def test_three_processes_killed_at_random_with_redis_restarts_leave_whole_books(redis_server, tmp_path, python_script,
                                                                              caplog):
    path = tmp_path / "soak.lmdb"
    rng = random.Random(11)
    starts = iter(range(0, 10**7, 100_000))

    def spawn() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", python_script(WORKER), str(path), redis_server.url,
                                 str(next(starts))], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    workers = [spawn() for _ in range(3)]
    kills = restarts = done = 0
    deadline = time.monotonic() + SECONDS
    try:
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(0.3, 1.0))
            for w in workers:
                assert w.poll() is None, f"a worker died on its own: {w.stderr.read()[-2000:]}"
            if rng.random() < 0.25:
                redis_server.stop()
                time.sleep(0.2)
                redis_server.start()
                restarts += 1
            else:
                k = rng.randrange(3)
                workers[k].send_signal(signal.SIGKILL)
                workers[k].wait()
                done += workers[k].stdout.read().count("ok")
                workers[k] = spawn()
                kills += 1
    finally:
        for w in workers:
            w.send_signal(signal.SIGKILL)
            w.wait()
    done += sum(w.stdout.read().count("ok") for w in workers)
    assert kills >= 5 and restarts >= 1 and done > 100, (kills, restarts, done)
    with caplog.at_level(logging.WARNING, logger="tensorcache"):
        cache = TensorCache(memory=0, disk=path, disk_capacity="400KB", redis=redis_server.url,
                            redis_capacity="1MB", namespace="soak3")
    assert "rebuilt" not in caplog.text, "the kills left books that needed repair"
    assert cache.check_invariants() == []
    for tier in cache.tiers:
        audit = tier.audit()
        assert audit.orphan_bytes == 0 and audit.used == audit.held_bytes == tier.used_bytes()
    assert cache.stats()["models"] > 0
    cache.close()
    assert Path(path, "data.mdb").stat().st_size > 0
