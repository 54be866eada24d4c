"""Eviction policies: pure bookkeeping over cache entries, no I/O.

A tier tells its policy about inserts, hits, donations, evaluations and removals, and asks it for the
next victim. An entry is one layer of one stored model, keyed ``(model_id, layer_index)``. Every policy
costs O(log n) or amortised O(1) per call (heaps with lazy deletion, ordered dicts), because replaying a
recorded search makes 10^5-10^6 calls. Inserting a key that is already held replaces it (as if removed
first); hits and removals of keys that are not held are ignored.
"""
from __future__ import annotations

import heapq
import itertools
import math
import operator
import statistics
from abc import ABC, abstractmethod
from bisect import bisect_left, bisect_right
from collections import OrderedDict, deque
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Key = Hashable  # the cache uses (model_id, layer_index)


class Policy(ABC):
    """Eviction bookkeeping for one tier; ``victim`` names the next entry to evict without removing it."""

    name: str = "policy"

    @abstractmethod
    def on_insert(self, key: Key, size: int, model_id: str, deps: tuple[int, ...] = ()) -> None:
        """``key`` entered the tier: ``size`` bytes of ``model_id``, depending on arch positions ``deps``."""

    def on_hit(self, key: Key) -> None:
        """The entry was served to a child (ignored unless the policy needs it)."""

    def on_donation(self, model_id: str) -> None:
        """``model_id`` was chosen as a donor, once per lookup (ignored unless the policy needs it)."""

    def on_evaluation(self) -> None:
        """One evaluation finished: advances windows and clocks (ignored unless the policy needs it)."""

    @abstractmethod
    def on_remove(self, key: Key) -> None:
        """The entry left the tier (evicted after ``victim`` or for another reason)."""

    @abstractmethod
    def victim(self) -> Key:
        """The next entry to evict; LookupError when the policy holds nothing."""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def __contains__(self, key: object) -> bool: ...


def _check_size(size: int) -> int:
    if size < 0:
        raise ValueError(f"entry size must be >= 0 bytes, got {size!r}")
    return int(size)


def _depth(key: Key) -> int:
    """Layer index of a ``(model_id, layer_index)`` key, 0 for other keys (deepest layers go first)."""
    if isinstance(key, tuple) and len(key) == 2 and isinstance(key[1], int):
        return key[1]
    return 0


def _empty(policy: Policy) -> LookupError:
    return LookupError(f"policy {policy.name!r} holds no entries to evict")


class _LazyHeap:
    """Min-heap of keys whose priorities change: a new priority pushes a new item and stale items are
    skipped when they surface; the heap is compacted when stale items outnumber live ones."""

    def __init__(self) -> None:
        self._heap: list[tuple[Any, int, Key]] = []
        self._live: dict[Key, int] = {}  # key -> token of its current item
        self._tokens = itertools.count()

    def push(self, key: Key, priority: Any) -> None:
        token = next(self._tokens)
        self._live[key] = token
        heapq.heappush(self._heap, (priority, token, key))
        if len(self._heap) > 2 * len(self._live) + 64:
            self._heap = [item for item in self._heap if self._live.get(item[2]) == item[1]]
            heapq.heapify(self._heap)

    def discard(self, key: Key) -> None:
        self._live.pop(key, None)

    def peek(self) -> tuple[Any, Key] | None:
        """(priority, key) of the smallest live item, or None."""
        heap = self._heap
        while heap and self._live.get(heap[0][2]) != heap[0][1]:
            heapq.heappop(heap)
        return (heap[0][0], heap[0][2]) if heap else None

    def pop(self) -> tuple[Any, Key]:
        top = self.peek()
        if top is None:
            raise LookupError("empty heap")
        heapq.heappop(self._heap)
        del self._live[top[1]]
        return top

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, key: object) -> bool:
        return key in self._live


