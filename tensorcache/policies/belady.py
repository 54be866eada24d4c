"""The offline bound: evict the entry whose next request is farthest away (replays only)."""
from __future__ import annotations

import itertools
import math
from bisect import bisect_left
from collections.abc import Mapping, Sequence

from .base import Key, LazyHeap, Policy, check_size, empty_error


class Belady(Policy):
    """Offline bound for replays: evicts the entry whose next request (at or after ``on_clock``) is
    farthest away, never-requested first; ties go to the larger entry, then the earlier inserted."""

    name = "belady"
    options = ("next_uses",)

    def __init__(self, next_uses: Mapping[Key, Sequence[int]]) -> None:
        self._uses = {k: sorted(v) for k, v in next_uses.items()}
        self._t = 0
        self._held: dict[Key, tuple[int, int]] = {}  # key -> (size, insert seq)
        self._seq = itertools.count()
        self._farthest = LazyHeap()  # key -> (-next use, -size, seq)
        self._expiring = LazyHeap()  # key -> next use (finite only)

    def on_clock(self, t: int) -> None:
        """The current request index; entries whose next use has passed look further ahead."""
        if t < self._t:
            raise ValueError(f"time must not go back: at {self._t}, got {t}")
        self._t = t
        while (top := self._expiring.peek()) is not None and top[0] < t:
            self._expiring.pop()
            self._schedule(top[1])

    def on_insert(self, key: Key, size: int, model_id: str, deps: tuple[int, ...] = ()) -> None:
        self._held[key] = (check_size(size), next(self._seq))
        self._schedule(key)

    def on_release(self, key: Key) -> None:
        if self._held.pop(key, None) is not None:
            self._farthest.discard(key)
            self._expiring.discard(key)

    def victim(self) -> Key:
        top = self._farthest.peek()
        if top is None:
            raise empty_error(self)
        return top[1]

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, key: object) -> bool:
        return key in self._held

    def _schedule(self, key: Key) -> None:
        uses = self._uses.get(key, ())
        i = bisect_left(uses, self._t)
        size, seq = self._held[key]
        if i < len(uses):
            self._farthest.push(key, (-uses[i], -size, seq))
            self._expiring.push(key, uses[i])
        else:
            self._farthest.push(key, (-math.inf, -size, seq))
            self._expiring.discard(key)
