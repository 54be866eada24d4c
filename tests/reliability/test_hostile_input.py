"""Hostile payload headers and hostile catalog records in a shared log: rejected before any allocation they
ask for, counted, and never a crash or a wrong tensor."""
from __future__ import annotations

import hashlib
import json
import struct
import time
import tracemalloc
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
import redis

from tensorcache import LayerMap, TensorCache
from tensorcache.payload import MAGIC, PayloadError, decode, encode

TB = 2**40
SMALL = 1 << 20  # bytes: what rejecting a hostile input may cost at most


@contextmanager
def allocation_peak() -> Any:
    """Measure the peak of Python allocations inside the block (``peak[0]``, bytes)."""
    peak = [0]
    tracemalloc.start()
    try:
        yield peak
    finally:
        peak[0] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()


def _blob(meta: Any, body: bytes = b"\0" * 16) -> bytes:
    raw = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
    return MAGIC + struct.pack("<I", len(raw)) + raw + body


HEADERS: dict[str, bytes] = {
    "claims-1TB": _blob({"dtype": "float32", "shape": [2**38], "nbytes": TB}),
    "claims-2^80-elements": _blob({"dtype": "float32", "shape": [2**40, 2**40], "nbytes": 16}),
    "claims-over-the-limit": _blob({"dtype": "uint8", "shape": [2 * TB], "nbytes": 2 * TB}),
    "unknown-dtype": _blob({"dtype": "object", "shape": [2], "nbytes": 16}),
    "numpy-string-dtype": _blob({"dtype": "<U4", "shape": [1], "nbytes": 16}),
    "negative-dim": _blob({"dtype": "uint8", "shape": [-16], "nbytes": 16}),
    "bool-dim": _blob({"dtype": "uint8", "shape": [True], "nbytes": 1}, b"\0"),
    "float-dim": _blob({"dtype": "uint8", "shape": [16.0], "nbytes": 16}),
    "nine-dims": _blob({"dtype": "uint8", "shape": [1] * 9, "nbytes": 1}, b"\0"),
    "shape-not-a-list": _blob({"dtype": "uint8", "shape": "16", "nbytes": 16}),
    "shape-disagrees-with-length": _blob({"dtype": "float32", "shape": [3], "nbytes": 16}),
    "length-mismatch": _blob({"dtype": "float32", "shape": [8], "nbytes": 32}),
    "header-length-lies": MAGIC + struct.pack("<I", 2**31) + b"{}",
    "header-not-json": _blob(b"{dtype: float32}"),
    "header-not-an-object": _blob([1, 2, 3]),
    "header-nesting-bomb": _blob(b"[" * 2000 + b"]" * 2000),
    "pickle": b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00\x8c\x08builtins\x94\x8c\x04eval\x94\x93\x94.",
}


@pytest.mark.parametrize("name", sorted(HEADERS))
def test_a_hostile_header_is_rejected_before_allocating_what_it_claims(name):
    blob = HEADERS[name]
    with allocation_peak() as peak, pytest.raises(PayloadError):
        decode(b"k" * 16, blob)
    assert peak[0] < SMALL, f"{name}: rejecting it allocated {peak[0]} bytes"


def test_a_hostile_payload_in_the_store_is_a_miss_without_the_allocation(store, layers_of, genuine):
    writer = TensorCache(memory=0, **store.settings)
    writer.put("m1", (1, 2), layers_of(1, 2))
    writer.close()
    store.set(encode(layers_of(1, 2)[1]["w1"])[0], HEADERS["claims-1TB"])
    reader = TensorCache(memory="1MB", **store.settings)
    with allocation_peak() as peak:
        hit = reader.lookup((1, 2))
    assert peak[0] < SMALL
    assert hit.prefix_len == 1 and reader.stats()["corrupt"] == 1
    genuine(hit, {"m1": (1, 2)}, (1, 2))
    reader.close()


def test_a_hostile_chunk_manifest_in_redis_costs_neither_memory_nor_time(redis_url, redis_namespace, layers_of):
    writer = TensorCache(memory=0, redis=redis_url, namespace=redis_namespace)
    writer.put("m1", (1, 2), layers_of(1, 2))
    writer.close()
    digest = encode(layers_of(1, 2)[1]["w1"])[0]
    with redis.Redis.from_url(redis_url) as raw:  # layer 1 now claims to be 2**20 chunks of 1 MiB
        prefix = f"tc:{redis_namespace}:".encode()
        raw.delete(prefix + b"v:" + digest)
        raw.set(prefix + b"m:" + digest, struct.pack(">QQ", TB, 2**20))
    reader = TensorCache(memory="1MB", redis=redis_url, namespace=redis_namespace)
    start = time.monotonic()
    with allocation_peak() as peak:
        hit = reader.lookup((1, 2))
    assert peak[0] < SMALL and time.monotonic() - start < 1.0
    assert hit.donor == "m1" and hit.prefix_len == 1
    reader.close()


