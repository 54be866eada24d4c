"""A model a shared store shows with its first layer released is a miss for a prefix lookup of its own
architecture: a bound of per-layer eviction, not of killed writers.

Policies choose victims layer by layer. FIFO and LRU release a model's layers in the order they were put, first
layer first, so a store at capacity can keep a model's later layers after its first one left: the model is
still visible (its record and those entries are held, counted in ``stats()["models"]``), yet no prefix lookup
can be served from it (a donor's run starts at its first layer), and ``get`` finds it no longer whole. Those
bytes stay held until the policy evicts them. The donor-window and evolution-aware policies release the
deepest layer first and keep a servable prefix. After SIGKILL rounds (``test_soak_processes.py``) no other
kind of visible model misses: a model a store holds whole is served whole.
"""
from __future__ import annotations

import pytest

from tensorcache import TensorCache

LAYER = 4000   # bytes of one layer (1000 float32)


def _after_one_eviction(tmp_path, layers_of, policy: str) -> TensorCache:
    """A store that holds 4.5 layers: model A (4 layers), then a one-layer model B that needs one layer's room."""
    cache = TensorCache(memory=0, disk=tmp_path / "c.lmdb", disk_capacity=4 * LAYER + LAYER // 2 + 300,
                        policy=policy)
    cache.put("A", (1, 2, 3, 4), layers_of(1, 4, width=LAYER // 4))
    cache.put("B", (9,), layers_of(2, 1, width=LAYER // 4))
    assert cache.stats()["evictions"] == {"lmdb:capacity": 1}
    return cache


@pytest.mark.parametrize("policy", ["fifo", "lru"])
def test_a_model_whose_first_layer_was_released_is_visible_but_a_miss(tmp_path, layers_of, policy):
    with _after_one_eviction(tmp_path, layers_of, policy) as cache:
        assert cache.stats()["models"] == 2 and cache.stats()["tiers"]["lmdb"]["entries"] == 4   # A: 3 layers
        assert cache.get("A") is None and cache.best_donor((1, 2, 3, 4)) is None
        assert cache.lookup((1, 2, 3, 4)) is None   # the bound: visible, no layer servable in prefix mode


@pytest.mark.parametrize("policy", ["donor-window", "evolution-aware"])
def test_policies_that_release_the_deepest_layer_first_keep_a_servable_prefix(tmp_path, layers_of, policy):
    with _after_one_eviction(tmp_path, layers_of, policy) as cache:
        hit = cache.lookup((1, 2, 3, 4))
        assert hit is not None and (hit.donor, hit.prefix_len) == ("A", 3)
