"""Getting a stored model back (a search's best), and what a layer map leaves out of the cache."""
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from tensorcache import LayerMap, LayerSpec, TensorCache

LMAP = LayerMap((LayerSpec("fc0", ("0.weight", "0.bias"), (0,)), LayerSpec("fc1", ("1.weight", "1.bias"), (0, 1))))


def net(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))


def test_get_returns_a_stored_models_tensors_as_a_state_dict_the_caller_owns(tmp_path):
    best = net(0)
    cache = TensorCache(memory="1MB", disk=tmp_path / "c.lmdb")
    cache.put("best", (1, 2), best.state_dict(), score=0.9, layer_map=LMAP)
    cache.put("other", (1, 0), net(1).state_dict(), score=0.1, layer_map=LMAP)
    got = cache.get("best")
    assert got.donor == "best" and got.indices == [0, 1]
    state = got.state_dict()
    assert state.keys() == best.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in best.state_dict().items())
    state["0.weight"].zero_()                        # a copy: the cache still holds the trained values
    assert torch.equal(cache.get("best").state_dict()["0.weight"], best[0].weight)
    fresh = net(2)
    fresh.load_state_dict(cache.get("best").state_dict())
    assert torch.equal(fresh[1].bias, best[1].bias)
    again = net(3)
    assert cache.get("best").apply(again).layers == 2 and torch.equal(again[0].weight, best[0].weight)
    assert cache.get("nope") is None
    cache.close()
    reopened = TensorCache(memory=0, disk=tmp_path / "c.lmdb")   # another process: from the disk tier
    assert torch.equal(reopened.get("best").state_dict()["1.weight"], best[1].weight)
    reopened.close()


def test_get_gives_numpy_back_for_numpy_input_and_none_once_the_model_is_evicted():
    cache = TensorCache(memory="4KB", policy="fifo")
    cache.put("a", (1, 2), [{"w": np.arange(4, dtype=np.float32)}, {"v": np.ones(200, np.float32)}])
    got = cache.get("a").state_dict()
    assert isinstance(got["w"], np.ndarray) and np.array_equal(got["w"], np.arange(4, dtype=np.float32))
    cache.put("b", (3, 4), [{"w": np.zeros(500, np.float32)}, {"v": np.full(300, 2.0, np.float32)}])
    assert cache.stats()["evictions"] and cache.get("a") is None
    assert np.array_equal(cache.get("b").state_dict()["v"], np.full(300, 2.0, np.float32))


def test_a_layer_map_that_leaves_entries_out_warns_once_naming_them():
    model = net(0)
    model.register_buffer("steps", torch.zeros(1))
    half = LayerMap((LayerSpec("fc0", ("0.weight", "0.bias"), (0,)),))
    cache = TensorCache(memory="1MB")
    with pytest.warns(UserWarning, match=r"never cached: \['steps', '1\.weight', '1\.bias'\]"):
        cache.put("m0", (1,), model.state_dict(), layer_map=half)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cache.put("m1", (2,), model.state_dict(), layer_map=half)   # the same names: no second warning
        cache.put("m2", (1, 2), net(1).state_dict(), layer_map=LMAP)  # a map naming everything: none
