import logging

import numpy as np
import pytest
import torch

from tensorcache.tiers import MemoryTier, Tier


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
    assert isinstance(tier, Tier) and tier.name == "memory" and not tier.shared and tier.capacity == 100
    tier.put(b"a", b"1234")
    tier.put(b"b", b"")
    assert tier.put(b"a", b"other value")  # present already: kept, not counted twice
    assert bytes(tier.get(b"a")) == b"1234"
    assert tier.used_bytes() == 4
    assert b"a" in tier and b"b" in tier and b"c" not in tier
    tier.delete(b"a")
    tier.delete(b"never stored")
    assert tier.get(b"a") is None and b"a" not in tier and tier.used_bytes() == 0


def test_log_keeps_order_and_pages():
    tier = MemoryTier(0)
    assert tier.read_log(0) == ([], 0)
    for i in range(5):
        tier.append_log(b"r%d" % i)
    records, nxt = tier.read_log(0)
    assert records == [b"r0", b"r1", b"r2", b"r3", b"r4"] and nxt == 5
    assert tier.read_log(3) == ([b"r3", b"r4"], 5)
    tier.append_log(b"r5")
    assert tier.read_log(nxt) == ([b"r5"], 6)
    assert tier.read_log(6) == ([], 6)


def test_rejects_bad_keys_capacity_and_log_start():
    tier = MemoryTier(10)
    with pytest.raises(TypeError, match="bytes"):
        tier.put("text", b"x")
    with pytest.raises(ValueError, match="1..511"):
        tier.get(b"")
    with pytest.raises(ValueError, match="1..511"):
        tier.put(b"k" * 512, b"x")
    with pytest.raises(ValueError, match="-1"):
        MemoryTier(-1)
    with pytest.raises(ValueError, match="-2"):
        tier.read_log(-2)


def test_close_releases_everything():
    tier = MemoryTier(10)
    tier.put(b"a", b"1")
    tier.append_log(b"r")
    tier.close()
    assert tier.get(b"a") is None and tier.used_bytes() == 0 and tier.read_log(0) == ([], 0)


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
