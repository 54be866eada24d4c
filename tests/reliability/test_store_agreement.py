"""Processes sharing one LMDB file or one Redis namespace agree on what the store is: one capacity (kept in
the store's books), one record per model id, one donor for the same lookup."""
from __future__ import annotations

import hashlib
import json
import logging
import math
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lmdb
import pytest

from tensorcache import TensorCache
from tensorcache.keys import namespace_key
from tensorcache.payload import encode
from tensorcache.tiers import LMDBTier, RedisTier, books

# argv: where (LMDB path or Redis URL), namespace, capacity, first model, models. Puts 40 KB models and prints
# the tier's capacity, how many capacity warnings it logged, and which of its models the store still holds.
WRITER = r"""
import json, logging, sys
from tensorcache import TensorCache
where, namespace, capacity, first, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
warned = []
class Count(logging.Handler):
    def emit(self, record):
        if "capacity" in record.getMessage():
            warned.append(record.getMessage())
logging.getLogger("tensorcache").addHandler(Count())
shared = {"disk": where, "disk_capacity": capacity} if "://" not in where else {
    "redis": where, "redis_capacity": capacity, "redis_required": True}
cache = TensorCache(memory=0, namespace=namespace, policy="fifo", **shared)
tier = cache.tiers[-1]
for m in range(first, first + count):
    cache.put(f"m{m}", (m,), make_layers(m, 1, 10_000))
mine = [m for m in range(first, first + count) if cache.lookup((m,)) is not None]
print(json.dumps({"capacity": tier.capacity, "warnings": warned, "used": tier.used_bytes(), "mine": mine,
                  "problems": cache.check_invariants()}))
cache.close()
"""


