"""The tier stack, the one owner of byte movement: admission evicts the policy's victims and demotes them,
a read comes from the fastest good copy and is promoted, bad copies are evicted with their reason,
decoded layers are kept while a process-local tier holds them, and every byte budget shares one
admission rule (``make_room``)."""
from __future__ import annotations

import numpy as np
import pytest

from tensorcache.catalog import Catalog, LayerRecord, ModelRecord, TensorRef
from tensorcache.events import Donated, Inserted, LayerServed
from tensorcache.payload import encode
from tensorcache.policies import FIFO, make_policy
from tensorcache.policies.base import make_room
from tensorcache.replay import PolicyStore
from tensorcache.stack import Moves, TierStack
from tensorcache.tiers import LMDBTier, MemoryTier


def _model(model_id: str, n_layers: int, width: int = 64) -> tuple[ModelRecord, dict[bytes, bytearray]]:
    """A record of ``n_layers`` one-tensor layers (``width`` float32 each, all different) and its payloads."""
    layers, blobs = [], {}
    for j in range(n_layers):
        digest, blob, ref = encode(np.arange(width, dtype=np.float32) + 1000 * j + hash(model_id) % 1000)
        blobs[digest] = blob
        tensor = TensorRef(digest, ref["dtype"], tuple(ref["shape"]), ref["nbytes"], ref["kind"])
        layers.append(LayerRecord(bytes([j + 1]) * 16, {"w": tensor}, tuple(range(j + 1))))
    return ModelRecord(model_id, tuple(range(n_layers)), 1.0, None, tuple(layers)), blobs


LAYER = _model("x", 1)[0].layers[0].blob_bytes  # bytes one layer takes in a tier


def _stack(tmp_path, memory_layers: int, verify: bool = False, disks: int = 1) -> TierStack:
    tiers = [MemoryTier(memory_layers * LAYER)] + [LMDBTier(tmp_path / f"d{k}", 1 << 20) for k in range(disks)]
    return TierStack(tiers, [FIFO() for _ in tiers], Catalog(), "me", verify=verify)


def test_admission_evicts_the_policys_victims_and_demotes_them_to_the_next_tier(tmp_path):
    stack = _stack(tmp_path, memory_layers=2)
    a, blobs_a = _model("a", 2)
    b, blobs_b = _model("b", 1)
    assert stack.admit(0, a, range(2), blobs_a, Moves())
    moves = Moves()
    assert stack.admit(0, b, range(1), blobs_b, moves)
    assert moves.released == [("memory", ("a", 0), "capacity")]  # FIFO: the oldest entry goes
    assert moves.demotions == 1 and moves.written == LAYER
    assert stack.catalog.tiers_of(("a", 0)) == [1] and stack.catalog.tiers_of(("b", 0)) == [0]
    assert stack.check() == []
    stack.close()


def test_a_models_layers_evicted_together_move_down_in_one_transaction(tmp_path):
    stack = _stack(tmp_path, memory_layers=3)
    demotions = []
    for model_id, n_layers in (("a", 3), ("b", 2), ("c", 3)):  # memory takes each model's layers one by one
        record, blobs = _model(model_id, n_layers)
        moves = Moves()
        assert stack.admit(0, record, range(n_layers), blobs, moves)
        demotions.append(moves.demotions)
    assert demotions == [0, 2, 3]  # b's layers evict a0 and a1; c's evict a2, b0 and b1
    assert sorted(stack.catalog.held_in([1])) == [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1)]
    assert stack.slots[1].tier.snapshot().position.seq == 3  # a0 with a1, then a2, then b0 with b1: one hold each
    assert stack.check() == []
    stack.close()


def test_a_layer_larger_than_a_tier_is_refused_there(tmp_path):
    stack = _stack(tmp_path, memory_layers=0)
    record, blobs = _model("a", 1)
    moves = Moves()
    assert not stack.admit(0, record, range(1), blobs, moves)
    assert moves.refused == [("memory", "too_large")] and stack.catalog.held_in([0]) == []
    stack.close()


