import logging

import numpy as np
import pytest
import torch

from tensorcache.tiers import MemoryTier, Tier
from tensorcache.tiers.books import WRONG_LENGTH


def test_round_trip_is_one_copy_in_and_zero_copies_out():
    tier = MemoryTier(1 << 20)
    source = bytearray(b"abc" * 1000)
    assert tier.put(b"k", source)
    source[:3] = b"zzz"  # the tier owns its copy
    first, second = tier.get(b"k"), tier.get(b"k")
    assert isinstance(first, memoryview) and first.readonly
    assert bytes(first) == b"abc" * 1000
    assert np.shares_memory(np.frombuffer(first, np.uint8), np.frombuffer(second, np.uint8))
    with pytest.raises(TypeError):
        first[0] = 0


def test_immutable_bytes_are_kept_without_a_copy_and_slices_of_them_are_copied():
    tier = MemoryTier(1 << 20)
    whole, big = b"abc" * 1000, b"xyz" * 1000
    assert tier.put(b"whole", whole) and tier.put(b"slice", memoryview(big)[:30])
    assert tier.get(b"whole").obj is whole  # bytes cannot change: the tier keeps them as they are
    assert tier.get(b"slice").obj is not big and bytes(tier.get(b"slice")) == big[:30]  # not all of ``big`` kept
    assert tier.used_bytes() == 3030


def test_accepts_any_contiguous_buffer():
    tier = MemoryTier(1 << 20)
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert tier.put(b"array", array)
    assert tier.put(b"view", memoryview(b"xy"))
    assert np.array_equal(np.frombuffer(tier.get(b"array"), np.float32).reshape(3, 4), array)
    assert bytes(tier.get(b"view")) == b"xy"
    assert tier.used_bytes() == array.nbytes + 2


def test_used_bytes_delete_and_contains():
    tier = MemoryTier(100)
    assert isinstance(tier, Tier) and tier.name == "memory" and not tier.shares_books and tier.capacity == 100
    tier.put(b"a", b"1234")
    tier.put(b"b", b"")
    assert tier.put(b"a", b"other value")  # present already: kept, not counted twice
    assert bytes(tier.get(b"a")) == b"1234"
    assert tier.used_bytes() == 4
    assert b"a" in tier and b"b" in tier and b"c" not in tier
    tier.delete(b"a")
    tier.delete(b"never stored")
    assert tier.get(b"a") is None and b"a" not in tier and tier.used_bytes() == 0


def test_books_count_each_payload_once_and_free_it_with_its_last_entry():
    tier = MemoryTier(100)
    a, b = b"a" * 16, b"b" * 16
    assert tier.hold(b"rec", "m", 0, [a, b], {a: b"x" * 30, b: b"y" * 20}).written == 50
    assert tier.hold(b"rec", "m", 1, [a], {}).written == 0  # a is stored already: one more reference
    assert tier.hold(b"rec", "m", 1, [a], {}).held  # holding it again changes nothing
    assert tier.used_bytes() == 50 and tier.audit().healthy and tier.audit().entries == 2
    assert tier.hold(b"rec", "n", 0, [b"c" * 16], {b"c" * 16: b"z" * 51}).reason == "no_room"
    assert tier.used_bytes() == 50 and tier.audit().healthy  # refused whole: nothing half-held
    assert tier.release("m", 0) and not tier.release("m", 0)
    assert tier.used_bytes() == 30 and bytes(tier.read([(a, 30)])[0]) == b"x" * 30 and tier.get(b) is None
    assert tier.read([(a, 29)]) == [WRONG_LENGTH]  # a length other than the record's is found before reading
    assert tier.release("m", 1) and tier.used_bytes() == 0 and len(tier) == 0 and tier.audit().healthy


def test_a_hold_whose_allocation_fails_leaves_nothing(monkeypatch):
    tier = MemoryTier(100)
    a, b = b"a" * 16, b"b" * 16
    calls = []

    def alloc(n):
        calls.append(n)
        if len(calls) == 2:
            raise MemoryError("no room in RAM")
        return np.empty(n, dtype=np.uint8)

    monkeypatch.setattr(tier, "_alloc", alloc)
    blobs = {a: bytearray(b"x" * 10), b: bytearray(b"y" * 10)}  # mutable: the tier copies them
    assert tier.hold(b"rec", "m", 0, [a, b], blobs).reason == "dropped"
    assert tier.used_bytes() == 0 and len(tier) == 0 and tier.audit().healthy


def test_rejects_bad_keys_and_capacity():
    tier = MemoryTier(10)
    with pytest.raises(TypeError, match="bytes"):
        tier.put("text", b"x")
    with pytest.raises(ValueError, match="1..494"):
        tier.get(b"")
    with pytest.raises(ValueError, match="1..494"):
        tier.put(b"k" * 495, b"x")
    with pytest.raises(ValueError, match="-1"):
        MemoryTier(-1)


def test_close_releases_everything():
    tier = MemoryTier(10)
    tier.put(b"a", b"1")
    tier.close()
    assert tier.get(b"a") is None and tier.used_bytes() == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback when CUDA is absent")
def test_pinned_without_cuda_warns_once_and_uses_plain_ram(caplog):
    with caplog.at_level(logging.WARNING, logger="tensorcache"):
        tier = MemoryTier(1 << 10, pinned=True)
    assert not tier.pinned
    assert [r.message for r in caplog.records] == [
        "pinned memory needs torch with CUDA; the memory tier uses ordinary RAM"]
    assert tier.put(b"k", b"value") and bytes(tier.get(b"k")) == b"value"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA to pin host memory")
def test_pinned_values_live_in_page_locked_memory():
    tier = MemoryTier(1 << 20, pinned=True)
    assert tier.pinned
    tier.put(b"k", np.arange(256, dtype=np.uint8))
    view = tier.get(b"k")
    assert bytes(view) == bytes(range(256))
    assert view.obj.base.is_pinned()  # the numpy array views the pinned torch tensor
