"""What put and lookup report: ``Stored`` says what a put wrote, ``Hit`` serves one donor's layers as the
kind and dtype they were put as and copies them into a module all or nothing."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tensorcache import TensorCache
from tensorcache.transfer import TransferError


def test_stored_says_what_a_put_wrote_and_a_second_put_writes_nothing():
    cache = TensorCache(memory="1MB")
    layers = [{"w": np.zeros(4, np.float32)}, {"w": np.ones(8, np.float32)}]
    first = cache.put("m", (1, 2), layers)
    assert first.model_id == "m" and len(first.keys) == 2 and first.depends_on == [(0,), (0, 1)]
    assert first.written == sum(first.layer_bytes) and first.layer_bytes[1] > first.layer_bytes[0]
    again = cache.put("m", (1, 2), layers)
    assert again.written == 0 and again.keys == first.keys and again.layer_bytes == first.layer_bytes


def test_a_hit_serves_each_tensor_as_the_kind_and_dtype_it_was_put_as():
    cache = TensorCache(memory="1MB")
    cache.put("m", (1, 2), [{"a": np.arange(3, dtype=np.int16)}, {"b": torch.ones(2, dtype=torch.bfloat16)}])
    hit = cache.lookup((1, 2))
    assert hit.donor == "m" and hit.indices == [0, 1] and hit.prefix_len == 2 and hit.slowest_tier == "memory"
    a, b = hit.layers
    assert isinstance(a["a"], np.ndarray) and a["a"].tolist() == [0, 1, 2]
    assert isinstance(b["b"], torch.Tensor) and b["b"].dtype == torch.bfloat16
    assert hit.dtypes == [{"a": "int16"}, {"b": "bfloat16"}]
    assert set(hit.tensors()) == {"a", "b"} and hit.tensors()["a"][1] == "int16"
    assert hit.keys == [key for key in cache.put("m2", (1, 2), [{"a": np.zeros(3)}, {"b": np.zeros(2)}]).keys]


def test_apply_copies_the_layers_that_fit_or_with_strict_every_layer_or_nothing():
    donor = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 2))
    cache = TensorCache(memory="1MB")
    cache.put("d", (1, 1), [{"0.weight": donor[0].weight.detach(), "0.bias": donor[0].bias.detach()},
                            {"1.weight": donor[1].weight.detach(), "1.bias": donor[1].bias.detach()}])
    hit = cache.lookup((1, 1))
    child = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 2))
    report = hit.apply(child)
    assert report.layers == 2 and report.donor == "d" and torch.equal(child[1].weight, donor[1].weight)
    misfit = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 5))
    before = misfit[0].weight.detach().clone()
    with pytest.raises(TransferError, match="1.weight"):
        hit.apply(misfit, strict=True)
    assert torch.equal(misfit[0].weight, before)  # the layer that fits was not copied either
    report = hit.apply(misfit)  # as warm_start does: the layer that fits is copied, the misfit named
    assert report.layers == 1 and "1.weight" in report.skipped[0] and torch.equal(misfit[0].weight, donor[0].weight)