# ---------------------------------------------------------------------------------------- baselines
class FIFO(Policy):
    """Evicts the entry inserted longest ago; hits do not matter."""

    name = "fifo"

    def __init__(self) -> None:
        self._order: OrderedDict[Key, None] = OrderedDict()

    def on_insert(self, key: Key, size: int, model_id: str, deps: tuple[int, ...] = ()) -> None:
        _check_size(size)
        self._order.pop(key, None)
        self._order[key] = None

    def on_remove(self, key: Key) -> None:
        self._order.pop(key, None)

    def victim(self) -> Key:
        if not self._order:
            raise _empty(self)
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
        self._heap = _LazyHeap()
        self._hits: dict[Key, int] = {}
        self._tick = itertools.count()

    def on_insert(self, key: Key, size: int, model_id: str, deps: tuple[int, ...] = ()) -> None:
        _check_size(size)
        self._hits[key] = 0
        self._heap.push(key, (0, next(self._tick)))

    def on_hit(self, key: Key) -> None:
        if key in self._hits:
            self._hits[key] += 1
            self._heap.push(key, (self._hits[key], next(self._tick)))

    def on_remove(self, key: Key) -> None:
        if self._hits.pop(key, None) is not None:
            self._heap.discard(key)

    def victim(self) -> Key:
        top = self._heap.peek()
        if top is None:
            raise _empty(self)
        return top[1]

    def __len__(self) -> int:
        return len(self._hits)

    def __contains__(self, key: object) -> bool:
        return key in self._hits


# ------------------------------------------------------------------------------------ donor window
class _Pool:
    """Entries grouped by model: models ordered by a changeable priority, and within a model the deepest
    (then most recently inserted) layer first, since a prefix run is useless without its earlier layers."""

    def __init__(self) -> None:
        self._models = _LazyHeap()
        self._layers: dict[str, _LazyHeap] = {}

    def add(self, model_id: str, key: Key, seq: int) -> None:
        self._layers.setdefault(model_id, _LazyHeap()).push(key, (-_depth(key), -seq))

    def discard(self, model_id: str, key: Key) -> None:
        layers = self._layers[model_id]
        layers.discard(key)
        if not layers:
            del self._layers[model_id]
            self._models.discard(model_id)

    def rank(self, model_id: str, priority: Any) -> None:
        """Set the priority of a model that has entries in the pool."""
        self._models.push(model_id, priority)

    def head(self) -> tuple[Any, tuple[int, int], Key] | None:
        """(model priority, layer priority, key) of the next entry, or None when empty."""
        top = self._models.peek()
        if top is None:
            return None
        layer = self._layers[top[1]].peek()
        assert layer is not None  # a model leaves the ranking with its last entry
        return top[0], layer[0], layer[1]

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._layers


@dataclass
class _Donor:
    """What donor-window knows about one model that holds entries."""

    touched: int  # tick of its last insert, donation or hit
    nbytes: int = 0


