"""Soak across processes: three workers with different capacities and policies share an LMDB file and a Redis
server through tiny memory tiers, and change every tensor they are served in place, while workers are SIGKILLed
and replaced and redis-server restarts, sometimes from an older snapshot. No served tensor is ever wrong, and
after reopening the books need no repair: no orphaned bytes, used bytes equal to what the stores hold; every
model a store holds whole is served whole to a lookup of its own architecture.

A model a store shows with its first layer released (FIFO and LRU release a model's layers in the order they
were put) serves no prefix lookup: a miss, bounded and explained in ``test_partial_models.py``."""
from __future__ import annotations

import inspect
import logging
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis

from tensorcache import TensorCache

SECONDS = 25.0


def arch_of(m: int) -> tuple[int, ...]:
    """The architecture model ``m`` is put under (its last position is ``m`` itself: no other model has it)."""
    return (m % 3, m % 4, m % 5, m)


# argv: lmdb path, redis url, first model number, memory, disk capacity, policy, kind. Puts and looks up
# forever; every hit is checked against the donor's own tensors (model m's layer i holds m * 1000 + i, its
# arch is arch_of(m), whose source goes before this), then changed in place (torch), or refused the change
# (numpy arrays are served read-only), which must change nothing a later hit serves.
WORKER = r"""
import random, sys
from tensorcache import TensorCache
path, url, first, memory, disk_capacity, policy, kind = sys.argv[1:8]
first = int(first)
if kind == "torch":
    import torch
    def tensor(value): return torch.full((64,), value, dtype=torch.float64)
else:
    def tensor(value): return np.full(64, value, dtype=np.float64)
def change(t):  # served as the kind its donor was put as: torch (a copy to change) or numpy (read-only)
    if hasattr(t, "mul_"):
        t.mul_(-1)
        return
    try:
        t *= -1
    except ValueError:
        pass
    else:
        raise AssertionError("a served numpy array could be written")
cache = TensorCache(memory=memory, disk=path, disk_capacity=disk_capacity, redis=url, redis_capacity="1MB",
                    policy=policy, namespace="soak3")
rng = random.Random(first)
m = first
while True:
    donor = rng.randrange(max(first, m - 40), m + 1)
    child = arch_of(donor)[:3] + (10**7 + m,)
    hit = cache.lookup(child)
    if hit is not None:
        d = int(hit.donor[1:])
        assert arch_of(d)[:hit.prefix_len] == child[:hit.prefix_len], (hit.donor, child)
        for i, layer in zip(hit.indices, hit.layers):
            assert bool((layer[f"w{i}"] == d * 1000 + i).all()), f"wrong tensor from {hit.donor} layer {i}"
            change(layer[f"w{i}"])  # a caller's own use of the tensor it was handed
        print("hit", flush=True)
    cache.put(f"m{m}", arch_of(m), [{f"w{i}": tensor(m * 1000.0 + i)} for i in range(4)], score=rng.random())
    cache.notify_evaluation()
    print("ok", m, flush=True)
    m += 1
"""
SETTINGS = [("48KB", "400KB", "lru", "numpy"), ("96KB", "800KB", "fifo", "torch"),
            ("32KB", "300KB", "donor-window", "numpy")]


def test_three_processes_killed_at_random_with_redis_restored_from_older_snapshots_leave_whole_books(
        redis_server, tmp_path, python_script, caplog):
    path = tmp_path / "soak.lmdb"
    rng = random.Random(11)
    starts = iter(range(0, 10**7, 100_000))
    redis_server.stop()  # again with a save point, so that it can SAVE and restart from an older snapshot
    redis_server.save = "3600 1"
    redis_server.start()

    logs = iter(range(10**6))

    def spawn(k: int) -> subprocess.Popen:
        # stdout to a file: a pipe read only at the end would fill up and stall a long-lived worker
        with open(tmp_path / f"worker-{next(logs)}.out", "w") as out:
            return subprocess.Popen([sys.executable, "-c", python_script(inspect.getsource(arch_of) + WORKER), str(path), redis_server.url,
                                     str(next(starts)), *SETTINGS[k]], stdout=out, stderr=subprocess.PIPE, text=True)

    workers = [spawn(k) for k in range(3)]
    born = [time.monotonic()] * 3
    kills = restarts = restores = 0
    saved = False
    deadline = time.monotonic() + SECONDS
    try:
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(0.4, 1.0))
            for w in workers:
                assert w.poll() is None, f"a worker died on its own: {w.stderr.read()[-2000:]}"
            event = rng.random()
            if event < 0.15:
                with redis.Redis.from_url(redis_server.url) as client:
                    client.save()
                shutil.copy(redis_server.workdir / "dump.rdb", redis_server.workdir / "older.rdb")
                saved = True
            elif event < 0.35:
                redis_server.stop()
                if saved and rng.random() < 0.7:  # back to the older snapshot; else to the newest save
                    shutil.copy(redis_server.workdir / "older.rdb", redis_server.workdir / "dump.rdb")
                    restores += 1
                time.sleep(0.1)
                redis_server.start()
                restarts += 1
            else:  # a worker that has run a while (starting one imports torch): mid-put or mid-lookup
                old = [k for k in range(3) if time.monotonic() - born[k] > 4]
                if not old:
                    continue
                k = rng.choice(old)
                workers[k].send_signal(signal.SIGKILL)
                workers[k].wait()
                workers[k], born[k] = spawn(k), time.monotonic()
                kills += 1
    finally:
        for w in workers:
            w.send_signal(signal.SIGKILL)
            w.wait()
    printed = "".join(log.read_text() for log in tmp_path.glob("worker-*.out"))
    put = [int(line.split()[1]) for line in printed.splitlines() if line.startswith("ok ")]
    done, hits = len(put), printed.count("hit")
    assert kills >= 3 and restarts >= 1 and restores >= 1 and done > 100 and hits > 50, \
        (kills, restarts, restores, done, hits)
    print(f"soak: {kills} kills, {restarts} redis restarts ({restores} from an older snapshot), {done} puts, "
          f"{hits} hits checked")
    with caplog.at_level(logging.WARNING, logger="tensorcache"):
        cache = TensorCache(memory=0, disk=path, disk_capacity="400KB", redis=redis_server.url,
                            redis_capacity="1MB", namespace="soak3")
    assert "rebuilt" not in caplog.text, "the kills left books that needed repair"
    assert cache.check_invariants() == []
    for tier in cache.tiers:
        audit = tier.audit()
        assert audit.orphan_bytes == 0 and audit.used == audit.held_bytes == tier.used_bytes() <= tier.capacity
    assert cache.stats()["models"] > 0
    cache.close()
    assert Path(path, "data.mdb").stat().st_size > 0
    whole = 0
    for shared in ({"disk": path, "disk_capacity": "400KB"}, {"redis": redis_server.url, "redis_capacity": "1MB"}):
        with TensorCache(memory=0, namespace="soak3", **shared) as store:  # one tier: a lookup promotes nothing
            for m in put:
                if store.get(f"m{m}") is not None:   # held whole by this store
                    hit = store.lookup(arch_of(m))
                    assert hit is not None and (hit.donor, hit.prefix_len) == (f"m{m}", 4), (m, hit)
                    whole += 1
    assert whole > 0
