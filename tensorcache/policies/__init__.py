"""Eviction policies: pure bookkeeping over cache entries, no I/O.

A tier tells its policy about inserts, hits, donations, evaluations and removals, and asks it for the
next victim. An entry is one layer of one stored model, keyed ``(model_id, layer_index)``. Every policy
costs O(log n) or amortised O(1) per call (heaps with lazy deletion, ordered dicts), because replaying a
recorded search makes 10^5-10^6 calls. Inserting a key that is already held replaces it (as if removed
first); hits and removals of keys that are not held are ignored.
"""
from .base import Key, Policy
from .belady import Belady
from .classic import FIFO, LFU, LRU
from .donor_window import DonorWindow
from .evolution_aware import EvolutionAware
from .registry import POLICIES, make_policy, register_policy

__all__ = ["Key", "Policy", "FIFO", "LRU", "LFU", "DonorWindow", "EvolutionAware", "Belady", "POLICIES",
           "make_policy", "register_policy"]
