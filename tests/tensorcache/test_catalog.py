"""Model records in their stored form: format 2 (packed) round-trips, format 1 (JSON) is still read, and
a damaged or hostile packed record is a PayloadError naming what is wrong, never a record."""
from __future__ import annotations

import json
import math
import random
import struct

import pytest

from tensorcache.catalog import RECORD_MAGIC, Catalog, LayerRecord, ModelRecord, TensorRef, rank
from tensorcache.payload import PayloadError

W = TensorRef(b"w" * 16, "float32", (2, 3), 24, "torch")
B = TensorRef(b"b" * 16, "int8", (), 1)
RECORD = ModelRecord("m1", (1, 2**63 - 1, 0), 0.25, "p0", (LayerRecord(b"k" * 16, {"w": W, "bias": B}, (0, 1)),
                                                         LayerRecord(b"j" * 16, {}, ())), "compatible")


def test_packed_records_round_trip_every_field():
    raw = RECORD.encoded
    assert raw.startswith(RECORD_MAGIC)
    back = ModelRecord.from_bytes(raw)
    assert back == RECORD and back.layers[0].blob_bytes == RECORD.layers[0].blob_bytes > 25
    assert ModelRecord.from_bytes(ModelRecord("x", (3,), None, None, ()).encoded).score is None


def test_the_catalog_knows_which_tiers_hold_each_entry_and_forgets_a_model_held_nowhere():
    catalog = Catalog()
    assert catalog.hold(RECORD, 0, 0) and catalog.hold(RECORD, 0, 2) and not catalog.hold(RECORD, 0, 2)
    assert catalog.tiers_of(("m1", 0)) == [0, 2] and catalog.holds(("m1", 0), 2) and not catalog.holds(("m1", 0), 1)
    assert catalog.held_in([2]) == [("m1", 0)] and catalog.held_in([1]) == []
    assert catalog.release(("m1", 0), 0) and not catalog.release(("m1", 0), 0)
    assert catalog.tiers_of(("m1", 0)) == [2] and catalog.record("m1") is RECORD
    assert catalog.release(("m1", 0), 2) and catalog.record("m1") is None and not catalog.check()



def _plain_find(held: dict[str, dict[bytes, int]], scores: dict[str, float | None], keys: list[bytes],
                parent: str | None, mode: str, skip: set[str]) -> tuple[str, list[tuple[int, int]]] | None:
    """The donor rule read plainly over every held model: ``held`` maps a model to {layer key: layer index}
    of the layers some tier holds."""
    def depth(m: str) -> int:
        if mode == "compatible":
            return sum(k in held[m] for k in keys)
        run = 0
        while run < len(keys) and keys[run] in held[m]:
            run += 1
        return run

    cands = {m: depth(m) for m in held if m not in skip}
    best = max(cands.values(), default=0)
    if not best:
        return None
    tied = [m for m, d in cands.items() if d == best]
    donor = parent if parent in tied else min(tied, key=lambda m: (rank(scores[m]), m))
    upto = keys if mode == "compatible" else keys[:best]
    return donor, [(j, held[donor][k]) for j, k in enumerate(upto) if k in held[donor]]


@pytest.mark.parametrize("seed", range(6))
def test_the_donor_search_picks_what_the_plain_rule_picks(seed):
    """Random holds and releases over two tiers, random children (often a held model's own keys or a
    prefix of them, sometimes shifted by a position), parents and unreadable donors; every answer is the
    plain rule's, and the catalog stays whole."""
    rng = random.Random(seed)
    pool = [bytes([i]) * 16 for i in range(24)]
    scores_pool = [None, math.nan, math.inf, -math.inf, 0.5, 0.5, 0.25, 1.0]
    records = []
    for n in range(40):
        keys = rng.sample(pool[:8], 4) if rng.random() < 0.2 else \
            [pool[0]] + [pool[1 + rng.randrange(2) * 8 + j] for j in range(rng.randrange(2, 6))]
        layers = tuple(LayerRecord(k, {}, ()) for k in keys)
        records.append(ModelRecord(f"m{rng.randrange(100):02d}-{n}", (1,), rng.choice(scores_pool), None, layers))
    by_id, scores = {r.model_id: r for r in records}, {r.model_id: r.score for r in records}
    catalog, resident = Catalog(), set()
    for _ in range(600):
        record, tier = rng.choice(records), rng.randrange(2)
        index = rng.randrange(len(record.layers))
        if rng.random() < 0.6:
            catalog.hold(record, index, tier)
            resident.add((record.model_id, index, tier))
        else:
            catalog.release((record.model_id, index), tier)
            resident.discard((record.model_id, index, tier))
        held: dict[str, dict[bytes, int]] = {}
        for model_id, index, _ in resident:
            held.setdefault(model_id, {})[by_id[model_id].layers[index].key] = index
        base = rng.choice(records)
        keys = [layer.key for layer in base.layers]
        keys = keys[:rng.randrange(1, len(keys) + 1)] + ([rng.choice(pool)] if rng.random() < 0.3 else [])
        if rng.random() < 0.1:
            keys = keys[1:] + keys[:1]
        parent = rng.choice([None, base.model_id, rng.choice(records).model_id])
        skip = set(rng.sample(sorted(held), min(len(held), rng.randrange(3)))) if held else set()
        for mode in ("prefix", "compatible"):
            assert catalog.find(keys, parent, mode, skip=skip) == _plain_find(held, scores, keys, parent, mode, skip)
        assert not catalog.check()


