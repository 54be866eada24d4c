"""The books protocol every shared tier speaks: packed changes, one logged change per hold or release of
a model's layers, releases batched into one transaction, the snapshot read on open served only while
the books are unchanged, and an audit that names damage among many whole entries."""
from __future__ import annotations

import logging
import struct

import lmdb
import pytest

from tensorcache.keys import namespace_key
from tensorcache.tiers import LMDBTier, RedisTier
from tensorcache.tiers.books import BooksDamaged, Change, Position


def test_changes_round_trip_and_damaged_ones_are_refused():
    change = Change("release", "m-é", (0, 3, 2**31 - 1), "origin-1")
    assert Change.decode(change.encode()) == change
    raw = change.encode()
    for damaged in (raw[:5], b"x" + raw[1:], struct.pack("<cHI", b"h", 0, 0) + b"m",
                    struct.pack("<cHI", b"h", 0, 1) + struct.pack("<I", 2**31) + b"m",
                    struct.pack("<cHI", b"h", 0, 1) + struct.pack("<I", 0), struct.pack("<cHI", b"h", 0, 2**31)):
        with pytest.raises(BooksDamaged):
            Change.decode(damaged)


def _hold(tier: LMDBTier, model: str, layers: int, size: int = 100) -> None:
    entries = [(i, [bytes([i]) * 16]) for i in range(layers)]
    blobs = {bytes([i]) * 16: bytes([i]) * size for i in range(layers)}  # layers share payloads across models
    assert tier.hold_many(model.encode(), model, entries, blobs, "me").held


def test_a_hold_and_a_batched_release_each_log_one_change_per_model(tmp_path):
    tier = LMDBTier(tmp_path / "c", capacity=1 << 20)
    start = tier.snapshot().position
    _hold(tier, "a", 3)
    _hold(tier, "b", 2)
    assert tier.release_many([("a", 0), ("b", 1), ("a", 2), ("a", 7), ("c", 0)], "me") == 3
    raws, now = tier.changes(start, None)
    assert [Change.decode(r) for r in raws] == [Change("hold", "a", (0, 1, 2), "me"),
                                                Change("hold", "b", (0, 1), "me"),
                                                Change("release", "a", (0, 2), "me"),
                                                Change("release", "b", (1,), "me")]
    assert now.seq == start.seq + 4
    assert tier.snapshot().models == [("a", b"a", (1,)), ("b", b"b", (0,))]
    assert tier.audit().healthy and tier.used_bytes() == 200  # payloads 0 and 1 still named once each
    tier.close()


@pytest.mark.parametrize("kind", ["lmdb", "redis"])
def test_a_release_frees_a_payload_only_when_no_held_entry_names_it_any_more(tmp_path, kind, request):
    if kind == "lmdb":
        tier = LMDBTier(tmp_path / "c", capacity=1 << 20)
    else:
        tier = RedisTier(request.getfixturevalue("redis_url"), capacity=1 << 20,
                         namespace=request.getfixturevalue("redis_namespace"))
    shared, own, other = b"s" * 16, b"o" * 16, b"t" * 16
    blobs = {shared: b"1" * 100, own: b"2" * 30, other: b"3" * 7}
    assert tier.hold_many(b"a", "a", [(0, [shared, own]), (1, [shared]), (2, [own])], blobs, "me").held
    assert tier.hold_many(b"b", "b", [(0, [shared, other])], blobs, "me").held
    assert tier.used_bytes() == 137
    # entries 0 and 1 of a name the shared payload twice (b still names it) and ``own`` once (a[2] still does)
    assert tier.release_many([("a", 0), ("a", 1)], "me") == 2
    assert tier.used_bytes() == 137 and tier.audit().healthy
    assert tier.release_many([("b", 0), ("a", 2)], "me") == 2  # the last names of every payload
    assert tier.used_bytes() == 0 and tier.audit().healthy
    assert tier.get(shared) is None and tier.get(own) is None and tier.get(other) is None
    assert tier.snapshot().models == []
    tier.close()


def test_a_hold_that_does_not_fit_says_how_many_bytes_it_lacks(tmp_path):
    tier = LMDBTier(tmp_path / "c", capacity=250)
    _hold(tier, "a", 2)
    refused = tier.hold_many(b"b", "b", [(5, [b"\x05" * 16])], {b"\x05" * 16: b"x" * 120}, "me")
    assert refused.reason == "no_room" and refused.short == 200 + 120 - 250
    tier.close()


def test_the_snapshot_read_on_open_is_served_only_while_the_books_are_unchanged(tmp_path):
    writer = LMDBTier(tmp_path / "c", capacity=1 << 20)
    _hold(writer, "a", 1)
    reader = LMDBTier(tmp_path / "c", capacity=1 << 20)  # audits and reads a snapshot on open
    _hold(writer, "b", 1)
    snap = reader.snapshot()
    assert [m for m, _, _ in snap.models] == ["a", "b"] and snap.position != Position(b"", 0)
    other = LMDBTier(tmp_path / "c", capacity=1 << 20)
    assert other.snapshot() == reader.snapshot()  # unchanged: the opening one and a fresh one agree
    for tier in (writer, reader, other):
        tier.close()


@pytest.mark.parametrize("damage, named", [
    ("refcount", "refcount of"), ("payload", "a payload is missing"), ("entry", "not whole"),
    ("no-entry", "missing or not whole"), ("held-list", "held-layer list of 5 bytes"),
    ("stray-refcount", "refcount kept for unheld payload"),
])
def test_the_audit_names_each_kind_of_damage_in_books_of_many_entries(tmp_path, damage, named, caplog):
    """Books of many whole entries are audited in bulk; one damaged entry among them is still found and named."""
    tier = LMDBTier(tmp_path / "c", capacity=1 << 20)
    shared = b"s" * 16
    for m in range(20):
        entries = [(i, [bytes([m, i]) * 8, shared] if i % 2 else [bytes([m, i]) * 8]) for i in range(4)]
        blobs = {d: d * 3 for _, digests in entries for d in digests}
        assert tier.hold_many(f"m{m}".encode(), f"m{m}", entries, blobs, "me").held
    assert tier.audit().healthy and tier.audit().entries == 80
    tier.close()
    books_key = namespace_key("default") + b"k"
    entry = books_key + b"d:m3\x00" + struct.pack(">I", 1)
    with lmdb.open(str(tmp_path / "c")) as env, env.begin(write=True) as txn:
        if damage == "refcount":
            txn.put(books_key + b"n:" + shared, struct.pack(">Q", 41))
        elif damage == "payload":
            txn.delete(namespace_key("default") + b"b" + bytes([3, 1]) * 8)
        elif damage == "entry":
            txn.put(entry, txn.get(entry)[:-1])
        elif damage == "no-entry":
            txn.delete(entry)
        elif damage == "held-list":
            txn.put(books_key + b"h:m3", b"\x00" * 5)
        else:
            txn.put(books_key + b"n:" + b"x" * 16, struct.pack(">Q", 1))
    with caplog.at_level(logging.WARNING, logger="tensorcache"):
        tier = LMDBTier(tmp_path / "c", capacity=1 << 20)  # audits on open, and rebuilds what it finds wrong
    assert "rebuilt its books" in caplog.text and named in caplog.text
    assert tier.audit().healthy
    tier.close()