class DonorWindow(Policy):
    """The study's policy: evicts the deepest layer of the model least often a donor in the last ``window``
    evaluations (ties: least recently inserted, donated or hit); ``size_aware`` ranks donations per held byte.

    ``window=100`` evaluations is a default pending the window-size bench (docs/policies.md).
    """

    name = "donor-window"

    def __init__(self, window: int = 100, size_aware: bool = False) -> None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be an int >= 1 evaluations, got {window!r}")
        self.window = window
        self.size_aware = bool(size_aware)
        self._clock = 0  # evaluations finished
        self._tick = itertools.count()
        self._donations: deque[tuple[int, str]] = deque()  # (clock at donation, model), oldest first
        self._popularity: dict[str, int] = {}  # donations inside the window, > 0 only
        self._models: dict[str, _Donor] = {}
        self._entries: dict[Key, tuple[str, int]] = {}  # key -> (model, size)
        self._pool = _Pool()  # models ranked by (popularity [per byte], touched)

    def popularity(self, model_id: str) -> int:
        """Times ``model_id`` was a donor in the last ``window`` evaluations."""
        return self._popularity.get(model_id, 0)

    def on_insert(self, key: Key, size: int, model_id: str, deps: tuple[int, ...] = ()) -> None:
        size = _check_size(size)
        self.on_remove(key)
        tick = next(self._tick)
        model = self._models.setdefault(model_id, _Donor(tick))
        model.touched, model.nbytes = tick, model.nbytes + size
        self._entries[key] = (model_id, size)
        self._pool.add(model_id, key, tick)
        self._rank(model_id)

    def on_hit(self, key: Key) -> None:
        if key in self._entries:
            self._touch(self._entries[key][0])

    def on_donation(self, model_id: str) -> None:
        self._donations.append((self._clock, model_id))
        self._popularity[model_id] = self._popularity.get(model_id, 0) + 1
        self._touch(model_id)

    def on_evaluation(self) -> None:
        self._clock += 1
        while self._donations and self._donations[0][0] < self._clock - self.window:
            _, model_id = self._donations.popleft()
            left = self._popularity[model_id] - 1
            if left:
                self._popularity[model_id] = left
            else:
                del self._popularity[model_id]
            if model_id in self._models:
                self._rank(model_id)

    def on_remove(self, key: Key) -> None:
        got = self._entries.pop(key, None)
        if got is None:
            return
        model_id, size = got
        self._pool.discard(model_id, key)
        self._models[model_id].nbytes -= size
        if model_id not in self._pool:
            del self._models[model_id]
        elif self.size_aware:
            self._rank(model_id)

    def victim(self) -> Key:
        head = self._pool.head()
        if head is None:
            raise _empty(self)
        return head[2]

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def _touch(self, model_id: str) -> None:
        model = self._models.get(model_id)
        if model is not None:
            model.touched = next(self._tick)
            self._rank(model_id)

    def _rank(self, model_id: str) -> None:
        model = self._models[model_id]
        value: float = self.popularity(model_id)
        if self.size_aware:
            value /= max(model.nbytes, 1)
        self._pool.rank(model_id, (value, model.touched))


# --------------------------------------------------------------------------------- evolution aware
def _score(value: float | None) -> float:
    """A member's score; a missing or NaN score ranks below every real one."""
    return -math.inf if value is None or value != value else float(value)


def _position(value: Any, what: str) -> int:
    """An arch position: an int >= 0 (numpy ints too)."""
    try:
        position = operator.index(value)
    except TypeError:
        position = -1
    if position < 0:
        raise ValueError(f"{what}: expected an arch position (int >= 0), got {value!r}")
    return position


@dataclass
class _Held:
    """A model holding entries in an EvolutionAware policy."""

    index: int  # its row in the touch array
    born: int  # population updates seen when its first entry arrived
    keys: set = field(default_factory=set)
    live: bool = False  # expected reuse > 0: its entries are ranked by value, else by recency only


Priority = tuple[float, int, int, int]  # (reuse per byte, model touch, -layer index, -insert seq)