def test_a_read_comes_from_the_fastest_tier_and_is_promoted_into_each_faster_one(tmp_path):
    stack = _stack(tmp_path, memory_layers=4)
    record, blobs = _model("a", 2)
    assert stack.admit(1, record, range(2), blobs, Moves())
    moves = Moves()
    layer, tier = stack.read(record, 1, moves)
    assert tier == 1 and moves.promotions == 1
    np.testing.assert_array_equal(layer.arrays["w"], np.arange(64, dtype=np.float32) + 1000 + hash("a") % 1000)
    assert stack.catalog.tiers_of(("a", 1)) == [0, 1]
    first, tier = stack.read(record, 1, Moves())
    again, _ = stack.read(record, 1, Moves())
    assert tier == 0 and again is first  # decoded once, kept while the memory tier holds it
    stack.release(0, ("a", 1), "capacity", Moves())
    assert stack.check() == []  # no decoded layer is kept for an entry the tier no longer holds
    stack.close()


@pytest.mark.parametrize("damage, reason", [("garble", "corrupt"), ("delete", "missing")])
def test_a_bad_copy_is_evicted_with_its_reason_and_the_next_tier_serves(tmp_path, damage, reason):
    stack = _stack(tmp_path, memory_layers=4, disks=2)
    record, blobs = _model("a", 1)
    for t in (2, 1):
        assert stack.admit(t, record, range(1), blobs, Moves())
    digest = record.layers[0].digests[0]
    bad = stack.slots[1].tier
    bad.delete(digest)
    if damage == "garble":
        assert bad.put(digest, bytes(blobs[digest])[:-4] + b"\xff" * 4)
    moves = Moves()
    layer, tier = stack.read(record, 0, moves)
    assert tier == 2 and moves.released[0] == (bad.name, ("a", 0), reason)
    assert moves.corrupt == (reason == "corrupt")
    assert stack.catalog.tiers_of(("a", 0)) == [0, 1, 2]  # promoted into both faster tiers, tier 1 re-stored
    assert layer.arrays["w"][-1] == 63 + hash("a") % 1000
    stack.close()


def test_with_verify_no_decoded_layer_is_kept_and_every_read_is_checked(tmp_path):
    stack = _stack(tmp_path, memory_layers=4, verify=True)
    record, blobs = _model("a", 1)
    assert stack.admit(0, record, range(1), blobs, Moves())
    first, _ = stack.read(record, 0, Moves())
    second, _ = stack.read(record, 0, Moves())
    assert first is not second and stack.slots[0].decoded is None
    stack.close()


def test_make_room_takes_victims_in_the_policys_order_until_their_bytes_cover_the_shortfall():
    policy = make_policy("fifo")
    for k in range(5):
        policy.on_insert(("m", k), 10, "m")
    assert make_room(policy, 15, lambda entry: 10) == [("m", 0), ("m", 1)]
    assert make_room(policy, 0, lambda entry: 10) == [("m", 2)]  # at least one victim when asked
    assert make_room(policy, 100, lambda entry: None) == [("m", 3)]  # an unknown size: stop and ask again
    assert len(policy) == 1 and ("m", 4) in policy
    assert make_room(policy, 100, lambda entry: 10) == [("m", 4)] and make_room(policy, 5, lambda e: 1) == []


def _last_commit(path) -> int:
    """The id of the newest committed write transaction of the LMDB file in ``path`` (from its meta pages)."""
    import struct

    head = (path / "data.mdb").read_bytes()[:2 * 65536]
    page = struct.unpack_from("<I", head, 40)[0]  # the page size page 0 names
    return max(struct.unpack_from("<Q", head, offset + 144)[0] for offset in (0, page))


def test_an_admission_that_evicts_from_a_shared_tier_commits_once(tmp_path):
    record, _ = _model("a", 1)
    lmdb_tier = LMDBTier(tmp_path / "d", 2 * record.layers[0].blob_bytes)
    stack = TierStack([lmdb_tier], [FIFO()], Catalog(), "me")
    a, blobs_a = _model("a", 2)
    b, blobs_b = _model("b", 1)
    assert stack.admit(0, a, range(2), blobs_a, Moves())
    before = _last_commit(tmp_path / "d")
    moves = Moves()
    assert stack.admit(0, b, range(1), blobs_b, moves)
    assert moves.released == [("lmdb", ("a", 0), "capacity")]
    assert _last_commit(tmp_path / "d") == before + 1  # the eviction and the hold: one transaction
    assert lmdb_tier.used_bytes() == 2 * LAYER and stack.check() == []
    assert stack.catalog.tiers_of(("a", 0)) == [] and stack.catalog.tiers_of(("b", 0)) == [0]
    stack.close()