def _where(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> tuple[str, str]:
    if kind == "lmdb":
        return str(tmp_path / "shared.lmdb"), "default"
    return request.getfixturevalue("redis_url"), request.getfixturevalue("redis_namespace")


@pytest.mark.parametrize("kind", ["lmdb", "redis"])
def test_a_shared_store_has_one_capacity_that_a_process_asking_for_another_adopts_with_one_warning(
        kind: str, tmp_path: Path, request: pytest.FixtureRequest, python: Callable[..., Any]) -> None:
    where, namespace = _where(kind, tmp_path, request)

    def run(capacity: int, first: int) -> dict[str, Any]:
        return json.loads(python(WRITER, where, namespace, str(capacity), str(first), "12").stdout)

    small = run(300_000, 0)
    assert small["capacity"] == 300_000 and not small["warnings"] and small["used"] <= 300_000
    big = run(1_000_000, 100)  # asks for more: adopts the store's 300 KB, says so once
    assert big["capacity"] == 300_000 and len(big["warnings"]) == 1 and "300000" in big["warnings"][0]
    assert big["used"] <= 300_000 and not big["problems"]
    again = run(300_000, 200)  # the small one again: nothing of the other's work exceeds what it expects
    assert again["capacity"] == 300_000 and not again["warnings"] and not again["problems"]
    # each process serves its own newest models: the same capacity everywhere, so the same number fit
    assert len(big["mine"]) == len(again["mine"]) == len(small["mine"]) > 0


@pytest.mark.parametrize("value", [b"\x00\x01\x02", struct.pack(">Q", 2**62)])
def test_a_garbled_stored_capacity_is_rebuilt_and_set_again(tmp_path: Path, value: bytes, caplog, layers_of) -> None:
    path = tmp_path / "c.lmdb"
    with TensorCache(memory=0, disk=path, disk_capacity="1MB") as cache:
        cache.put("m1", (1,), layers_of(1, 1))
    with lmdb.open(str(path)) as env, env.begin(write=True) as txn:
        txn.put(namespace_key("default") + b"k" + books.CAPACITY, value)
    with caplog.at_level(logging.WARNING, logger="tensorcache"), TensorCache(memory=0, disk=path,
                                                                              disk_capacity="2MB") as cache:
        assert cache.tiers[0].capacity == 2_000_000  # the garbled value is dropped, not adopted
        assert cache.put("m2", (2,), layers_of(2, 1)).written > 0
        assert cache.check_invariants() == [] and cache.lookup((1,)).donor == "m1"
    assert "rebuilt its books" in caplog.text
    with lmdb.open(str(path)) as env, env.begin() as txn:
        assert txn.get(namespace_key("default") + b"k" + books.CAPACITY) == struct.pack(">Q", 2_000_000)


# argv: LMDB path. A fresh process: prints the donor it picks for each child.
READER = r"""
import json, sys
from tensorcache import TensorCache
with TensorCache(memory=0, disk=sys.argv[1]) as cache:
    print(json.dumps({str(list(child)): cache.lookup(child).donor for child in [(1, 9), (2, 9), (3, 9)]}))
"""


def test_every_process_picks_the_same_donor_whatever_the_scores(tmp_path: Path, layers_of,
                                                                python: Callable[..., Any]) -> None:
    """Scores inf, -inf, nan, none and ties: the writer and a fresh LMDB reader agree on every donor."""
    path = tmp_path / "c.lmdb"
    scores = {1: [("inf", math.inf), ("best", 1e308), ("a", 0.5)],
              2: [("minus-inf", -math.inf), ("nan", math.nan), ("none", None), ("zero", 0.0), ("minus-zero", -0.0)],
              3: [("tie-b", 2.0), ("tie-a", 2.0), ("neg-inf", -math.inf)]}
    with TensorCache(memory="1MB", disk=path) as writer:
        for group, models in scores.items():
            for n, (model_id, score) in enumerate(models):
                writer.put(model_id, (group, n), layers_of(group, 2), score=score)
        mine = {str([group, 9]): writer.lookup((group, 9)).donor for group in scores}
    assert mine == {"[1, 9]": "inf", "[2, 9]": "minus-zero", "[3, 9]": "tie-a"}
    assert json.loads(python(READER, str(path)).stdout) == mine


@pytest.mark.parametrize("kind", ["lmdb", "redis"])
def test_one_model_id_with_other_tensors_is_a_clear_error_and_stores_nothing(
        kind: str, tmp_path: Path, request: pytest.FixtureRequest, layers_of, genuine) -> None:
    where, namespace = _where(kind, tmp_path, request)
    shared = {"disk": where} if kind == "lmdb" else {"redis": where, "redis_required": True}
    first, second = (TensorCache(memory="1MB", namespace=namespace, **shared) for _ in range(2))
    try:
        first.put("m1", (1, 2), layers_of(1, 2))
        used = first.tiers[-1].used_bytes()
        assert second.put("m1", (1, 2), layers_of(1, 2)).written == 0  # the same model again: nothing new
        for arch, layers in (((1, 2), layers_of(7, 2)), ((3, 4), layers_of(1, 2))):
            with pytest.raises(ValueError, match=r"model id 'm1' is already stored in this cache with other"):
                second.put("m1", arch, layers)
        for cache in (first, second):  # m1 is the first writer's, everywhere; nothing else was stored
            genuine(cache.lookup((1, 2)), {"m1": (1, 2)}, (1, 2))
            assert cache.best_donor((3, 4)) is None and cache.check_invariants() == []
        assert second.tiers[-1].used_bytes() == used
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize("kind", ["lmdb", "redis"])
def test_a_shared_store_keeps_one_record_per_model_id_whoever_holds_last(
        kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Two writers that had not seen each other's put (a race): the second hold is refused as a conflict and
    holds nothing, so no process can believe the second writer's layers are stored."""
    where, namespace = _where(kind, tmp_path, request)
    tier = LMDBTier(where, 1 << 20, namespace=namespace) if kind == "lmdb" else RedisTier(where, 1 << 20, namespace)
    try:
        blobs = [bytes([k]) * 100 for k in range(2)]
        digests = [hashlib.blake2b(b, digest_size=16).digest() for b in blobs]
        assert tier.hold(b"record of writer A", "m1", 0, [digests[0]], {digests[0]: blobs[0]}).held
        refused = tier.hold(b"record of writer B", "m1", 1, [digests[1]], {digests[1]: blobs[1]})
        assert (refused.held, refused.reason) == (False, "conflict")
        assert tier.record("m1") == b"record of writer A" and tier.get(digests[1]) is None
        assert tier.hold(b"record of writer A", "m1", 1, [digests[0]], {}).held  # the same record: held
        audit = tier.audit()
        assert audit.healthy and audit.entries == 2 and audit.used == 100
    finally:
        tier.close()


def test_a_put_racing_another_writer_of_the_same_id_keeps_nothing_and_says_so(tmp_path: Path, layers_of, genuine,
                                                                              monkeypatch) -> None:
    first, second = (TensorCache(memory="1MB", disk=tmp_path / "c.lmdb") for _ in range(2))
    try:
        monkeypatch.setattr(second._follower, "sync", lambda: None)  # the first's put lands after this sync
        first.put("m1", (1, 2), layers_of(1, 2))
        with pytest.raises(ValueError, match=r"model id 'm1' is already stored in the lmdb tier with other"):
            second.put("m1", (1, 2), layers_of(7, 2))
        monkeypatch.undo()
        assert second.stats()["tiers"]["memory"]["used_bytes"] == 0  # its memory-tier copy was taken back
        genuine(second.lookup((1, 2)), {"m1": (1, 2)}, (1, 2))
        assert second.check_invariants() == [] and first.check_invariants() == []
    finally:
        first.close()
        second.close()


def test_a_process_never_takes_another_writers_model_of_the_same_id_for_its_own(tmp_path: Path, layers_of, genuine,
                                                                                 caplog) -> None:
    """A keeps m1 in memory after the shared tier dropped it; B, who never saw m1, puts its own m1 there. A must
    not believe the shared tier holds A's m1 (it would read payloads that are not there, or B's)."""
    path = tmp_path / "c.lmdb"
    one_model = sum(len(encode(t)[1]) for layer in layers_of(1, 4, 64) for t in layer.values())
    a = TensorCache(memory="1MB", disk=path, disk_capacity=one_model + 100, policy="fifo")
    try:
        a.put("m1", (1, 2, 3, 4), layers_of(1, 4, 64))
        a.put("m2", (2, 2, 3, 4), layers_of(2, 4, 64))  # the LMDB tier has room for one: m1 leaves it
        with TensorCache(memory=0, disk=path) as b:
            assert b.best_donor((1, 2, 3, 4)) is None  # b has never seen m1
            b.put("m1", (1, 2, 3, 4), layers_of(9, 4, 64))  # another model under the same id
        with caplog.at_level(logging.WARNING, logger="tensorcache"):
            hit = a.lookup((1, 2, 3, 4))
        assert "holds model 'm1' with other tensors" in caplog.text
        genuine(hit, {"m1": (1, 2, 3, 4)}, (1, 2, 3, 4))  # A's own m1, from its memory tier
        assert a.stats()["tiers"]["lmdb"]["entries"] == 0  # it believes none of B's m1 to be its own
        assert a.stats()["corrupt"] == 0 and a.check_invariants() == []
        assert not [r for r in caplog.records if "releasing" in r.getMessage()]
    finally:
        a.close()
