"""LMDB faults: a map that must grow, a tier that must evict, a disk that fills up, a process killed mid-put."""
from __future__ import annotations

import json
import logging
import random
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tensorcache import TensorCache
from tensorcache.catalog import ModelRecord
from tensorcache.payload import decode
from tensorcache.tiers import LMDBTier

WIDTH = 4096  # float32 values per layer: 16 kB per payload


def test_a_full_map_grows_instead_of_failing_puts(tmp_path, layers_of, genuine, caplog):
    path = tmp_path / "cache.lmdb"
    archs = {f"m{m}": (m, 1, 2) for m in range(20)}
    with LMDBTier(path, capacity=1 << 20, map_size=1 << 16):  # the file is opened first with a 64 kB map
        cache = TensorCache(memory=0, disk=path, disk_capacity="64MB", policy="lru")
        for model, arch in archs.items():
            assert cache.put(model, arch, layers_of(int(model[1:]), 3, WIDTH)).written > 3 * WIDTH * 4
        for model, arch in archs.items():
            hit = cache.lookup(arch)
            assert hit.donor == model and hit.prefix_len == 3
            genuine(hit, archs, arch)
        cache.close()
    assert "full" not in caplog.text
    assert (path / "data.mdb").stat().st_size > 20 * 3 * WIDTH * 4


def test_a_tier_at_capacity_evicts_and_every_put_returns(tmp_path, layers_of, genuine):
    cache = TensorCache(memory=50_000, disk=tmp_path / "cache.lmdb", disk_capacity=200_000, policy="lfu")
    archs = {}
    for m in range(40):
        archs[f"m{m}"] = arch = (m % 4, m, 0)
        assert cache.put(f"m{m}", arch, layers_of(m, 3, WIDTH)).written > 0
        hit = cache.lookup((m % 4, m, 1))
        assert hit is not None
        genuine(hit, archs, (m % 4, m, 1))
        cache.notify_evaluation()
    stats = cache.stats()
    assert stats["evictions"].get("lmdb:capacity", 0) > 0
    assert all(tier["used_bytes"] <= tier["capacity"] for tier in stats["tiers"].values())
    assert cache.check_invariants() == []
    cache.close()


# A worker whose file may not grow: RLIMIT_FSIZE makes every write or resize past the limit fail with EFBIG
# (SIGXFSZ is ignored, as a server process would). The map starts small (the tier opened first in the same
# process sets it), so the file must grow whether LMDB writes pages at its end or through a writable map.
FILE_LIMIT = r"""
import json, os, resource, signal, sys
from tensorcache import TensorCache
from tensorcache.tiers import LMDBTier
path, width = sys.argv[1], int(sys.argv[2])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
small = LMDBTier(path, capacity=1 << 30, map_size=1 << 20)
cache = TensorCache(memory=100_000, disk=path, disk_capacity="1GB", policy="lru")
cache.put("m0", (0, 0, 0), make_layers(0, 3, width))
limit = os.path.getsize(os.path.join(path, "data.mdb")) + 300_000
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
"""

# A worker whose disk fills up for real: a 2 MiB tmpfs in a mount namespace of its own. The map is a sparse
# file far larger than the disk, so a page written through it that the disk cannot back would kill the
# process (SIGBUS) if the tier did not reserve the blocks first.
SMALL_DISK = r"""
import json, os, sys
from tensorcache import TensorCache
path, width = sys.argv[1], int(sys.argv[2])
cache = TensorCache(memory=100_000, disk=path, disk_capacity="1GB", policy="lru")
cache.put("m0", (0, 0, 0), make_layers(0, 3, width))
"""

FILL = r"""
served = []
for m in range(1, 60):
    cache.put(f"m{m}", (m, 0, 0), make_layers(m, 3, width))
    hit = cache.lookup((m, 0, 1))
    served.append(None if hit is None else [hit.donor, hit.slowest_tier, [float(l[f"w{i}"][0]) for i, l in zip(hit.indices, hit.layers)]])
print(json.dumps({"stats": cache.stats(), "served": served}))
cache.close()
"""

