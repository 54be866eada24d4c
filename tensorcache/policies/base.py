"""The policy interface, and the bookkeeping pieces every policy shares (sizes, depths, a lazy heap)."""
from __future__ import annotations

import heapq
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence, Sized
from typing import TYPE_CHECKING, Any

from ..events import Key, Released

if TYPE_CHECKING:
    from ..events import PolicyEvent

class Policy(ABC):
    """Eviction bookkeeping for one tier; ``victim`` names the next entry to evict without releasing it.

    It hears every event of ``tensorcache.events`` through ``handle``, each by its declared ``on_*``
    method; a policy overrides those it needs (inserts and releases it must)."""

    name: str = "policy"
    options: tuple[str, ...] = ()  # constructor keywords a config may set (CacheConfig.policy_options)

    def handle(self, event: PolicyEvent) -> None:
        """Take one typed event by its declared method."""
        event.deliver(self)

    @abstractmethod
    def on_insert(self, key: Key, size: int, model_id: str, deps: tuple[int, ...] = ()) -> None:
        """``key`` entered the tier: ``size`` bytes of ``model_id``, depending on arch positions ``deps``."""

    def on_found(self, model_id: str, entries: Sequence[tuple[Key, int, tuple[int, ...]]]) -> None:
        """``model_id``'s ``entries`` (key, size, deps) found held in a shared tier: one insert each, in order (a
        policy overrides this only to take them at once, to the same effect)."""
        for key, size, deps in entries:
            self.on_insert(key, size, model_id, deps)

    def on_hit(self, key: Key) -> None:
        """The entry was served to a child (ignored unless the policy needs it)."""

    def on_donation(self, model_id: str) -> None:
        """``model_id`` was chosen as a donor, once per lookup (ignored unless the policy needs it)."""

    def on_evaluation(self) -> None:
        """One evaluation finished: advances windows and clocks (ignored unless the policy needs it)."""

    def on_population(self, members: Sequence[tuple[str, float]], population_size: int, sample_size: int) -> None:
        """The population as (model_id, score), oldest first, P and S (ignored unless the policy needs it)."""

    def on_mutation(self, position: int) -> None:
        """A child's mutation landed on arch ``position`` (ignored unless the policy needs it)."""

    def on_model(self, model_id: str, arch: Sequence[int], mode: str = "prefix", layers: int = 0,
                 score: float | None = None) -> None:
        """``model_id``'s arch, mode, layer count and score, before its layers arrive (ignored unless needed)."""

    def on_clock(self, position: int) -> None:
        """Replay's request-stream position (only the offline bound needs it)."""

    @abstractmethod
    def on_release(self, key: Key) -> None:
        """The entry was released from the tier (evicted after ``victim`` or for another reason)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A subclass written for the old name ``on_remove`` still works, with a DeprecationWarning."""
        super().__init_subclass__(**kwargs)
        if "on_remove" in cls.__dict__ and "on_release" not in cls.__dict__:
            warnings.warn(f"{cls.__name__}.on_remove: policies now implement on_release", DeprecationWarning,
                          stacklevel=2)
            cls.on_release = cls.__dict__["on_remove"]  # before ABCMeta counts the abstract methods

    @abstractmethod
    def victim(self) -> Key:
        """The next entry to evict; LookupError when the policy holds nothing."""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def __contains__(self, key: object) -> bool: ...


def check_size(size: int) -> int:
    if size < 0:
        raise ValueError(f"entry size must be >= 0 bytes, got {size!r}")
    return int(size)


def layer_depth(key: Key) -> int:
    """Layer index of a ``(model_id, layer_index)`` key, 0 for other keys (deepest layers go first)."""
    if isinstance(key, tuple) and len(key) == 2 and isinstance(key[1], int):
        return key[1]
    return 0


def empty_error(policy: Policy) -> LookupError:
    return LookupError(f"policy {policy.name!r} holds no entries to evict")


