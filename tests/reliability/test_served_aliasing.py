"""A served tensor never aliases what the cache keeps: a caller changing one in place changes no later hit."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tensorcache import TensorCache


def _cache(tier: str, tmp_path: Path, request: pytest.FixtureRequest) -> TensorCache:
    """A cache holding only ``tier`` (the device tier on the CPU)."""
    if tier == "memory":
        return TensorCache(memory="16MB")
    if tier == "device":
        return TensorCache(memory=0, device_memory="16MB", device="cpu")
    if tier == "lmdb":
        return TensorCache(memory=0, disk=tmp_path / "c.lmdb", disk_capacity="16MB")
    return TensorCache(memory=0, redis=request.getfixturevalue("redis_url"), redis_capacity="16MB",
                       namespace=request.getfixturevalue("redis_namespace"), redis_required=True)


@pytest.mark.parametrize("tier", ["memory", "lmdb", "redis", "device"])
def test_changing_a_served_torch_tensor_in_place_changes_no_later_hit(tier: str, tmp_path: Path,
                                                                      request: pytest.FixtureRequest) -> None:
    with _cache(tier, tmp_path, request) as cache:
        original = [{"w": torch.arange(8, dtype=torch.float32)}, {"w": torch.ones(3, dtype=torch.bfloat16)}]
        cache.put("a", [1, 2], original)
        for layer in cache.lookup([1, 2]).layers:
            layer["w"].add_(5)  # a normal thing to do with a tensor one was handed
            layer["w"].zero_()
        again = cache.lookup([1, 2]).layers
        for got, want in zip(again, original, strict=True):
            assert torch.equal(got["w"], want["w"]) and got["w"].dtype == want["w"].dtype


def test_served_numpy_arrays_are_read_only_down_to_the_kept_buffer() -> None:
    with TensorCache(memory="16MB") as cache:
        cache.put("a", [1], [{"w": np.arange(6, dtype=np.float32)}])
        served = cache.lookup([1]).layers[0]["w"]
        with pytest.raises(ValueError, match="read-only"):
            served += 1
        with pytest.raises(ValueError):
            served.flags.writeable = True
        owner = served
        while getattr(owner, "base", None) is not None:  # follow the views down to the tier's own buffer
            owner = owner.base
            if isinstance(owner, memoryview):
                assert owner.readonly
                owner = owner.obj
        assert isinstance(owner, bytes) or (isinstance(owner, np.ndarray) and not owner.flags.writeable)
        assert np.array_equal(cache.lookup([1]).layers[0]["w"], np.arange(6, dtype=np.float32))
