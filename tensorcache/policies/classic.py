"""The baselines: FIFO, LRU and LFU."""
from __future__ import annotations

import itertools
from collections import OrderedDict

from .base import Key, LazyHeap, Policy, check_size, empty_error


class FIFO(Policy):
    """Evicts the entry inserted longest ago; hits do not matter."""

    name = "fifo"

    def __init__(self) -> None:
        self._order: OrderedDict[Key, None] = OrderedDict()

    def on_insert(self, key: Key, size: int, model_id: str, deps: tuple[int, ...] = ()) -> None:
        check_size(size)
        self._order.pop(key, None)
        self._order[key] = None

    def on_release(self, key: Key) -> None:
        self._order.pop(key, None)

    def victim(self) -> Key:
        if not self._order:
            raise empty_error(self)
        return next(iter(self._order))

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, key: object) -> bool:
        return key in self._order


class LRU(FIFO):
    """Evicts the entry least recently inserted or hit."""

    name = "lru"

    def on_hit(self, key: Key) -> None:
        if key in self._order:
            self._order.move_to_end(key)


class LFU(Policy):
    """Evicts the entry with the fewest hits since it was inserted; ties go to the least recently used."""

    name = "lfu"

    def __init__(self) -> None:
        self._heap = LazyHeap()
        self._hits: dict[Key, int] = {}
        self._tick = itertools.count()

    def on_insert(self, key: Key, size: int, model_id: str, deps: tuple[int, ...] = ()) -> None:
        check_size(size)
        self._hits[key] = 0
        self._heap.push(key, (0, next(self._tick)))

    def on_hit(self, key: Key) -> None:
        if key in self._hits:
            self._hits[key] += 1
            self._heap.push(key, (self._hits[key], next(self._tick)))

    def on_release(self, key: Key) -> None:
        if self._hits.pop(key, None) is not None:
            self._heap.discard(key)

    def victim(self) -> Key:
        top = self._heap.peek()
        if top is None:
            raise empty_error(self)
        return top[1]

    def __len__(self) -> int:
        return len(self._hits)

    def __contains__(self, key: object) -> bool:
        return key in self._hits