class LazyHeap:
    """Min-heap of keys whose priorities change: a new priority pushes a new item and stale items are
    skipped when they surface; the heap is compacted when stale items outnumber live ones. ``rise`` sets a
    priority without a push when it is not below the key's item: the item moves when it surfaces."""

    def __init__(self, ranked: Sequence[Key] = (), priority: Callable[[int], Any] | None = None) -> None:
        """Start from distinct keys already in priority order, ``priority(i)`` being the i-th's: an item is
        made only when its key surfaces, so a large start costs no item per key."""
        self._heap: list[tuple[Any, int, Key]] = []
        # a tuple and an int counter rather than a list and itertools.count: objects the collector does not track
        # (a policy keeps a heap per held model)
        self._ranked, self._ranked_priority, self._next = tuple(ranked), priority, 0  # token of a ranked key: its place
        self._token = len(self._ranked)  # the next item's
        self._live: dict[Key, int] = dict(zip(self._ranked, range(len(self._ranked))))  # key -> its item's token
        self._risen: dict[Key, Any] = {}  # key -> its priority, where that is above its item's

    def push(self, key: Key, priority: Any) -> None:
        token = self._live[key] = self._token
        self._token += 1
        if self._risen:
            self._risen.pop(key, None)
        heap = self._heap
        heapq.heappush(heap, (priority, token, key))
        if len(heap) > 2 * len(self._live) + 64:
            self._heap = [item for item in heap if self._live.get(item[2]) == item[1]]
            heapq.heapify(self._heap)

    def rise(self, key: Key, priority: Any, floor: Any | None) -> None:
        """Set ``key``'s priority, given ``floor``, the last priority set for it (None: none): pushed only when
        below that, since the order needs it now; else its item moves when it surfaces."""
        if floor is None or priority < floor or key not in self._live:
            self.push(key, priority)
        else:
            self._risen[key] = priority

    def discard(self, key: Key) -> None:
        self._live.pop(key, None)
        if self._risen:
            self._risen.pop(key, None)

    def peek(self) -> tuple[Any, Key] | None:
        """(priority, key) of the smallest live item, or None."""
        heap, live, risen, ranked = self._heap, self._live, self._risen, self._ranked
        first, end = self._next, len(ranked)
        while True:
            while first < end and live.get(ranked[first]) != first:
                first += 1  # pushed again or discarded since the start
            self._next = first
            if first < end and risen and ranked[first] in risen:  # its item moves into the heap
                key = ranked[first]
                self.push(key, risen[key])
                heap = self._heap  # a push may compact it into a new list
                continue
            while heap:
                priority, token, key = heap[0]
                if live.get(key) != token:
                    heapq.heappop(heap)
                elif risen and key in risen:
                    token = live[key] = self._token
                    self._token += 1
                    heapq.heapreplace(heap, (risen.pop(key), token, key))
                else:
                    break
            if first < end:
                top = self._ranked_priority(first), ranked[first]  # type: ignore[misc]  # given with the ranked keys
                return top if not heap or not heap[0][0] < top[0] else (heap[0][0], heap[0][2])  # ties: the older
            return (heap[0][0], heap[0][2]) if heap else None

    def pop(self) -> tuple[Any, Key]:
        top = self.peek()
        if top is None:
            raise LookupError("empty heap")
        if self._next < len(self._ranked) and self._ranked[self._next] == top[1]:
            self._next += 1
        else:
            heapq.heappop(self._heap)
        del self._live[top[1]]
        return top

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, key: object) -> bool:
        return key in self._live


def make_room(policy: Policy, short: int, size: Callable[[Key], int | None], held: Sized | None = None) -> list[Key]:
    """The admission rule every byte budget shares (a tier in the stack, a replay's store): take the
    policy's victims in its order, telling it each removal, until their ``size``s cover ``short`` bytes
    (at least one victim), nothing is ``held`` (default: the policy's entries), or a victim's size is
    unknown (None). Returns the victims, to be released."""
    held = policy if held is None else held
    victims, freed = [], 0
    while len(held) and (not victims or freed < short):
        entry = policy.victim()
        policy.handle(Released(entry))
        victims.append(entry)
        got = size(entry)
        if got is None:
            break
        freed += got
    return victims