# The file a full disk left behind, reopened: consistent (a model may keep the layers that fit), and usable
# once there is room again (the test frees it first).
REOPEN = r"""
import json, sys
from tensorcache import TensorCache
path = sys.argv[1]
reader = TensorCache(memory=0, disk=path, disk_capacity="1GB", policy="lru")
whole = 0
for m in range(60):
    hit = reader.lookup((m, 0, 0))
    if hit is not None:
        check_hit(hit, {f"m{m}": (m, 0, 0)}, (m, 0, 0))
        whole += hit.prefix_len == 3
assert reader.stats()["corrupt"] == 0
print(whole)
"""

REFILL = r"""
import sys
from tensorcache import TensorCache
reader = TensorCache(memory=0, disk=sys.argv[1], disk_capacity="1GB", policy="lru")
assert reader.put("m77", (77, 0, 0), make_layers(77, 3)).written > 0
check_hit(reader.lookup((77, 0, 0)), {"m77": (77, 0, 0)}, (77, 0, 0))
reader.close()
"""


def _check_full_disk_run(report: dict, stderr: str) -> None:
    """Puts were dropped, with a warning, and every child was still warm-started from its donor."""
    stats = report["stats"]
    assert stats["dropped_puts"] > 0, "the disk never filled up"
    assert stats["puts"] == 60 and stats["corrupt"] == 0
    for m, served in enumerate(report["served"], start=1):
        assert served is not None and served[0] == f"m{m}"
        assert served[2] == [m * 1000 + i for i in range(2)]
    assert "disk space" in stderr or "full" in stderr or "failed" in stderr


def test_a_file_that_may_not_grow_drops_puts_and_the_worker_carries_on(tmp_path, python):
    path = tmp_path / "cache.lmdb"
    done = python(FILE_LIMIT + FILL, str(path), str(WIDTH))
    _check_full_disk_run(json.loads(done.stdout), done.stderr)
    whole = int(python(REOPEN, str(path)).stdout)
    assert 0 < whole < 60
    python(REFILL, str(path))


def _in_small_disk(tmp_path: Path, *commands: list[str]) -> subprocess.CompletedProcess:
    """Run ``commands`` one after another with a 2 MiB tmpfs mounted at ``tmp_path / "disk"`` (a mount
    namespace of their own); skip where this system allows no such namespace."""
    disk = tmp_path / "disk"
    disk.mkdir()
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=2m tmpfs {disk}"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"no mount namespace for a small tmpfs here: {probe.stderr.strip()}")
    steps = " && ".join(" ".join(shlex.quote(a) for a in c) for c in commands)
    return subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=2m tmpfs {disk} && {steps}"],
                          capture_output=True, text=True, timeout=300)


def test_a_full_disk_drops_puts_and_the_worker_carries_on(tmp_path, python_script):
    path = str(tmp_path / "disk" / "cache.lmdb")
    done = _in_small_disk(tmp_path, [sys.executable, "-c", python_script(SMALL_DISK + FILL), path, str(WIDTH)],
                          ["echo", "---"], [sys.executable, "-c", python_script(REOPEN), path])
    assert done.returncode == 0, f"exit {done.returncode} (135 or -7: SIGBUS)\n{done.stdout}\n{done.stderr}"
    filled, _, reopened = done.stdout.partition("---")
    _check_full_disk_run(json.loads(filled), done.stderr)
    assert "disk space" in done.stderr and done.stderr.count("disk space") == 1, done.stderr
    assert 0 < int(reopened) < 60


# A worker that opens the cache on a disk already full: LMDB writes its reader table through a map of lock.mdb,
# a sparse file, so without its blocks allocated first the open itself died of SIGBUS.
FULL_AT_OPEN = r"""
import os, sys
from tensorcache import TensorCache
disk, width = sys.argv[1], int(sys.argv[2])
fd = os.open(os.path.join(disk, "filler"), os.O_WRONLY | os.O_CREAT)
try:
    while True:
        os.write(fd, bytes(4096))
except OSError:
    pass
cache = TensorCache(memory=100_000, disk=os.path.join(disk, "cache.lmdb"), disk_capacity="1GB", policy="lru")
cache.put("m0", (0, 0, 0), make_layers(0, 3, width))
print(cache.lookup((0, 0, 1)).donor)
"""


