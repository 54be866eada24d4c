"""Eviction policies: pure bookkeeping over cache entries, no I/O.

The cache tells each tier's policy the typed events of ``tensorcache.events`` (inserts, hits, donations,
evaluations, removals, and the search's population, mutations and models), each through the ``on_*``
method ``Policy`` declares for it, and asks it for the next victim when that tier is full. An entry is
one layer of one stored model, keyed ``(model_id, layer_index)``. Each policy lists the constructor options a config
may set in ``options``. Replaying a recorded search makes 10^5-10^6 calls, so per call FIFO and LRU
cost O(1), LFU, donor-window and belady O(log n) amortised (heaps with lazy deletion); evolution-aware
costs O(log n) too, plus a re-rank of every held entry when the population has moved (at most once per
``refresh`` population updates). Inserting a key that is already held replaces it (as if removed first);
hits and removals of keys that are not held are ignored.
"""
from .base import Key, Policy
from .belady import Belady
from .classic import FIFO, LFU, LRU
from .donor_window import DonorWindow
from .evolution_aware import EvolutionAware
from .registry import POLICIES, make_policy, register_policy

__all__ = ["Key", "Policy", "FIFO", "LRU", "LFU", "DonorWindow", "EvolutionAware", "Belady", "POLICIES",
           "make_policy", "register_policy"]
