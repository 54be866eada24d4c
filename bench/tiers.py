"""Tier throughput against the raw store underneath, the full lookup path, and warm starts of a real model.

    python bench/tiers.py [--sizes 1,16,64,256] [--redis URL] [--out DIR] [--quick] [--parts memory,...]

Every figure is a ratio of medians measured in this run, subject throughput / baseline throughput,
subject and baseline timed in turns on identical bytes:

* memory: ``MemoryTier.get`` + copying the value out vs a numpy copy of the same bytes into the same
  destination (get itself is zero-copy); ``put`` (the tier allocates and copies) vs allocating a numpy
  buffer and copying into it. Target >= 0.80.
* lmdb: ``LMDBTier.get`` vs raw ``lmdb`` get + copy on a separate environment opened with the same flags
  (target >= 0.90); ``put`` vs a raw put in one write transaction (informative).
* redis: ``RedisTier.get`` vs redis-py GET on the same server (target >= 0.90); ``put`` vs SET.
* lookup: ``TensorCache.lookup`` of a model of 8 layers totalling N bytes from a cache holding only that
  tier vs that tier's raw gets of the same payloads (shows digest checks and bookkeeping).
* round trip: ``TensorCache.lookup`` of a model of 32 layers (``--round-trip-layers N``) totalling 1, 5 and
  50 MiB from a cache holding only Redis vs one redis-py GET of a single value of the same total bytes (what one round trip moves;
  target >= 0.5), and from a cache holding only LMDB vs one read transaction of the same payloads copied
  out unchecked (``LMDBTier.get_many``; target >= 0.8).
* served: ``TensorCache.lookup(...).layers`` of a torch model of 8 layers totalling N bytes from the memory
  tier (each served torch tensor is a copy, so a caller changing it in place never changes a later hit) vs
  the same lookup plus one ``clone`` of a host tensor of those bytes (allocate + copy), and vs the lookup alone
  (what serving copies costs over zero-copy views).
* put: ``TensorCache.put`` of a whole model (the main job's ``attn`` model, 4.7 MiB in 23 tensors; NB201Space at
  C=16 and C=32, 489 tensors each), fresh tensors every repeat, into a cache of the memory tier alone vs one
  copy of each tensor into a new buffer plus its xxh3-128 digest (target: at most 3x, ratio >= 0.33), and
  into memory + LMDB vs one raw LMDB write transaction putting the same payloads, encoded beforehand, into an
  environment opened with the tier's flags (target: at most 1.2x, ratio >= 0.83); ``full_memory`` repeats it
  with the memory tier full (it holds two models and each put evicts the oldest, as past a search's first
  models) while the LMDB tier still has room; ``full`` repeats the
  LMDB case in a long search's steady state (after SETTLE_PUTS untimed puts), both tiers holding two models
  so that every put evicts the oldest from each, against a raw transaction that also deletes the payloads of the model put two repeats
  before (same target), and against a put into the memory tier alone followed by that raw transaction
  (``vs_memory+raw``, informative: what the LMDB tier adds to a put against what one raw transaction adds;
  the raw transaction alone has none of the put's hashing, encoding and bookkeeping). The memory
  case is also timed in the process's CPU time (``.cpu`` rows): on a machine shared with other jobs a put
  of a few milliseconds is often preempted while a shorter copy is not, so wall time there measures the
  scheduler as much as the put. So is the memory + LMDB case, each call followed by a pause of SETTLE_S
  that costs no CPU: the LMDB tier prepares the file's next pages on a thread of its own after each put,
  which the caller's wall time leaves out and the process's CPU time counts. ``lmdb_series`` (main job's
  model) times a search's first puts: a cache opened on a new file, 24 models put and the
  cache closed, against as many raw write transactions into a new file opened with the tier's flags (its map
  as large as the tier's may grow), in the CPU time of all threads (``.cpu``) and of the caller's thread alone
  (``.thread``: what a training thread pays; same target). With --quick, 6 models: the map does not grow.
* warm start: ``TensorCache.warm_start`` of NB201Space(C=16, N=5), and C=32 unless quick (labels ``warm.C32.``;
  other widths with ``--warm-channels 16,24,...``, labels ``warm.C<C>.``), at the best CIFAR-10 cell from each tier
  (device tier on the model's device: "cuda", or "cpu") vs ``model.load_state_dict`` of the same tensors,
  and vs one copy of the same bytes: one pinned host-to-device copy on CUDA, one torch copy between two
  host buffers on CPU (target for the memory and device tiers: <= 2x that copy, i.e. ratio >= 0.5; from C=32
  ratio >= 0.8). The
  LMDB tier is also compared with raw LMDB reads of its payloads plus that copy; and, to show the floor
  of a model of many small tensors, one ``torch._foreach_copy_`` of the same tensors into the module,
  targets resolved beforehand, vs the copy.

A redis-server is started on a free loopback port unless --redis or $TENSORCACHE_TEST_REDIS_URL names
one. Writes DIR/tiers.csv and DIR/tiers.json.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import lmdb
import numpy as np
import redis
from common import (Comparison, MiB, exit_status, fmt_bytes, interleaved, machine, numbers, print_comparisons,
                    redis_url, write_comparisons)

from tensorcache import LayerMap, TensorCache
from tensorcache.cli import dashed_values, positive_int
from tensorcache.payload import encode
from tensorcache.tiers import LMDBTier, MemoryTier, RedisTier, Tier

PARTS = ("memory", "lmdb", "redis", "lookup", "round_trip", "served", "put", "warm_start")
REDIS_PARTS = {"redis", "lookup", "round_trip"}  # the warm start leaves its Redis tier out where there is none
BEST_NB201 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
LOOKUP_LAYERS = 8
# untimed puts before the full cases are timed: each file reaches the size it keeps (two models held, one freed, one
# being written), its map its last size, and each page has been written once in that map (after a remap each page
# faults once more on the next write to it: at NB201 C=32, 10,000 faults over the 3 puts after the 5th)
SETTLE_PUTS = 8
SETTLE_S = 0.2  # after each put timed in CPU time: the work it left to other threads finishes (no CPU of its own)
KEY = b"bench-value"


def repeats_for(nbytes: int, quick: bool) -> int:
    """Fewer repeats for bigger values: about 512 MiB moved per case, 5..25 repeats (3 when quick)."""
    return 3 if quick else max(5, min(25, (512 * MiB) // nbytes))


def payload(nbytes: int, seed: int = 0) -> np.ndarray:
    return np.frombuffer(np.random.default_rng(seed).bytes(nbytes), dtype=np.uint8)


# ------------------------------------------------------------------------------------------------ tiers
@dataclass
class Ops:
    """How the bench puts, gets and deletes the one value it times on a store."""

    name: str
    put: Callable[[np.ndarray], Any]
    get: Callable[[], Any]
    delete: Callable[[], Any]


def tier_ops(tier: Tier) -> Ops:
    return Ops(type(tier).__name__, lambda v: _check(tier.put(KEY, v), f"{tier.name} put"),
               lambda: _check(tier.get(KEY), f"{tier.name} get"), lambda: tier.delete(KEY))


def compare_ops(group: str, n: int, subject: Ops, baseline: Ops, quick: bool, get_target: float | None,
                put_target: float | None = None, put_note: str = "", copy_out: bool = False) -> list[Comparison]:
    """Put (each after a delete, untimed) and get of the same ``n`` random bytes, subject and baseline in
    turns. ``copy_out`` copies each got value into one destination buffer (for zero-copy gets)."""
    src, reps = payload(n), repeats_for(n, quick)
    t = interleaved({"subject": (lambda: subject.put(src), subject.delete),
                     "baseline": (lambda: baseline.put(src), baseline.delete)}, reps)
    size = fmt_bytes(n)
    out = [Comparison(group, f"{group}.put@{size}", f"{subject.name}.put", f"{baseline.name}.put", n,
                      t["subject"], t["baseline"], put_target, put_note)]
    subject.put(src)
    baseline.put(src)
    dst = np.empty(n, dtype=np.uint8)
    op = "get+copy" if copy_out else "get"

    def read(ops: Ops) -> Callable[[], Any]:
        if copy_out:
            return lambda: np.copyto(dst, np.frombuffer(ops.get(), dtype=np.uint8))
        return ops.get

    t = interleaved({"subject": (read(subject), None), "baseline": (read(baseline), None)}, reps)
    out.append(Comparison(group, f"{group}.{op}@{size}", f"{subject.name}.{op}", f"{baseline.name}.{op}", n,
                          t["subject"], t["baseline"], get_target))
    subject.delete()
    baseline.delete()
    return out


def numpy_ops() -> Ops:
    """The baseline of the memory tier: a dict of numpy copies (put = allocate + copy, get = the array)."""
    held: dict[bytes, np.ndarray] = {}

    def put(value: np.ndarray) -> None:
        buf = np.empty(len(value), dtype=np.uint8)
        buf[:] = value
        held[KEY] = buf

    return Ops("numpy", put, lambda: held[KEY], lambda: held.pop(KEY, None))


def lmdb_ops(env: lmdb.Environment) -> Ops:
    """Raw lmdb: one write transaction per put/delete, get + copy out of a read transaction."""
    db = env.open_db(b"blobs")

    def get() -> bytes:
        with env.begin(buffers=True) as txn:
            return bytes(txn.get(KEY, db=db))

    def put(value: np.ndarray) -> None:
        with env.begin(write=True) as txn:
            txn.put(KEY, value, db=db)

    def delete() -> None:
        with env.begin(write=True) as txn:
            txn.delete(KEY, db=db)

    return Ops("lmdb", put, get, delete)


def redis_ops(client: redis.Redis, key: bytes) -> Ops:
    return Ops("redis-py", lambda v: client.set(key, memoryview(v)), lambda: client.get(key), lambda: client.delete(key))


def bench_memory(sizes: Sequence[int], quick: bool) -> list[Comparison]:
    with MemoryTier(2 * max(sizes)) as tier:
        return [c for n in sizes for c in compare_ops("memory", n, tier_ops(tier), numpy_ops(), quick, 0.80, 0.80,
                                                       copy_out=True)]


def bench_lmdb(sizes: Sequence[int], quick: bool, workdir: str) -> list[Comparison]:
    with LMDBTier(os.path.join(workdir, "tier.lmdb"), 2 * max(sizes)) as tier:
        env = _env_like(tier, os.path.join(workdir, "raw.lmdb"))
        try:
            flags = env.flags()
            note = ("one write transaction each, " + ("fsync'd" if flags["sync"] else "no fsync (sync=False)")
                    + (", writable map" if flags["writemap"] else ""))
            return [c for n in sizes for c in compare_ops("lmdb", n, tier_ops(tier), lmdb_ops(env), quick, 0.90,
                                                           put_note=note)]
        finally:
            env.close()


def _env_like(tier: LMDBTier, path: str) -> lmdb.Environment:
    """A separate environment opened with the flags of the tier's own, so that only the tier's code differs
    between subject and baseline (whatever flags the tier chooses), its map as large as the tier's may grow
    (the tier's starts smaller and doubles as it fills; the raw one would stop at MDB_MAP_FULL)."""
    env = tier._env.env  # private on purpose: the baseline must copy the tier's current settings
    flags = {k: v for k, v in env.flags().items() if k not in ("subdir", "readonly")}
    size = max(env.info()["map_size"], tier._map_limit)
    return lmdb.open(path, map_size=size, max_dbs=3, max_readers=env.max_readers(), **flags)


def bench_redis(sizes: Sequence[int], quick: bool, url: str) -> list[Comparison]:
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(url)
    try:
        with RedisTier(url, 4 * max(sizes), namespace=namespace, required=True) as tier:
            raw = redis_ops(client, f"{namespace}-raw".encode())
            return [c for n in sizes for c in compare_ops("redis", n, tier_ops(tier), raw, quick, 0.90,
                                                           put_note="tier: WATCH/MULTI transaction + byte counter")]
    finally:
        _drop_namespace(client, namespace)
        client.close()


def _check(result: Any, what: str) -> Any:
    """``result`` unless it reports a failure (False or None), which would make the timing meaningless."""
    if result is None or result is False:
        raise RuntimeError(f"{what} failed during the benchmark (see the warning above)")
    return result


def _drop_namespace(client: redis.Redis, namespace: str) -> None:
    keys = list(client.scan_iter(match=f"tc:{namespace}:*", count=1000)) + [f"{namespace}-raw".encode()]
    client.delete(*keys)


# ------------------------------------------------------------------------------------------ full path
def _single_tier_cache(tier: str, capacity: int, workdir: str, url: str | None, pinned: bool = False,
                       device: str = "cpu") -> TensorCache:
    """A TensorCache holding only ``tier`` (a fresh LMDB folder or Redis namespace each time)."""
    ns = f"bench-{uuid.uuid4().hex[:8]}"
    if tier == "device":
        return TensorCache(memory=0, device_memory=capacity, device=device, namespace=ns)
    if tier == "memory":
        return TensorCache(memory=capacity, namespace=ns, pinned=pinned)
    if tier == "lmdb":
        return TensorCache(memory=0, disk=os.path.join(workdir, f"{ns}.lmdb"), disk_capacity=capacity, namespace=ns)
    return TensorCache(memory=0, redis=url, redis_capacity=capacity, namespace=ns, redis_required=True)


def _raw_reader(tier: str, cache: TensorCache, blobs: dict[bytes, bytearray], workdir: str, url: str | None
                ) -> tuple[Tier, Callable[[], list[Any]]]:
    """A second tier object on the same store as ``cache``'s (or, for memory, holding the same blobs)."""
    if tier == "memory":
        raw: Tier = MemoryTier(2 * sum(map(len, blobs.values())))
        for digest, blob in blobs.items():
            raw.put(digest, blob)
    elif tier == "lmdb":
        raw = LMDBTier(os.path.join(workdir, f"{cache.namespace}.lmdb"), cache.tiers[0].capacity,
                       namespace=cache.namespace)  # the same store, at its capacity (no warning)
    else:
        raw = RedisTier(url, cache.tiers[0].capacity, namespace=cache.namespace, required=True)

    def read_all() -> list[Any]:  # every value stays alive until all are read, as a lookup's layers do
        return [_check(raw.get(digest), f"{tier} raw get") for digest in blobs]
    return raw, read_all


def bench_lookup(sizes: Sequence[int], quick: bool, workdir: str, url: str) -> list[Comparison]:
    out = []
    for n in sizes:
        rng = np.random.default_rng(1)
        layers = [{"w": rng.standard_normal(n // LOOKUP_LAYERS // 4, dtype=np.float32)} for _ in range(LOOKUP_LAYERS)]
        out += [lookup_case(tier, layers, quick, workdir, url) for tier in ("memory", "lmdb", "redis")]
    return out


def lookup_case(tier: str, layers: list[dict[str, np.ndarray]], quick: bool, workdir: str, url: str) -> Comparison:
    """``TensorCache.lookup`` of ``layers`` from a cache holding only ``tier`` vs raw gets of the payloads."""
    arch = (0,) * len(layers)
    blobs = dict(encode(layer["w"])[:2] for layer in layers)
    total = sum(layer["w"].nbytes for layer in layers)
    cache = _single_tier_cache(tier, 4 * total, workdir, url)
    raw, read_all = _raw_reader(tier, cache, blobs, workdir, url)
    try:
        cache.put("donor", arch, layers)

        t = interleaved({"lookup": (_whole_lookup(cache, arch, total, tier), None), "raw": (read_all, None)},
                        repeats_for(total, quick))
    finally:
        raw.close()
        _close(cache, tier, url)
    note = ("zero-copy on both sides: the ratio is fixed per-lookup cost over dict lookups"
            if tier == "memory" else "lookup verifies each payload's xxh3-128 digest")
    return Comparison("lookup", f"lookup.{tier}@{fmt_bytes(total)}", "TensorCache.lookup",
                      f"{tier} raw get x{len(layers)}", total, t["lookup"], t["raw"], None, note,
                      {"overhead_s": float(np.median(t["lookup"]) - np.median(t["raw"]))})


def _whole_lookup(cache: TensorCache, arch: tuple[int, ...], nbytes: int, tier: str) -> Callable[[], None]:
    """A lookup of ``arch`` that fails unless it serves all ``nbytes`` (a partial hit would flatter the timing)."""
    def lookup() -> None:
        hit = cache.lookup(arch)
        if hit is None or hit.nbytes != nbytes:
            raise RuntimeError(f"{tier} lookup served {hit and hit.nbytes} of {nbytes} bytes")
    return lookup


ROUND_TRIP_LAYERS = 32


def bench_round_trip(quick: bool, workdir: str, url: str, n_layers: int = ROUND_TRIP_LAYERS) -> list[Comparison]:
    """A lookup of a model of ``n_layers`` one-tensor layers from Redis against one GET of the same total bytes,
    and from LMDB against one read transaction of the same payloads, at 1, 5 and 50 MiB (1 MiB when quick)."""
    out = []
    client = redis.Redis.from_url(url)
    for total in ([MiB] if quick else [MiB, 5 * MiB, 50 * MiB]):
        rng = np.random.default_rng(2)
        layers = [{"w": rng.standard_normal(total // n_layers // 4, dtype=np.float32)} for _ in range(n_layers)]
        nbytes = sum(layer["w"].nbytes for layer in layers)
        arch = (0,) * len(layers)
        blobs = dict(encode(layer["w"])[:2] for layer in layers)
        for tier in ("redis", "lmdb"):
            cache = _single_tier_cache(tier, 4 * nbytes, workdir, url)
            raw: Tier | None = None
            try:
                cache.put("donor", arch, layers)
                if tier == "redis":
                    key = f"{cache.namespace}-raw".encode()
                    client.set(key, np.concatenate([layer["w"] for layer in layers]).tobytes())
                    baseline: Callable[[], Any] = lambda: _check(client.get(key), "GET")  # noqa: E731
                    what = "one redis GET of the same bytes"
                else:
                    raw = LMDBTier(os.path.join(workdir, f"{cache.namespace}.lmdb"), cache.tiers[0].capacity,
                                   namespace=cache.namespace)
                    baseline = lambda: [_check(v, "lmdb read") for v in raw.get_many(list(blobs))]  # noqa: E731
                    what = "one LMDB read transaction of the same payloads (copied out, unchecked)"

                t = interleaved({"lookup": (_whole_lookup(cache, arch, nbytes, tier), None), "raw": (baseline, None)},
                                repeats_for(nbytes, quick))
            finally:
                if raw is not None:
                    raw.close()
                _close(cache, tier, url)
            out.append(Comparison("round_trip", f"lookup.{tier}@{fmt_bytes(nbytes)} vs raw", "TensorCache.lookup",
                                  what, nbytes, t["lookup"], t["raw"], 0.5 if tier == "redis" else 0.8,
                                  f"{n_layers} payloads, each read and its digest checked"))
    client.close()
    return out


def bench_served(sizes: Sequence[int], quick: bool) -> list[Comparison]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the warm-start cases: small copies on 2 threads stall on a busy core
    try:
        return [c for n in sizes for c in _served_case(n, quick)]
    finally:
        torch.set_num_threads(threads)


def _served_case(n: int, quick: bool) -> list[Comparison]:
    """``lookup().layers`` of 8 torch layers of ``n`` bytes vs the lookup + one copy, and vs the lookup alone."""
    import torch

    gen = torch.Generator().manual_seed(1)
    layers = [{"w": torch.randn(n // LOOKUP_LAYERS // 4, generator=gen)} for _ in range(LOOKUP_LAYERS)]
    arch = (0,) * LOOKUP_LAYERS
    src = torch.ones(n, dtype=torch.uint8)
    with TensorCache(memory=4 * n, namespace="bench-served") as cache:
        cache.put("donor", arch, layers)
        t = interleaved({"layers": (lambda: cache.lookup(arch).layers, None),
                         "lookup+copy": (lambda: (cache.lookup(arch), src.clone()), None),
                         "lookup": (lambda: cache.lookup(arch), None)}, repeats_for(n, quick))
    size, note = fmt_bytes(n), "memory tier; torch input: each served tensor is the caller's own copy"
    return [Comparison("served", f"served.layers.vs_copy@{size}", "lookup().layers", "lookup() + src.clone()",
                       n, t["layers"], t["lookup+copy"], None, note),
            Comparison("served", f"served.layers.vs_lookup@{size}", "lookup().layers", "lookup() (views)",
                       n, t["layers"], t["lookup"], None, note)]


def _close(cache: TensorCache, tier: str, url: str | None) -> None:
    if tier == "redis":
        client = redis.Redis.from_url(url)
        _drop_namespace(client, cache.namespace)
        client.close()
    cache.close()


# ----------------------------------------------------------------------------------------------- put
def put_models(quick: bool) -> list[tuple[str, tuple[int, ...], dict[str, Any], LayerMap]]:
    """(name, arch, state dict, prefix layer map) of the models the put cases store."""
    import random

    import torch

    from nas_integration.spaces import NB201Space, get_space

    torch.manual_seed(0)
    attn = get_space("attn")
    arch = attn.sample(random.Random(0))
    out = [("attn", arch, attn.build(arch, 10, (784,)).state_dict(), attn.layer_map(arch, "prefix"))]
    for c in () if quick else (16, 32):
        nb201 = NB201Space(C=c, N=5)
        arch = nb201.encode(BEST_NB201)
        out.append((f"nb201-C{c}", arch, nb201.build(arch, 10, (3, 32, 32)).state_dict(), nb201.layer_map(arch, "prefix")))
    return out


def bench_put(quick: bool, workdir: str) -> list[Comparison]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        models = put_models(quick)
        return [c for model in models for c in _put_cases(*model, quick, workdir)] + \
            _series_cases(*models[0], quick, workdir)
    finally:
        torch.set_num_threads(threads)


def _series_cases(name: str, arch: tuple[int, ...], state: dict[str, Any], lmap: LayerMap, quick: bool,
                  workdir: str) -> list[Comparison]:
    """A search's first puts: a memory + LMDB cache opened on a new file, N models of new values put into it
    (its first write and its map's growth included) and closed, against a new environment opened with the
    tier's flags, N raw write transactions of the same payloads, closed; each put followed by a pause of
    SETTLE_S. Timed in the CPU time of all the process's threads, and in that of the caller's thread alone
    (what a training thread pays)."""
    n = 6 if quick else 24
    nbytes = sum(v.numel() * v.element_size() for v in state.values())
    room = 4 * n * nbytes
    probe = TensorCache(memory=room, disk=os.path.join(workdir, "series-probe.lmdb"), disk_capacity=room)
    made = [0]
    now: dict[str, Any] = {}

    def fresh(encoded: bool) -> Callable[[], None]:
        def setup() -> None:  # new values, a new file
            made[0] += 1
            shutil.rmtree(os.path.join(workdir, "series.lmdb"), ignore_errors=True)
            states = [{k: v + made[0] * n + i if v.is_floating_point() else v for k, v in state.items()}
                      for i in range(n)]
            now["states"] = states
            now["blobs"] = [[encode(v)[:2] for v in s.values()] for s in states] if encoded else None
        return setup

    def series() -> None:
        cache = TensorCache(memory=room, disk=os.path.join(workdir, "series.lmdb"), disk_capacity=room,
                            namespace="bench-series")
        for i, values in enumerate(now["states"]):
            cache.put(f"m{i}", arch, values, layer_map=lmap)
            time.sleep(SETTLE_S)
        cache.close()

    def raw_series() -> None:
        env = _env_like(probe.tiers[1], os.path.join(workdir, "series.lmdb"))
        for blobs in now["blobs"]:
            with env.begin(write=True) as txn:
                for key, blob in blobs:
                    txn.put(key, blob)
            time.sleep(SETTLE_S)
        env.close()

    cases = {"series": (series, fresh(False)), "raw series": (raw_series, fresh(True))}
    try:
        cpu = interleaved(cases, 2 if quick else 3, clock=time.process_time)
        caller = interleaved(cases, 2 if quick else 3, clock=time.thread_time)
    finally:
        probe.close()
        shutil.rmtree(os.path.join(workdir, "series.lmdb"), ignore_errors=True)
    note = f"{name}: {len(state)} tensors, the first write and the map's growth included"
    return [Comparison("put", f"put.{name}.lmdb_series.vs_raw.{suffix}",
                       f"{n} puts (memory + lmdb) into a new file, opened and closed, CPU time of {whose}",
                       f"{n} raw lmdb write transactions into a new file, opened and closed, CPU time", n * nbytes,
                       t["series"], t["raw series"], 1 / 1.2, note)
            for suffix, whose, t in (("cpu", "all threads", cpu), ("thread", "the caller's thread", caller))]


def _put_cases(name: str, arch: tuple[int, ...], state: dict[str, Any], lmap: LayerMap, quick: bool,
               workdir: str) -> list[Comparison]:
    """``TensorCache.put`` of ``state`` (its values changed every repeat, so every payload is new) into the
    memory tier, memory + LMDB, and memory + a full LMDB tier, each against its baseline, in turns."""
    from collections import deque

    from tensorcache.keys import digest

    nbytes = sum(v.numel() * v.element_size() for v in state.values())
    reps = 3 if quick else max(5, min(15, (256 * MiB) // nbytes))
    room = (2 * reps + 4) * 2 * nbytes  # the LMDB tier never evicts: two series of puts, warm-ups included
    one_model = sum(len(encode(v)[1]) for v in state.values())
    steady = 2 * one_model + one_model // 2  # holds two models: every put evicts the oldest, as in a long search
    mem = TensorCache(memory=steady, namespace="bench-put")
    disk = TensorCache(memory=room, disk=os.path.join(workdir, f"put-{name}.lmdb"), disk_capacity=room,
                       namespace="bench-put")
    # a search past its first models: the memory tier full (each put evicts its oldest), the LMDB tier with room
    past = TensorCache(memory=steady, disk=os.path.join(workdir, f"put-past-{name}.lmdb"), disk_capacity=room,
                       namespace="bench-put")
    # a long search's steady state: both tiers full (a memory tier that never evicted would have each put's
    # encoding write into new heap pages, a page fault per 4 KiB that a search with a full memory tier does not pay)
    full = TensorCache(memory=steady, disk=os.path.join(workdir, f"put-full-{name}.lmdb"), disk_capacity=steady,
                       namespace="bench-put")
    env = _env_like(disk.tiers[1], os.path.join(workdir, f"put-raw-{name}.lmdb"))
    full_envs = [_env_like(disk.tiers[1], os.path.join(workdir, f"put-raw-full{i}-{name}.lmdb")) for i in (1, 2)]
    made = [0]
    now: dict[str, Any] = {}
    kept: list[Any] = []

    def fresh(encoded: bool = False) -> Callable[[], None]:
        def setup() -> None:  # new values each time: no payload is stored already
            made[0] += 1
            now["state"] = {k: v + made[0] if v.is_floating_point() else v + made[0] % 7 for k, v in state.items()}
            now["arrays"] = [v.numpy() for v in now["state"].values()]
            now["blobs"] = [encode(v)[:2] for v in now["state"].values()] if encoded else None
        return setup

    def put(cache: TensorCache) -> Callable[[], None]:
        return lambda: cache.put(f"m{made[0]}", arch, now["state"], layer_map=lmap)

    def copy_and_hash() -> None:  # kept as the memory tier keeps its copies: the last two models, the oldest freed
        copies = []
        for arr in now["arrays"]:
            buf = np.empty_like(arr)
            np.copyto(buf, arr)
            copies.append((buf, digest(buf)))
        kept.append(copies)
        if len(kept) > 2:
            del kept[0]

    def settled(call: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:  # then a pause (no CPU) for work the call left to other threads: the LMDB tier's page preparation
            call()
            time.sleep(SETTLE_S)
        return run

    def raw_put(into: lmdb.Environment, keep: int | None) -> Callable[[], None]:
        older: deque[list[bytes]] = deque()

        def run() -> None:  # with ``keep``: also delete the payloads put ``keep`` models ago, in the same transaction
            with into.begin(write=True) as txn:
                for key, blob in now["blobs"]:
                    txn.put(key, blob)
                if keep is not None:
                    older.append([key for key, _ in now["blobs"]])
                    while len(older) > keep:
                        for key in older.popleft():
                            txn.delete(key)
        return run

    def both(first: Callable[[], None], then: Callable[[], None]) -> Callable[[], None]:
        return lambda: (first(), then())

    try:
        steady_cases = {"memory+full lmdb": (put(full), fresh()),
                        "raw full lmdb": (raw_put(full_envs[0], 2), fresh(encoded=True)),
                        "memory, then raw full lmdb": (both(put(mem), raw_put(full_envs[1], 2)), fresh(encoded=True))}
        for _ in range(SETTLE_PUTS):  # untimed: each file reaches its steady state (SETTLE_PUTS)
            for call, setup in (*steady_cases.values(), (put(past), fresh())):
                setup()
                call()
        t = interleaved({"memory": (put(mem), fresh()), "copy+hash": (copy_and_hash, fresh()),
                         "memory+lmdb": (put(disk), fresh()), "raw lmdb": (raw_put(env, None), fresh(encoded=True)),
                         **steady_cases}, reps)
        cpu = interleaved({"memory": (put(mem), fresh()), "copy+hash": (copy_and_hash, fresh()),
                           "memory+lmdb": (settled(put(disk)), fresh()),
                           "full memory+lmdb": (settled(put(past)), fresh()),
                           "raw lmdb": (settled(raw_put(env, None)), fresh(encoded=True))}, reps,
                          clock=time.process_time)
    finally:
        env.close()
        for each in full_envs:
            each.close()
        for cache in (mem, disk, past, full):
            cache.close()
    note = f"{name}: {len(state)} tensors, {len(lmap)} layers"
    return [Comparison("put", f"put.{name}.memory.vs_copy+hash", "put (memory, full: evicts)",
                       "copy + xxh3 of each tensor", nbytes, t["memory"], t["copy+hash"], 1 / 3, note),
            Comparison("put", f"put.{name}.memory.vs_copy+hash.cpu", "put (memory, full: evicts), CPU time",
                       "copy + xxh3 of each tensor, CPU time", nbytes, cpu["memory"], cpu["copy+hash"], 1 / 3, note),
            Comparison("put", f"put.{name}.lmdb.vs_raw", "put (memory + lmdb)", "raw lmdb put, one transaction",
                       nbytes, t["memory+lmdb"], t["raw lmdb"], 1 / 1.2, note),
            Comparison("put", f"put.{name}.lmdb.vs_raw.cpu", "put (memory + lmdb), CPU time of all threads",
                       "raw lmdb put, one transaction, CPU time", nbytes, cpu["memory+lmdb"], cpu["raw lmdb"], 1 / 1.2,
                       note),
            Comparison("put", f"put.{name}.lmdb.full_memory.vs_raw.cpu",
                       "put (full memory: evicts, + lmdb), CPU time of all threads",
                       "raw lmdb put, one transaction, CPU time", nbytes, cpu["full memory+lmdb"], cpu["raw lmdb"],
                       1 / 1.2, note + "; the memory tier's copy reuses the pages its evictions free"),
            Comparison("put", f"put.{name}.full_lmdb.vs_raw", "put (memory + full lmdb: evicts)",
                       "raw lmdb put + delete of the oldest model, one transaction", nbytes, t["memory+full lmdb"],
                       t["raw full lmdb"], 1 / 1.2, note),
            Comparison("put", f"put.{name}.full_lmdb.vs_memory+raw", "put (memory + full lmdb: evicts)",
                       "put (memory, full), then raw lmdb put + delete of the oldest model", nbytes,
                       t["memory+full lmdb"], t["memory, then raw full lmdb"], None,
                       note + "; what the lmdb tier adds to a memory put against what one raw transaction adds")]


# ---------------------------------------------------------------------------------------- warm start
def bench_warm_start(quick: bool, workdir: str, url: str | None, channels: Sequence[int] = (16, 32)
                     ) -> list[Comparison]:
    import torch

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    threads = torch.get_num_threads()
    if not cuda:  # small copies on 2 threads stall whenever another process holds a core
        torch.set_num_threads(1)
    try:
        return _warm_start_cases((16,) if quick else channels, quick, workdir, url, device)
    finally:
        torch.set_num_threads(threads)


def _warm_start_cases(widths: Sequence[int], quick: bool, workdir: str, url: str | None, device: Any
                      ) -> list[Comparison]:
    import torch

    from nas_integration.spaces import NB201Space

    out = []
    for channels in widths:  # C=16: 4.9 MiB; C=32: 19.7 MiB, both 489 tensors
        space = NB201Space(C=channels, N=5)
        arch = space.encode(BEST_NB201)
        torch.manual_seed(0)
        donor = space.build(arch, 10, (3, 32, 32))
        state = {k: v.clone() for k, v in donor.state_dict().items()}
        target = space.build(arch, 10, (3, 32, 32)).to(device)
        reps = 3 if quick else 20
        label = "warm" if channels == 16 else f"warm.C{channels}"
        target_ratio = 0.8 if channels >= 32 else 0.5
        out += [c for mode in ("compatible", "prefix")
                for c in warm_mode(space.layer_map(arch, mode), arch, state, target, reps, workdir, url, label,
                                   target_ratio)]
    return out


WARM_TIERS = ("device", "memory", "lmdb", "redis")


def warm_mode(lmap: LayerMap, arch: tuple[int, ...], state: dict[str, Any], target: Any, reps: int, workdir: str,
              url: str | None, label: str = "warm", target_ratio: float = 0.5) -> list[Comparison]:
    """Warm starts from each tier vs load_state_dict and vs one copy of the same bytes (pinned host-to-device
    on CUDA, host to host on CPU); LMDB also vs raw reads + that copy; the foreach floor vs that copy."""
    import torch

    device = next(target.parameters()).device
    cuda = device.type == "cuda"
    params = [p for layer in lmap.layers for p in layer.params]
    nbytes = sum(state[p].numel() * state[p].element_size() for p in params)
    src = torch.empty(nbytes, dtype=torch.uint8, pin_memory=cuda)
    dst = torch.empty(nbytes, dtype=torch.uint8, device=device)
    copy = "pinned H2D copy" if cuda else "torch copy"
    module_tensors = target.state_dict(keep_vars=True)
    floor_dst = [module_tensors[p] for p in params]
    floor_src = [state[p].to(device) for p in params]

    def foreach_floor() -> None:
        with torch.no_grad():
            torch._foreach_copy_(floor_dst, floor_src)
        _sync(None, cuda)

    cases: dict[str, Any] = {"load_state_dict": (lambda: _sync(target.load_state_dict(state), cuda), None),
                             "copy": (lambda: _sync(dst.copy_(src, non_blocking=cuda), cuda), None),
                             "foreach": (foreach_floor, None)}
    caches: dict[str, TensorCache] = {}
    raw: Tier | None = None
    try:
        for tier in WARM_TIERS if url else [t for t in WARM_TIERS if t != "redis"]:
            caches[tier] = _single_tier_cache(tier, 64 * MiB, workdir, url, pinned=cuda, device=str(device))
            caches[tier].put("donor", arch, state, layer_map=lmap)
            cases[tier] = (_warm(caches[tier], target, arch, lmap, nbytes, cuda), None)
        blobs = dict(encode(state[p])[:2] for p in params)
        raw, read_all = _raw_reader("lmdb", caches["lmdb"], blobs, workdir, url)
        cases["lmdb_read+copy"] = (lambda: (read_all(), _sync(dst.copy_(src, non_blocking=cuda), cuda)), None)
        t = interleaved(cases, reps, warmup=2)
    finally:
        if raw is not None:
            raw.close()
        for tier, cache in caches.items():
            _close(cache, tier, url)
    note = f"{len(lmap)} layers, {len(params)} tensors, {device}, {torch.get_num_threads()} torch thread(s)"
    out = []
    for tier in caches:
        out.append(Comparison("warm_start", f"{label}.{lmap.mode}.{tier}.vs_load", f"warm_start({tier})",
                              "load_state_dict", nbytes, t[tier], t["load_state_dict"], None, note))
        out.append(Comparison("warm_start", f"{label}.{lmap.mode}.{tier}.vs_copy", f"warm_start({tier})", copy,
                              nbytes, t[tier], t["copy"], target_ratio if tier in ("device", "memory")
                              else None, note))
    out.append(Comparison("warm_start", f"{label}.{lmap.mode}.lmdb.vs_read+copy", "warm_start(lmdb)",
                          f"raw lmdb reads + {copy}", nbytes, t["lmdb"], t["lmdb_read+copy"], None, note))
    out.append(Comparison("warm_start", f"{label}.{lmap.mode}.foreach_floor.vs_copy", "_foreach_copy_ (floor)", copy,
                          nbytes, t["foreach"], t["copy"], None, note))
    return out


def _sync(result: Any, cuda: bool) -> Any:
    if cuda:
        import torch

        torch.cuda.synchronize()
    return result


def _warm(cache: TensorCache, target: Any, arch: tuple[int, ...], lmap: LayerMap, nbytes: int,
          cuda: bool) -> Callable[[], None]:
    def run() -> None:
        report = cache.warm_start(target, arch, layer_map=lmap)
        _sync(None, cuda)  # device-to-device copies return before they finish
        if report.nbytes != nbytes or report.skipped:
            raise RuntimeError(f"warm start moved {report.nbytes} of {nbytes} bytes; skipped {report.skipped[:3]}")
    return run


# ------------------------------------------------------------------------------------------------ main
def parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(float(s) * MiB) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sizes takes MiB numbers separated by commas, got {text!r}") from None
    if not sizes or any(s < 4 * LOOKUP_LAYERS for s in sizes):
        raise argparse.ArgumentTypeError(f"--sizes needs positive sizes in MiB, got {text!r}")
    return sizes


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=parse_sizes, default=None, metavar="MiB,...",
                   help="value sizes in MiB (default: 1,16,64,256; --quick: 1)")
    p.add_argument("--redis", metavar="URL", help="redis server to use (default: $TENSORCACHE_TEST_REDIS_URL, "
                                                   "else a throwaway redis-server on loopback)")
    p.add_argument("--out", metavar="DIR", default="bench_out", help="where tiers.csv/json go (default: bench_out)")
    p.add_argument("--quick", action="store_true", help="CI smoke size: 1 MiB, 3 repeats")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {', '.join(PARTS)}")
    p.add_argument("--warm-channels", type=lambda text: numbers(text, int), default=[16, 32],
                   metavar="C,...", help="NB201 widths the warm start part uses (default 16,32; --quick: 16)")
    p.add_argument("--round-trip-layers", type=positive_int, default=ROUND_TRIP_LAYERS, metavar="N",
                   help=f"layers of the model the round_trip part looks up (default {ROUND_TRIP_LAYERS})")
    args = p.parse_args(dashed_values(argv))
    sizes = args.sizes or ([MiB] if args.quick else [s * MiB for s in (1, 16, 64, 256)])
    meta = {**machine(), "sizes": sizes, "quick": args.quick}
    print(f"bench/tiers.py on {meta['device']}, {meta['cpus']} CPUs, {meta['date']}")
    t0 = time.perf_counter()
    comparisons: list[Comparison] = []
    wanted = [part.strip() for part in args.parts.split(",") if part.strip()]
    needs_redis = bool(REDIS_PARTS & set(wanted))
    with tempfile.TemporaryDirectory(prefix="bench-tiers-") as workdir, redis_url(args.redis, needs_redis) as url:
        print(f"redis: {url or 'none (no redis-server here: the warm start leaves its Redis tier out)'}")
        parts = {"memory": ("memory tier", lambda: bench_memory(sizes, args.quick)),
                 "lmdb": ("lmdb tier", lambda: bench_lmdb(sizes, args.quick, workdir)),
                 "redis": ("redis tier", lambda: bench_redis(sizes, args.quick, url)),
                 "lookup": ("TensorCache.lookup vs raw tier gets", lambda: bench_lookup(sizes, args.quick, workdir, url)),
                 "round_trip": ("lookup from Redis vs one GET of the same bytes",
                                lambda: bench_round_trip(args.quick, workdir, url, args.round_trip_layers)),
                 "served": ("served tensors: copies vs one plain copy", lambda: bench_served(sizes, args.quick)),
                 "put": ("TensorCache.put of a whole model", lambda: bench_put(args.quick, workdir)),
                 "warm_start": ("warm start of NB201 N=5", lambda: bench_warm_start(args.quick, workdir, url,
                                                                                      args.warm_channels))}
        unknown = set(wanted) - set(PARTS)
        if unknown:
            p.error(f"unknown parts {sorted(unknown)}; choose from {', '.join(PARTS)}")
        for title, run in (parts[part] for part in PARTS if part in wanted):
            got = run()
            print_comparisons(title, got)
            comparisons += got
    meta["seconds"] = time.perf_counter() - t0
    csv_path, _ = write_comparisons(args.out, "tiers", comparisons, meta)
    short = [c.label for c in comparisons if c.met is False]
    print(f"\n{len(comparisons)} comparisons in {meta['seconds']:.0f} s; targets short: {', '.join(short) or 'none'}")
    print(f"wrote {csv_path} and tiers.json")
    return 0


if __name__ == "__main__":
    sys.exit(exit_status(main))
