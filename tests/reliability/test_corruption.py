"""Damaged payloads in LMDB or Redis are detected, counted, dropped and treated as a miss: never served."""
from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import pytest

from tensorcache import TensorCache
from tensorcache.payload import encode

ARCHS = {"m1": (1, 2, 3), "m2": (1, 2, 4)}  # m2 shares two layers' prefix with m1 and scores lower


def _flip(blob: bytes, at: int) -> bytes:
    return blob[:at] + bytes([blob[at] ^ 0x01]) + blob[at + 1:]


DAMAGES: dict[str, Callable[[bytes, bytes], bytes]] = {
    "flipped-data-bit": lambda blob, other: _flip(blob, len(blob) - 3),
    "flipped-header-bit": lambda blob, other: _flip(blob, 30),
    "truncated": lambda blob, other: blob[:-4],
    "extended": lambda blob, other: blob + b"\0\0\0\0",
    "emptied": lambda blob, other: b"",
    "valid-payload-of-another-tensor": lambda blob, other: other,
}


def _digest(model: int, layer: int, layers_of) -> bytes:
    return encode(layers_of(model, 3)[layer][f"w{layer}"])[0]


def _fill(store, layers_of) -> None:
    writer = TensorCache(memory=0, **store.settings)
    for model, arch in ARCHS.items():
        writer.put(model, arch, layers_of(int(model[1:]), 3), score={"m1": 0.9, "m2": 0.5}[model])
    writer.close()


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_payload_is_counted_released_and_never_served(store, damage, layers_of, genuine, caplog):
    _fill(store, layers_of)
    deep, other = _digest(1, 2, layers_of), _digest(2, 2, layers_of)
    store.set(deep, DAMAGES[damage](store.get(deep), store.get(other)))
    reader = TensorCache(memory="1MB", **store.settings)
    with caplog.at_level(logging.WARNING, logger="tensorcache"):
        hit = reader.lookup(ARCHS["m1"])
    assert hit.donor == "m1" and hit.prefix_len == 2  # layer 2 was damaged: the hit stops before it
    genuine(hit, ARCHS, ARCHS["m1"])
    assert reader.stats()["corrupt"] == 1
    assert "releasing m1 layer 2" in caplog.text
    again = reader.lookup(ARCHS["m1"])
    assert again.prefix_len == 2 and reader.stats()["corrupt"] == 1  # dropped, not read again
    reader.close()  # before raw access: LMDB allows one open environment per file and process
    assert store.get(deep) is None, "the damaged payload must be removed from the store"

    shallow = _digest(1, 0, layers_of)  # now the first layer: m1 cannot serve at all, m2 steps in
    store.set(shallow, DAMAGES[damage](store.get(shallow), store.get(_digest(2, 0, layers_of))))
    fresh = TensorCache(memory="1MB", **store.settings)
    hit = fresh.lookup(ARCHS["m1"])
    assert hit.donor == "m2" and hit.prefix_len == 2
    genuine(hit, ARCHS, ARCHS["m1"])
    assert fresh.stats()["corrupt"] == 1 and fresh.stats()["hits"] == 1
    fresh.close()


def test_bit_rot_inside_the_lmdb_file_is_caught_by_the_digest(lmdb_store, layers_of, genuine):
    store = lmdb_store
    _fill(store, layers_of)
    with open(store.path / "data.mdb", "r+b") as data:
        raw = bytearray(data.read(store.in_use()))
        needle = np.full(16, 1002, dtype=np.float32).tobytes()  # m1's layer 2 values, as they lie on disk
        at = raw.find(needle)
        assert at >= 0
        while at >= 0:  # copy-on-write may have left stale copies in free pages: rot them all
            raw[at + 5] ^= 0x40
            at = raw.find(needle, at + 1)
        data.seek(0)
        data.write(raw)
    reader = TensorCache(memory="1MB", disk=store.path)
    hit = reader.lookup(ARCHS["m1"])
    assert hit.donor == "m1" and hit.prefix_len == 2
    genuine(hit, ARCHS, ARCHS["m1"])
    assert reader.stats()["corrupt"] == 1
    reader.close()