class EvolutionAware(Policy):
    """Evicts the lowest expected reuse per byte: P(model is the next parent) x its remaining lifetime x
    P(a child's mutation spares the entry's positions), from the last population and histogram given.

    Models that left the population are worth 0. Stale news: a model not yet listed counts as a member
    that joined at its insert with the median score, until P updates pass. Ties: least recently
    inserted, donated or hit model, deepest layer first. No population yet: exactly DonorWindow(window).
    """

    name = "evolution-aware"

    def __init__(self, window: int = 100) -> None:
        self._fallback = DonorWindow(window)
        self._tick = itertools.count()
        self._entries: dict[Key, tuple[str, int, float, int]] = {}  # key -> (model, sig, size >= 1, seq)
        self._held: dict[str, _Held] = {}
        self._rows = 0
        self._free_rows: list[int] = []
        self._touch_of = np.zeros(0, np.int64)  # model row -> tick of its last insert, donation or hit
        self._dead = _Pool()  # entries of models worth 0, ranked by recency alone
        self._live: set[str] = set()
        self._newcomers: set[str] = set()  # held models never listed in a population
        # entries of live models sit in slots of parallel arrays, so re-ranking is a few numpy operations
        self._slot_of: dict[Key, int] = {}
        self._keys: list[Key | None] = []
        self._free: list[int] = []
        self._s_row = np.zeros(0, np.int64)
        self._s_sig = np.zeros(0, np.int64)
        self._s_size = np.zeros(0, np.float64)
        self._s_depth = np.zeros(0, np.int64)
        self._s_seq = np.zeros(0, np.int64)
        self._s_gen = np.zeros(0, np.int64)
        self._s_alive = np.zeros(0, bool)
        self._sig_index: dict[tuple[int, ...], int] = {}
        self._sigs: list[tuple[int, ...]] = []  # distinct dependency tuples
        # evolution state
        self._members: dict[str, float] = {}  # member -> P(donor) x remaining lifetime
        self._ever: set[str] = set()
        self._updates = 0
        self._population_size = 0
        self._newcomer_p = 0.0
        self._hist: list[int] = []
        self._mutations = 0
        self._positions = 0  # 1 + the largest position seen in a mutation or a dependency
        self._cover_cache: dict[int, float] = {}
        # ranking of the live entries, rebuilt lazily when the state version moves
        self._version = 0
        self._built = -1
        self._order = np.zeros(0, np.int64)
        self._o_value = np.zeros(0)
        self._o_touch = np.zeros(0, np.int64)
        self._o_gen = np.zeros(0, np.int64)
        self._pos = 0
        self._fresh = _LazyHeap()  # live slots inserted or re-touched since the last rebuild

    # --------------------------------------------------------------- evolution state
    def update_population(self, members: Sequence[tuple[str, float]], population_size: int,
                          sample_size: int) -> None:
        """The population as (model_id, score), oldest first (the first dies next), P and S."""
        members = [(str(m), _score(s)) for m, s in members]
        if population_size < 1 or sample_size < 1:
            raise ValueError(f"need population_size >= 1 and sample_size >= 1, got {population_size}, {sample_size}")
        if len(members) > population_size:
            raise ValueError(f"{len(members)} members exceed population_size {population_size}")
        self._updates += 1
        self._population_size = population_size
        self._bump()
        changed = self._live | self._newcomers | {m for m, _ in members if m in self._held}
        self._members, self._newcomer_p = {}, 0.0
        if members:
            ascending = sorted(s for _, s in members)
            n, spare = len(members), population_size - len(members)

            def p_donor(score: float) -> float:
                """P(the best of S uniform draws scores ``score``), split evenly among the tied members."""
                lo, hi = bisect_left(ascending, score), bisect_right(ascending, score)
                better, tied = n - hi, hi - lo
                return (((n - better) / n) ** sample_size - ((n - better - tied) / n) ** sample_size) / tied

            self._members = {m: p_donor(s) * (spare + i + 1) for i, (m, s) in enumerate(members)}
            self._newcomer_p = p_donor(statistics.median_low(ascending))
            self._ever.update(self._members)
        for m in list(self._newcomers):
            if m in self._ever:
                self._newcomers.discard(m)
            elif self._updates - self._held[m].born >= population_size:  # aged out unlisted: dead for good
                self._newcomers.discard(m)
                self._ever.add(m)
        for model_id in changed:
            self._classify(model_id)

    def observe_mutation(self, position: int) -> None:
        """A child's mutation landed on arch ``position``."""
        position = _position(position, "mutation position")
        if position >= len(self._hist):
            self._hist.extend([0] * (position + 1 - len(self._hist)))
        self._hist[position] += 1
        self._mutations += 1
        self._positions = max(self._positions, position + 1)
        self._bump()

    @property
    def has_population(self) -> bool:
        """True once a non-empty population drives the ranking (else donor-window decides)."""
        return bool(self._members)

    def reuse(self, key: Key) -> float:
        """Expected future reuses of a held entry under the current state (0 for keys not held)."""
        got = self._entries.get(key)
        return 0.0 if got is None else self._model_value(got[0]) * self._cover(got[1])

    # --------------------------------------------------------------- Policy
    def on_insert(self, key: Key, size: int, model_id: str, deps: tuple[int, ...] = ()) -> None:
        size = _check_size(size)
        deps = tuple(sorted({_position(p, "deps") for p in deps}))
        self.on_remove(key)
        self._fallback.on_insert(key, size, model_id, deps)
        if deps and max(deps) >= self._positions:
            self._positions = max(deps) + 1
            self._bump()
        held = self._held.get(model_id)
        if held is None:
            held = self._held[model_id] = _Held(self._new_row(), self._updates)
            if model_id not in self._ever:
                self._newcomers.add(model_id)
            held.live = self._model_value(model_id) > 0
            if held.live:
                self._live.add(model_id)
        seq = self._touch(model_id)
        held.keys.add(key)
        self._entries[key] = (model_id, self._sig(deps), float(max(size, 1)), seq)
        self._place(key, held)

    def on_hit(self, key: Key) -> None:
        self._fallback.on_hit(key)
        if key in self._entries:
            self._touch(self._entries[key][0])

    def on_donation(self, model_id: str) -> None:
        self._fallback.on_donation(model_id)
        if model_id in self._held:
            self._touch(model_id)

    def on_evaluation(self) -> None:
        self._fallback.on_evaluation()

    def on_remove(self, key: Key) -> None:
        got = self._entries.pop(key, None)
        if got is None:
            return
        self._fallback.on_remove(key)
        model_id = got[0]
        held = self._held[model_id]
        held.keys.discard(key)
        self._unplace(key, model_id, held)
        if not held.keys:
            del self._held[model_id]
            self._free_rows.append(held.index)
            self._live.discard(model_id)
            self._newcomers.discard(model_id)

    def victim(self) -> Key:
        if not self._entries:
            raise _empty(self)
        if not self.has_population:
            return self._fallback.victim()
        if self._built != self._version:
            self._rebuild()
        best: tuple[Priority, Key] | None = None
        dead = self._dead.head()
        if dead is not None:  # worth 0: only recency and depth order them
            best = ((0.0, dead[0]) + dead[1], dead[2])
        for head in (self._ranked_head(), self._fresh_head()):
            if head is not None and (best is None or head[0] < best[0]):
                best = (head[0], self._keys[head[1]])
        assert best is not None  # every entry is dead, ranked or fresh
        return best[1]

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    # --------------------------------------------------------------- values
    def _bump(self) -> None:
        self._version += 1
        self._cover_cache.clear()

    def _model_value(self, model_id: str) -> float:
        """P(donor at one step) x remaining lifetime of a held model."""
        value = self._members.get(model_id)
        if value is not None:
            return value
        age = self._updates - self._held[model_id].born
        if model_id in self._ever or age >= self._population_size:
            return 0.0
        return self._newcomer_p * (self._population_size - age)

    def _cover(self, sig: int) -> float:
        """P(a child's single mutation lands outside the positions of ``sig``), Laplace-smoothed."""
        got = self._cover_cache.get(sig)
        if got is None:
            deps, hist = self._sigs[sig], self._hist
            got = 1.0
            if deps:  # then self._positions > max(deps) >= 0
                hits = sum(hist[p] if p < len(hist) else 0 for p in deps) + len(deps)
                got = 1.0 - hits / (self._mutations + self._positions)
            self._cover_cache[sig] = got
        return got

    def _rebuild(self) -> None:
        """Rank every live entry under the current state (one numpy sort over live entries only)."""
        live = np.flatnonzero(self._s_alive)
        model_values = np.zeros(len(self._touch_of))
        for model_id in self._live:
            model_values[self._held[model_id].index] = self._model_value(model_id)
        covers = np.array([self._cover(s) for s in range(len(self._sigs))], dtype=np.float64)
        rows = self._s_row[live]
        values = model_values[rows] * covers[self._s_sig[live]] / self._s_size[live]
        touch = self._touch_of[rows]
        order = np.lexsort((-self._s_seq[live], -self._s_depth[live], touch, values))
        self._order, self._o_value, self._o_touch = live[order], values[order], touch[order]
        self._o_gen = self._s_gen[self._order]
        self._pos = 0
        self._fresh = _LazyHeap()
        self._built = self._version

    def _priority(self, slot: int, value: float) -> Priority:
        return (value, int(self._touch_of[self._s_row[slot]]), -int(self._s_depth[slot]), -int(self._s_seq[slot]))

    def _ranked_head(self) -> tuple[Priority, int] | None:
        """The best entry of the last ranking still valid; entries touched since move to the fresh heap."""
        while self._pos < len(self._order):
            i = self._pos
            slot = int(self._order[i])
            if self._s_alive[slot] and self._s_gen[slot] == self._o_gen[i]:
                priority = self._priority(slot, float(self._o_value[i]))
                if priority[1] == self._o_touch[i]:
                    return priority, slot
                self._fresh.push(slot, priority)
            self._pos += 1
        return None

    def _fresh_head(self) -> tuple[Priority, int] | None:
        while (top := self._fresh.peek()) is not None:
            priority, slot = top
            touch = int(self._touch_of[self._s_row[slot]])
            if touch == priority[1]:
                return top
            self._fresh.push(slot, (priority[0], touch) + priority[2:])
        return None

    # --------------------------------------------------------------- placement
    def _touch(self, model_id: str) -> int:
        tick = next(self._tick)
        held = self._held[model_id]
        self._touch_of[held.index] = tick
        if model_id in self._dead:
            self._dead.rank(model_id, tick)
        return tick

    def _classify(self, model_id: str) -> None:
        """Move a model's entries between the dead pool and the ranked slots when its value crosses 0."""
        held = self._held[model_id]
        live = self._model_value(model_id) > 0
        if live == held.live:
            return
        for key in held.keys:
            self._unplace(key, model_id, held)
        held.live = live
        if live:
            self._live.add(model_id)
        else:
            self._live.discard(model_id)
        for key in held.keys:
            self._place(key, held)

    def _place(self, key: Key, held: _Held) -> None:
        model_id, sig, size, seq = self._entries[key]
        if not held.live:
            self._dead.add(model_id, key, seq)
            self._dead.rank(model_id, int(self._touch_of[held.index]))
            return
        slot = self._free.pop() if self._free else self._new_slot()
        self._slot_of[key], self._keys[slot] = slot, key
        self._s_row[slot], self._s_sig[slot], self._s_size[slot] = held.index, sig, size
        self._s_depth[slot], self._s_seq[slot], self._s_alive[slot] = _depth(key), seq, True
        if self._built == self._version:
            value = self._model_value(model_id) * self._cover(sig) / size
            self._fresh.push(slot, self._priority(slot, value))

    def _unplace(self, key: Key, model_id: str, held: _Held) -> None:
        if not held.live:
            self._dead.discard(model_id, key)
            return
        slot = self._slot_of.pop(key)
        self._s_alive[slot] = False
        self._s_gen[slot] += 1
        self._keys[slot] = None
        self._free.append(slot)
        self._fresh.discard(slot)

    def _new_slot(self) -> int:
        slot = len(self._keys)
        self._keys.append(None)
        if slot >= len(self._s_alive):
            size = max(64, 2 * len(self._s_alive))
            for name in ("_s_row", "_s_sig", "_s_size", "_s_depth", "_s_seq", "_s_gen", "_s_alive"):
                old = getattr(self, name)
                new = np.zeros(size, old.dtype)
                new[: len(old)] = old
                setattr(self, name, new)
        return slot

    def _new_row(self) -> int:
        if self._free_rows:
            return self._free_rows.pop()
        row, self._rows = self._rows, self._rows + 1
        if row >= len(self._touch_of):
            self._touch_of = np.concatenate([self._touch_of, np.zeros(max(64, len(self._touch_of)), np.int64)])
        return row

    def _sig(self, deps: tuple[int, ...]) -> int:
        s = self._sig_index.get(deps)
        if s is None:
            s = self._sig_index[deps] = len(self._sigs)
            self._sigs.append(deps)
        return s


