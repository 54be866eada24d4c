"""The follower: one reader per process of each shared tier's change log. It learns what other processes
hold and release, skips its own changes, rebuilds from a snapshot when the log cannot tell, and counts
and skips what it cannot read."""
from __future__ import annotations

import numpy as np

from tensorcache.catalog import Catalog, LayerRecord, ModelRecord, TensorRef
from tensorcache.follower import Follower
from tensorcache.payload import encode
from tensorcache.policies import make_policy
from tensorcache.stack import Moves, TierStack
from tensorcache.tiers import LMDBTier, MemoryTier, books


def _model(model_id: str, n_layers: int) -> tuple[ModelRecord, dict[bytes, bytearray]]:
    """A model record of ``n_layers`` one-tensor layers and its payloads by digest."""
    layers, blobs = [], {}
    for j in range(n_layers):
        digest, blob, ref = encode(np.full(8, hash((model_id, j)) % 97, dtype=np.float32))
        blobs[digest] = blob
        tensor = TensorRef(digest, ref["dtype"], tuple(ref["shape"]), ref["nbytes"], ref["kind"])
        layers.append(LayerRecord(bytes([j]) * 16, {"w": tensor}, tuple(range(j + 1))))
    return ModelRecord(model_id, tuple(range(n_layers)), 1.0, None, tuple(layers)), blobs


def _stack(path, origin: str, memory: bool = False) -> TierStack:
    tiers = ([MemoryTier(1 << 20)] if memory else []) + [LMDBTier(path, 1 << 20)]
    return TierStack(tiers, [make_policy("lru") for _ in tiers], Catalog(), origin)


def _put(stack: TierStack, model_id: str, n_layers: int = 2) -> None:
    record, blobs = _model(model_id, n_layers)
    assert stack.admit(len(stack.slots) - 1, record, range(n_layers), blobs, Moves())


def test_a_follower_learns_on_open_and_on_sync_what_others_hold_and_release(tmp_path):
    writer = _stack(tmp_path / "c", "writer")
    _put(writer, "a")
    reader = _stack(tmp_path / "c", "reader", memory=True)
    follower = Follower(reader)
    lmdb = len(reader.slots) - 1
    assert sorted(reader.catalog.held_in([lmdb])) == [("a", 0), ("a", 1)]  # from the snapshot read on open
    _put(writer, "b", 3)
    assert not reader.catalog.holds(("b", 0), lmdb)  # nothing is learnt between syncs
    follower.sync()
    assert sorted(reader.catalog.held_in([lmdb])) == [("a", 0), ("a", 1), ("b", 0), ("b", 1), ("b", 2)]
    assert len(reader.slots[lmdb].policy) == 5 and len(reader.slots[0].policy) == 0  # only the shared tier's
    writer.release(0, ("b", 1), "capacity", Moves())
    follower.sync()
    assert not reader.catalog.holds(("b", 1), lmdb) and len(reader.slots[lmdb].policy) == 4
    assert follower.resyncs == 0 and follower.malformed == 0
    for stack in (writer, reader):
        for slot in stack.slots:
            slot.tier.close()


def test_a_follower_skips_its_own_changes(tmp_path):
    stack = _stack(tmp_path / "c", "me")
    follower = Follower(stack)
    _put(stack, "a")
    stack.released_elsewhere(0, ("a", 0))  # were its own hold applied again on sync, the catalog would hold this again
    follower.sync()
    assert stack.catalog.held_in([0]) == [("a", 1)]
    stack.slots[0].tier.close()


def test_a_follower_left_behind_the_trimmed_log_resynchronises_from_a_snapshot(tmp_path, monkeypatch):
    monkeypatch.setattr(books, "LOG_KEEP", 4)
    writer, reader = _stack(tmp_path / "c", "writer"), _stack(tmp_path / "c", "reader")
    follower = Follower(reader)
    _put(writer, "gone")
    follower.sync()
    writer.release(0, ("gone", 0), "capacity", Moves())
    for m in range(6):
        _put(writer, f"m{m}")
    follower.sync()
    assert follower.resyncs == 1
    assert sorted(reader.catalog.held_in([0])) == sorted(writer.catalog.held_in([0]))
    assert ("gone", 0) not in reader.slots[0].policy and len(reader.slots[0].policy) == 13
    for stack in (writer, reader):
        stack.slots[0].tier.close()


def test_a_change_naming_a_record_of_another_model_is_counted_and_skipped(tmp_path):
    reader = _stack(tmp_path / "c", "reader")
    follower = Follower(reader)
    tier = LMDBTier(tmp_path / "c", 1 << 20)
    record, blobs = _model("b", 1)
    assert tier.hold_many(record.encoded, "a", [(0, record.layers[0].digests)], blobs, "writer").held
    follower.sync()
    assert follower.malformed == 1 and reader.catalog.held_in([0]) == []
    _put(_stack(tmp_path / "c", "writer"), "c")  # later changes are still followed
    follower.sync()
    assert sorted(reader.catalog.held_in([0])) == [("c", 0), ("c", 1)]
    tier.close()
    reader.slots[0].tier.close()


def test_a_rebuild_from_the_books_runs_no_collection_and_leaves_the_collector_on(tmp_path):
    import gc

    writer = _stack(tmp_path / "c", "writer")
    for m in range(200):
        _put(writer, f"m{m}", 3)
    reader = _stack(tmp_path / "c", "reader")
    collections: list[int] = []

    def seen(phase: str, info: dict) -> None:
        if phase == "start":
            collections.append(info["generation"])

    threshold = gc.get_threshold()
    gc.set_threshold(10)  # without the pause, a rebuild of 600 entries would collect dozens of times
    gc.callbacks.append(seen)
    try:
        Follower(reader)
    finally:
        gc.callbacks.remove(seen)
        gc.set_threshold(*threshold)
    assert len(collections) <= 2 and gc.isenabled()  # the young ones the next allocation after it starts
    assert len(reader.catalog.held_in([0])) == 600
    for stack in (writer, reader):
        for slot in stack.slots:
            slot.tier.close()