def test_a_disk_full_before_the_cache_opens_is_a_warning_not_sigbus(tmp_path, python_script):
    disk = str(tmp_path / "disk")
    done = _in_small_disk(tmp_path, [sys.executable, "-c", python_script(FULL_AT_OPEN), disk, str(WIDTH)])
    assert done.returncode == 0, f"exit {done.returncode} (135 or -7: SIGBUS)\n{done.stdout}\n{done.stderr}"
    assert done.stdout.split() == ["m0"]  # served from memory: the worker carries on without the LMDB tier
    assert "lock.mdb" in done.stderr and "No space left" in done.stderr, done.stderr

# ---------------------------------------------------------------- a process killed in the middle of a put
PUT_LOOP = r"""
import sys
from tensorcache import TensorCache
path, first, width = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
cache = TensorCache(memory=200_000, disk=path, disk_capacity="1GB", policy="fifo")
m = first
while True:
    cache.put(f"m{m}", (m % 3, m % 5, m, 1), make_layers(m, 4, width))
    print(m, flush=True)
    m += 1
"""


def _arch(m: int) -> tuple[int, ...]:
    return (m % 3, m % 5, m, 1)


def _held_models(path: Path) -> dict[str, tuple[int, ...]]:
    """The models the LMDB file's own books hold, by held layers, each payload checked whole."""
    with LMDBTier(path, capacity=1 << 30) as tier:
        snapshot = tier.snapshot()
        for model_id, raw, held in snapshot.models:
            record = ModelRecord.from_bytes(raw)
            for index in held:
                refs = list(record.layers[index].tensors.values())
                for ref, blob in zip(refs, tier.read([(r.digest, r.blob_size) for r in refs])):
                    assert blob is not None, f"{model_id} layer {index}: payload missing"
                    decode(ref.digest, blob)  # raises on a torn or damaged payload
        return {model_id: held for model_id, _, held in snapshot.models}


def test_a_process_killed_mid_put_leaves_genuine_models_and_no_orphans(tmp_path, python_script, genuine, caplog):
    path = tmp_path / "cache.lmdb"
    rng = random.Random(3)
    first, archs = 0, {}
    for _ in range(3):
        worker = subprocess.Popen([sys.executable, "-c", python_script(PUT_LOOP), str(path), str(first), "2048"],
                                  stdout=subprocess.PIPE, text=True)
        done = [int(worker.stdout.readline()) for _ in range(5)]  # a few puts have completed
        time.sleep(rng.uniform(0.0, 0.05))
        worker.send_signal(signal.SIGKILL)
        rest = worker.stdout.read().split()
        assert worker.wait(timeout=30) == -signal.SIGKILL
        done += [int(m) for m in rest]
        archs.update({f"m{m}": _arch(m) for m in range(first, done[-1] + 2)})  # + the put in flight
        with caplog.at_level(logging.WARNING, logger="tensorcache"):
            held = _held_models(path)
        assert "rebuilt" not in caplog.text, "the killed put left books that needed repair"
        assert {f"m{m}" for m in done} <= set(held), "a completed put was lost"
        assert all(held[f"m{m}"] == (0, 1, 2, 3) for m in done)
        reader = TensorCache(memory=0, disk=path, disk_capacity="1GB", policy="fifo")
        for model in sorted(held, key=lambda name: int(name[1:])):
            hit = reader.lookup(archs[model])  # the put in flight may have held its first layers: a prefix
            assert hit is not None and hit.donor == model and hit.prefix_len == len(held[model]), model
            genuine(hit, archs, archs[model])
        assert reader.stats()["corrupt"] == 0 and reader.check_invariants() == []
        reader.close()
        first = done[-1] + 2