# ------------------------------------------------------------------------------------------ Belady
class Belady(Policy):
    """Offline bound for replays: evicts the entry whose next request (at or after ``set_time``) is
    farthest away, never-requested first; ties go to the larger entry, then the earlier inserted."""

    name = "belady"

    def __init__(self, next_uses: Mapping[Key, Sequence[int]]) -> None:
        self._uses = {k: sorted(v) for k, v in next_uses.items()}
        self._t = 0
        self._held: dict[Key, tuple[int, int]] = {}  # key -> (size, insert seq)
        self._seq = itertools.count()
        self._farthest = _LazyHeap()  # key -> (-next use, -size, seq)
        self._expiring = _LazyHeap()  # key -> next use (finite only)

    def set_time(self, t: int) -> None:
        """The current request index; entries whose next use has passed look further ahead."""
        if t < self._t:
            raise ValueError(f"time must not go back: at {self._t}, got {t}")
        self._t = t
        while (top := self._expiring.peek()) is not None and top[0] < t:
            self._expiring.pop()
            self._schedule(top[1])

    def on_insert(self, key: Key, size: int, model_id: str, deps: tuple[int, ...] = ()) -> None:
        self._held[key] = (_check_size(size), next(self._seq))
        self._schedule(key)

    def on_remove(self, key: Key) -> None:
        if self._held.pop(key, None) is not None:
            self._farthest.discard(key)
            self._expiring.discard(key)

    def victim(self) -> Key:
        top = self._farthest.peek()
        if top is None:
            raise _empty(self)
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


