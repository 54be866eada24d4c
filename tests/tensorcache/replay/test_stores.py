"""Stores: a policy's byte budget evicts its victims until an entry fits, and refuses what never fits."""
import pytest

from tensorcache.events import Inserted
from tensorcache.policies import make_policy
from tensorcache.replay import PolicyStore, UnboundedStore


def entry(model, index, size):
    return Inserted((model, index), size, model, (index,))


def test_policy_store_evicts_in_policy_order_and_keeps_its_budget():
    store = PolicyStore(make_policy("fifo"), 100)
    assert store.insert(entry("a", 0, 40)) == (True, ())
    assert store.insert(entry("a", 1, 40)) == (True, ())
    assert store.insert(entry("b", 0, 50)) == (True, [("a", 0)])  # 40 freed are enough
    assert store.insert(entry("b", 1, 101)) == (False, ())  # larger than the whole capacity
    assert store.insert(entry("c", 0, 100)) == (True, [("a", 1), ("b", 0)])
    assert (store.used, store.max_used, store.evictions) == (100, 100, 3)
    assert store.contains(("c", 0)) and not store.contains(("a", 0))
    assert UnboundedStore().insert(entry("a", 0, 10**12)) == (True, ())


def test_policy_store_names_a_bad_capacity_and_a_bad_victim():
    with pytest.raises(ValueError, match="capacity must be >= 0 bytes, got -1"):
        PolicyStore(make_policy("lru"), -1)
    policy = make_policy("lru")
    store = PolicyStore(policy, 10)
    store.insert(entry("a", 0, 10))
    policy.handle(Inserted(("ghost", 0), 1, "ghost"))  # the policy now holds an entry the store never had
    policy.handle(Inserted(("a", 0), 10, "a"))  # and ranks it below the ghost
    with pytest.raises(RuntimeError, match=r"named victim \('ghost', 0\)"):
        store.insert(entry("b", 0, 5))