# ---------------------------------------------------------------- hostile model records in a shared store
def _record(model_id: str, arch: list, tensor: dict[str, Any], namespace: str = "elsewhere") -> dict[str, Any]:
    """A model record as JSON whose layer keys are those of ``arch`` in ``namespace``; ``tensor`` overrides
    fields of the single tensor of each layer."""
    layers = []
    for i, key in enumerate(LayerMap.generic(len(arch)).keys(namespace, [int(a) for a in arch])):
        fields = {"digest": (b"d" * 16).hex(), "dtype": "float32", "shape": [4], "nbytes": 16, **tensor}
        layers.append({"key": key.hex(), "deps": list(range(i + 1)), "tensors": {f"w{i}": fields}})
    return {"model_id": model_id, "arch": arch, "score": 0.5, "parent": None, "layers": layers}


def _raw(record: dict[str, Any]) -> bytes:
    return json.dumps(record).encode()


TARGET = (5, 5, 5)  # the architecture a hostile record pretends to hold layers for
MALFORMED: dict[str, bytes] = {  # each must be counted as corrupt
    "pickle": HEADERS["pickle"],
    "not-json": b"\xff\xfe garbage",
    "json-array": b"[1, 2]",
    "nesting-bomb": b"[" * 100_000 + b"]" * 100_000,
    "infinite-arch": _raw(_record("infinite-arch", [1, 2], {})).replace(b'"arch": [1, 2]', b'"arch": [Infinity, 2]'),
    "arch-over-the-key-range": _raw({**_record("arch-over-the-key-range", [1, 2], {}), "arch": [2**64, 2]}),
    "arch-of-bools": _raw({**_record("arch-of-bools", [1, 1], {}), "arch": [True, False]}),
    "score-not-a-number": _raw({**_record("score-not-a-number", [1], {}), "score": "NaN?"}),
    "tensor-over-the-limit": _raw(_record("tensor-over-the-limit", [6], {"shape": [2 * TB], "dtype": "uint8",
                                                                          "nbytes": 2 * TB})),
    "nine-dims": _raw(_record("nine-dims", [6], {"shape": [1] * 8 + [4]})),
    "unknown-dtype": _raw(_record("unknown-dtype", [6], {"dtype": "object"})),
    "shape-disagrees-with-nbytes": _raw(_record("shape-disagrees-with-nbytes", [6], {"shape": [1000]})),
    "digest-not-hex": _raw(_record("digest-not-hex", [6], {"digest": "zz" * 16})),
    "digest-too-short": _raw(_record("digest-too-short", [6], {"digest": "ab"})),
    "layers-not-a-list": _raw({**_record("layers-not-a-list", [6], {}), "layers": {"0": 1}}),
    "names-another-model": _raw(_record("m1", [6], {})),  # would shadow the genuine m1
    "held-out-of-range": _raw(_record("held-out-of-range", [6], {})),  # planted as holding layer 7
}


def test_hostile_model_records_are_counted_skipped_and_cost_nothing(store, planter, layers_of, genuine):
    for name, raw in MALFORMED.items():
        planter(store, name, raw, held=(7,) if name == "held-out-of-range" else (0,))
    planted = hashlib.blake2b(b"planted bytes", digest_size=16).hexdigest()  # the payload ``planter`` stores
    tera = _record("tera", list(TARGET), {"shape": [2**38], "nbytes": TB, "digest": planted}, store.namespace)
    planter(store, "tera", _raw(tera), held=(0, 1, 2))  # well formed; its payloads are not what it claims
    writer = TensorCache(memory=0, **store.settings)  # a legitimate worker that joins after the attack
    assert writer.put("m1", (1, 2), layers_of(1, 2)).written > 0
    assert writer.stats()["corrupt"] == len(MALFORMED)
    writer.close()
    reader = TensorCache(memory="1MB", **store.settings)
    with allocation_peak() as peak:
        hit = reader.lookup((1, 2))
        target = reader.lookup(TARGET)
    assert peak[0] < 8 * SMALL, f"reading the hostile records allocated {peak[0]} bytes"
    genuine(hit, {"m1": (1, 2)}, (1, 2))
    assert hit.prefix_len == 2
    assert target is None  # the 1 TB "donor" was proposed, its payload's length was wrong: dropped, a miss
    assert any(reason.endswith(":corrupt") for reason in reader.stats()["evictions"])
    assert reader.stats()["corrupt"] == len(MALFORMED) + 1
    reader.close()


def test_a_record_disagreeing_with_its_payload_is_never_served(store, planter, layers_of):
    writer = TensorCache(memory=0, **store.settings)
    writer.put("m1", (1, 2), layers_of(1, 2))
    writer.close()
    real = encode(layers_of(1, 2)[0]["w0"])  # a real payload: float32, shape [16]
    liar = _record("liar", [9, 9], {"digest": real[0].hex(), "shape": [2, 8], "nbytes": 64}, store.namespace)
    planter(store, "liar", _raw(liar), held=(0, 1), payload=bytes(real[1]))
    reader = TensorCache(memory="1MB", **store.settings)
    assert reader.lookup((9, 9)) is None
    assert reader.stats()["corrupt"] >= 1
    hit = reader.lookup((1, 2))  # the real model is untouched
    assert hit.donor == "m1" and hit.prefix_len == 2 and np.all(hit.layers[0]["w0"] == 1000)
    reader.close()