# ---------------------------------------------------------------------------------------- registry
POLICIES: dict[str, type] = {}


def register_policy(name: str, cls: type) -> None:
    """Make ``cls`` (a Policy subclass) available to ``make_policy`` under ``name``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"policy name must be a non-empty string, got {name!r}")
    if not (isinstance(cls, type) and issubclass(cls, Policy)):
        raise TypeError(f"policy {name!r} must be a Policy subclass, got {cls!r}")
    if POLICIES.get(name, cls) is not cls:
        raise ValueError(f"policy name {name!r} is already taken by {POLICIES[name].__name__}")
    POLICIES[name] = cls


def make_policy(spec: str | Policy | type, **kwargs: Any) -> Policy:
    """A policy from a registered name, a Policy subclass (built with ``kwargs``) or an instance (as is)."""
    if isinstance(spec, Policy):
        if kwargs:
            raise ValueError(f"cannot apply options {sorted(kwargs)} to an already built {spec.name!r} policy")
        return spec
    if isinstance(spec, str):
        if spec not in POLICIES:
            raise ValueError(f"unknown policy {spec!r}; known: {', '.join(sorted(POLICIES))}")
        spec = POLICIES[spec]
    if isinstance(spec, type) and issubclass(spec, Policy):
        return spec(**kwargs)
    raise TypeError(f"expected a policy name, Policy subclass or Policy, got {spec!r}")


for _cls in (FIFO, LRU, LFU, DonorWindow, EvolutionAware, Belady):
    register_policy(_cls.name, _cls)
