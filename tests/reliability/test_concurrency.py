"""Concurrent writers: two processes on one LMDB file, and MPI ranks putting the same donor at once into
shared LMDB and Redis tiers. No corruption, no duplicate payload, no lost entry."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import lmdb
import pytest
import redis

from tensorcache import TensorCache
from tensorcache.keys import namespace_key
from tensorcache.tiers.lmdb import writes_in_place
from tensorcache.tiers.prefault import POPULATES

SHARED = range(0, 40, 4)  # models every writer puts (same id, same tensors)


def _arch(model: int) -> tuple[int, ...]:
    return (model % 3, model % 7, model)


def _models(writers: int, per_writer: int = 40) -> dict[str, tuple[int, ...]]:
    """Every model id the writers put, with its architecture."""
    ids = set(SHARED) | {1000 * (w + 1) + m for w in range(writers) for m in range(per_writer) if m not in SHARED}
    return {f"m{i}": _arch(i) for i in ids}


# argv: path worker width. Waits for a go file so that both processes write at the same time. Says at the end
# whether its LMDB tier was preparing pages ahead of its writes (a thread of its own, where the map is writable).
NODE_WRITER = r"""
import os, sys, threading, time
from tensorcache import TensorCache
path, worker, width = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
shared = set(range(0, 40, 4))
cache = TensorCache(memory=50_000, disk=path, disk_capacity="1GB", policy="lru", namespace="node")
print("ready", flush=True)
while not os.path.exists(path + ".go"):
    time.sleep(0.005)
archs = {}
for m in range(40):
    model = m if m in shared else 1000 * (worker + 1) + m
    archs[f"m{model}"] = arch = (model % 3, model % 7, model)
    cache.put(f"m{model}", arch, make_layers(model, 3, width))
    child = arch[:2] + (99,)
    hit = cache.lookup(child)
    if hit is not None and hit.donor in archs:
        check_hit(hit, archs, child)
print("prefaulting", any(t.name.startswith("tensorcache-lmdb-prefault") for t in threading.enumerate()), flush=True)
cache.close()
"""


@pytest.mark.parametrize("width", [512, 1 << 16])  # 2 KiB and 256 KiB per tensor: the pages ahead are used
def test_two_processes_writing_one_lmdb_lose_and_duplicate_nothing(tmp_path, python_script, genuine, width):
    path = tmp_path / "node.lmdb"
    procs = [subprocess.Popen([sys.executable, "-c", python_script(NODE_WRITER), str(path), str(w), str(width)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for w in (0, 1)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
    Path(f"{path}.go").touch()
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert out.split() == ["prefaulting", str(writes_in_place(str(tmp_path)) and POPULATES)], out
    expected = _models(2)
    reader = TensorCache(memory=0, disk=path, disk_capacity="1GB", namespace="node")
    for model, arch in expected.items():
        hit = reader.lookup(arch)
        assert hit is not None and hit.donor == model and hit.prefix_len == 3, model
        genuine(hit, expected, arch)
    assert reader.stats()["models"] == len(expected) and reader.stats()["corrupt"] == 0
    assert reader.check_invariants() == []  # used bytes are what is held, no orphans
    reader.close()
    payloads = namespace_key("node") + b"b"
    with lmdb.open(str(path), readonly=True, lock=False) as env, env.begin() as txn:
        values = [bytes(v) for k, v in txn.cursor() if k.startswith(payloads)]
    assert len(values) == 3 * len(expected), "one payload per distinct tensor: none lost, none twice"


# argv: lmdb path, redis url, namespace. Each rank puts the same donor at the same moment (a barrier per
# donor), then its own models; at the end every rank must be served every model, each from its own donor.
MPI_WRITER = r"""
import json, sys
from mpi4py import MPI
from tensorcache import TensorCache
comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
path, url, namespace = sys.argv[1:4]
cache = TensorCache(memory=20_000, disk=path, disk_capacity="1GB", redis=url, namespace=namespace,
                    redis_required=True, policy="lru")
shared = set(range(0, 40, 4))
def arch(model): return (model % 3, model % 7, model)
for m in range(40):
    model = m if m in shared else 1000 * (rank + 1) + m
    if m in shared:
        comm.Barrier()
    cache.put(f"m{model}", arch(model), make_layers(model, 3, 256))
comm.Barrier()
everyone = sorted(set(shared) | {1000 * (r + 1) + m for r in range(size) for m in range(40) if m not in shared})
archs = {f"m{i}": arch(i) for i in everyone}
for model, a in archs.items():
    hit = cache.lookup(a)
    assert hit is not None and hit.donor == model and hit.prefix_len == 3, (rank, model, hit)
    check_hit(hit, archs, a)
stats = cache.stats()
assert stats["corrupt"] == 0, stats
print(json.dumps({"rank": rank, "models": stats["models"]}), flush=True)
cache.close()
"""


def _mpirun() -> str:
    path = shutil.which("mpirun")
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        path = None
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("mpirun and mpi4py are required in CI")
        pytest.skip("mpirun or mpi4py is not installed")
    return path


def test_mpi_ranks_putting_the_same_donor_store_it_once_and_lose_nothing(tmp_path, redis_url, redis_namespace,
                                                                        python_script, genuine):
    env = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    done = subprocess.run([_mpirun(), "--oversubscribe", "-n", "3", sys.executable, "-c", python_script(MPI_WRITER),
                           str(tmp_path / "node.lmdb"), redis_url, redis_namespace],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    expected = _models(3)
    # ranks share one stdout, so their lines may interleave: pick the reports out, not the lines
    reports = [json.loads(m) for m in re.findall(r'\{"rank": \d+, "models": \d+\}', done.stdout)]
    assert sorted(r["rank"] for r in reports) == [0, 1, 2]
    assert all(r["models"] == len(expected) for r in reports)
    prefix = f"tc:{redis_namespace}:".encode()
    with redis.Redis.from_url(redis_url) as raw:
        keys = list(raw.scan_iter(match=prefix + b"v:*"))
    assert len(keys) == 3 * len(expected), "one payload per distinct tensor: none lost, none twice"
    reader = TensorCache(memory=0, redis=redis_url, namespace=redis_namespace, redis_required=True)
    assert reader.check_invariants() == [] and reader.stats()["models"] == len(expected)
    for model, arch in expected.items():
        hit = reader.lookup(arch)
        assert hit.donor == model and hit.slowest_tier == "redis" and hit.prefix_len == 3
        genuine(hit, expected, arch)
    reader.close()
