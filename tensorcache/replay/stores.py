"""The set of cached entries a replay drives: unbounded (the reference) or one byte budget under a policy."""
from __future__ import annotations

from collections.abc import Sequence

from ..catalog import Entry
from ..events import Inserted, PolicyEvent
from ..policies import Policy
from ..policies.base import make_room


class Store:
    """Cached entries that hear the same typed policy events a live cache tier does. ``insert`` reports
    the evictions it made; a store that can also lose entries on its own says so through ``missing``."""

    def insert(self, event: Inserted) -> tuple[bool, Sequence[Entry]]:
        """Admit ``event.key``; returns (admitted, entries evicted to make room)."""
        raise NotImplementedError

    def handle(self, event: PolicyEvent) -> None:
        """Hear one policy event other than an insert or removal (ignored unless the store has a policy)."""

    def missing(self, donor: str, layers: Sequence[int]) -> list[int]:
        """Which of ``donor``'s ``layers`` the store lost without reporting it (none here)."""
        return []


class UnboundedStore(Store):
    """Keeps everything: the reference every yield is measured against."""

    def insert(self, event: Inserted) -> tuple[bool, Sequence[Entry]]:
        return True, ()


class PolicyStore(Store):
    """One byte budget managed by one of our policies, the way a cache tier uses it: refused when larger
    than the budget, else the stack's ``make_room`` until it fits."""

    def __init__(self, policy: Policy, capacity_bytes: int) -> None:
        if capacity_bytes < 0:
            raise ValueError(f"capacity must be >= 0 bytes, got {capacity_bytes}")
        self.policy = policy
        self.capacity = int(capacity_bytes)
        self.sizes: dict[Entry, int] = {}
        self.used = 0
        self.max_used = 0
        self.evictions = 0

    def handle(self, event: PolicyEvent) -> None:
        self.policy.handle(event)

    def contains(self, entry: Entry) -> bool:
        return entry in self.sizes

    def insert(self, event: Inserted) -> tuple[bool, Sequence[Entry]]:
        size, capacity = event.size, self.capacity
        if size > capacity:
            return False, ()
        evicted: Sequence[Entry] = ()
        if self.used + size > capacity:
            evicted = self._evict(self.used + size - capacity)
            if self.used + size > capacity:
                return False, evicted
        self.policy.handle(event)
        self.sizes[event.key] = size
        self.used += size
        if self.used > self.max_used:
            self.max_used = self.used
        return True, evicted

    def _evict(self, need: int) -> list[Entry]:
        """Evict the policy's victims until ``need`` bytes are free or nothing is left (the stack's rule)."""
        sizes = self.sizes

        def size(victim: Entry) -> int:
            got = sizes.pop(victim, None)
            if got is None:
                raise RuntimeError(f"policy {self.policy.name!r} named victim {victim!r}, which it was never "
                                   "given or which was already removed")
            self.used -= got
            return got

        out = make_room(self.policy, need, size, sizes)
        self.evictions += len(out)
        return out