def test_a_full_shared_tier_makes_room_before_the_hold_so_one_hold_per_admission(tmp_path):
    lmdb_tier = LMDBTier(tmp_path / "d", 2 * LAYER)
    stack = TierStack([lmdb_tier], [FIFO()], Catalog(), "me")
    holds = []
    hold_many = lmdb_tier.hold_many
    lmdb_tier.hold_many = lambda *args, **kw: holds.append(kw.get("release")) or hold_many(*args, **kw)
    for name in "abcd":
        record, blobs = _model(name, 1)
        holds.clear()
        assert stack.admit(0, record, range(1), blobs, Moves()) and stack.check() == []
        assert lmdb_tier.used_bytes() == len(stack.catalog.held_in([0])) * LAYER
        if name == "c":  # the first admission into the full tier was refused once, then evicted and held
            assert holds == [[], [("a", 0)]]
        elif name == "d":  # the books said it would not fit: its victim went into the one hold's transaction
            assert holds == [[("b", 0)]]
    assert lmdb_tier.audit().healthy and stack.catalog.held_in([0]) == [("c", 0), ("d", 0)]
    other = LMDBTier(tmp_path / "d", 2 * LAYER)  # another process frees the tier: no victim is taken then
    other.release("c", 0)
    holds.clear()
    e, blobs_e = _model("e", 1)
    assert stack.admit(0, e, range(1), blobs_e, Moves()) and holds == [[]]
    other.close()


@pytest.mark.parametrize("policy", ["fifo", "lru", "lfu", "donor-window"])
def test_a_full_memory_tier_evicts_what_replay_s_store_evicts_layer_by_layer(policy):
    """Models put into a full process-local tier, with hits and donations between them: the stack takes the same
    victims, in the same order, after the same layers, as replay's store fed the same events one layer at a
    time (room asked once for a whole model would differ where a policy ranks the model's own new layers first:
    lfu, and donor-window when every model held has been a donor)."""
    rng = np.random.default_rng(3)
    stack = TierStack([MemoryTier(0)], [make_policy(policy)], Catalog(), "me")
    store = PolicyStore(make_policy(policy), 0)
    models = []
    for m in range(40):
        layers, blobs = [], {}
        for j in range(int(rng.integers(2, 7))):
            digest, blob, ref = encode(rng.standard_normal(int(rng.integers(16, 256)), dtype=np.float32))
            blobs[digest] = blob
            tensor = TensorRef(digest, ref["dtype"], tuple(ref["shape"]), ref["nbytes"], ref["kind"])
            layers.append(LayerRecord(bytes([m, j + 1]) * 8, {"w": tensor}, tuple(range(j + 1))))
        models.append((ModelRecord(f"m{m}", tuple(range(len(layers))), 1.0, None, tuple(layers)), blobs))
    capacity = sum(layer.blob_bytes for record, _ in models[:3] for layer in record.layers)
    stack.slots[0].tier.capacity = store.capacity = capacity
    for n, (record, blobs) in enumerate(models):
        moves = Moves()
        assert stack.admit(0, record, range(len(record.layers)), blobs, moves)
        replayed = []
        for j, layer in enumerate(record.layers):
            admitted, evicted = store.insert(Inserted((record.model_id, j), layer.blob_bytes, record.model_id,
                                                      layer.depends_on))
            assert admitted
            replayed += evicted
        assert [entry for _, entry, _ in moves.released] == replayed
        assert set(stack.catalog.held_in([0])) == set(store.sizes)
        for record, _ in models[max(0, n - 3):n]:  # each older model still held donates its first layer
            entry = (record.model_id, 0)
            if store.contains(entry):
                assert stack.read(record, 0, Moves()) is not None
                store.handle(LayerServed(entry))
                stack.tell(Donated(record.model_id))
                store.handle(Donated(record.model_id))
    assert stack.check() == []
    stack.close()