def test_format_1_json_records_are_still_read():
    legacy = {"model_id": "m1", "arch": [4, 5], "score": 0.5, "parent": None, "mode": "prefix",
              "layers": [{"key": (b"k" * 16).hex(), "deps": [0],
                          "tensors": {"w": {"digest": (b"w" * 16).hex(), "dtype": "float32", "shape": [2, 3],
                                            "nbytes": 24, "kind": "numpy"}}}]}
    record = ModelRecord.from_bytes(json.dumps(legacy).encode())
    assert record.arch == (4, 5) and record.layers[0].tensors["w"].shape == (2, 3)


HEAD = struct.Struct("<4sdBIIII")
DAMAGED = {
    "truncated": RECORD.encoded[:-3],
    "trailing-byte": RECORD.encoded + b"\x00",
    "magic-only": RECORD_MAGIC,
    "empty-arch": HEAD.pack(RECORD_MAGIC, 0.0, 0, 1, 0, 0, 0) + b"m",
    "unknown-mode": HEAD.pack(RECORD_MAGIC, 0.0, 7, 1, 0, 1, 0) + b"m" + struct.pack("<q", 1),
    "negative-arch": HEAD.pack(RECORD_MAGIC, 0.0, 0, 1, 0, 1, 0) + b"m" + struct.pack("<q", -1),
    "arch-count-past-the-end": HEAD.pack(RECORD_MAGIC, 0.0, 0, 1, 0, 99_999, 0) + b"m",
    "layer-count-past-the-end": HEAD.pack(RECORD_MAGIC, 0.0, 0, 1, 0, 1, 99_999) + b"m" + struct.pack("<q", 1),
    "id-not-utf8": HEAD.pack(RECORD_MAGIC, 0.0, 0, 1, 0, 1, 0) + b"\xff" + struct.pack("<q", 1),
}


def _one_tensor(dtype: int = 2, kind: int = 0, shape: tuple[int, ...] = (4,), nbytes: int = 16) -> bytes:
    """A one-layer packed record whose single tensor has these (possibly lying) fields."""
    head = HEAD.pack(RECORD_MAGIC, 0.5, 0, 1, 0, 1, 1) + b"m" + struct.pack("<q", 3)
    layer = struct.pack("<16sII", b"k" * 16, 1, 1) + struct.pack("<I", 0)
    tensor = struct.pack("<16sIBBBQ", b"d" * 16, 1, dtype, kind, len(shape), nbytes) + b"w"
    return head + layer + tensor + struct.pack(f"<{len(shape)}Q", *shape)


def _two_tensors(first: bytes, second: bytes) -> bytes:
    """A one-layer packed record of two float32 tensors of 4 values named ``first`` and ``second``."""
    head = HEAD.pack(RECORD_MAGIC, 0.5, 0, 1, 0, 1, 1) + b"m" + struct.pack("<q", 3)
    layer = struct.pack("<16sII", b"k" * 16, 1, 2) + struct.pack("<I", 0)
    return head + layer + b"".join(struct.pack("<16sIBBBQ", b"d" * 16, len(name), 2, 0, 1, 16) + name
                                   + struct.pack("<Q", 4) for name in (first, second))


DAMAGED |= {
    "repeated-name": _two_tensors(b"w", b"w"),
    "name-not-utf8": _two_tensors(b"w", b"\xff"),
    "name-past-the-end": _two_tensors(b"w", b"bias")[:-9],
    "unknown-dtype-code": _one_tensor(dtype=99),
    "unknown-kind-code": _one_tensor(kind=9),
    "nine-dims": _one_tensor(shape=(1,) * 8 + (4,)),
    "shape-disagrees-with-nbytes": _one_tensor(shape=(1000,)),
    "tensor-over-the-limit": _one_tensor(dtype=5, shape=(2**41,), nbytes=2**41),
}


def test_the_lying_tensor_builder_builds_a_valid_record_when_it_does_not_lie():
    assert ModelRecord.from_bytes(_one_tensor()).layers[0].tensors["w"].nbytes == 16


def test_a_written_record_is_the_documented_layout_byte_for_byte():
    record = ModelRecord("m", (3,), 0.5, None, (LayerRecord(b"k" * 16, {"w": TensorRef(b"d" * 16, "float32", (4,), 16)},
                                                            (0,)),))
    assert record.encoded == _one_tensor()
    two_dims = ModelRecord("m", (3,), 0.5, None, (LayerRecord(b"k" * 16, {"w": TensorRef(b"d" * 16, "float32", (2, 2),
                                                                                              16)}, (0,)),))
    assert two_dims.encoded == _one_tensor(shape=(2, 2))


@pytest.mark.parametrize("name", sorted(DAMAGED))
def test_damaged_packed_records_are_refused_with_a_payload_error(name):
    with pytest.raises(PayloadError):
        ModelRecord.from_bytes(DAMAGED[name])


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_a_record_is_read_from_any_bytes_like_object(kind):
    assert ModelRecord.from_bytes(kind(RECORD.encoded)) == RECORD


def test_a_tensor_parsed_once_is_still_held_to_each_records_size_limit():
    """Records of one search repeat the same tensor fields, which are parsed once; the limit is still applied."""
    assert [ref.nbytes for ref in ModelRecord.from_bytes(_two_tensors(b"w", b"b")).layers[0].tensors.values()] == [16, 16]
    with pytest.raises(PayloadError, match="limit 8"):
        ModelRecord.from_bytes(_two_tensors(b"w", b"b"), max_nbytes=8)
