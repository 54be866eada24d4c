"""The study's policy: evict the models least often chosen as donor in a sliding window."""
from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .base import Key, LazyHeap, Policy, check_size, empty_error, layer_depth


_SEQS = 1 << 63  # above every insert tick (a layer's priority in its model is one int, not a tuple per entry)


class _Pool:
    """Entries grouped by model: models ordered by a changeable priority, and within a model the deepest
    (then most recently inserted) layer first, since a prefix run is useless without its earlier layers."""

    def __init__(self) -> None:
        self._models = LazyHeap()
        self._layers: dict[str, LazyHeap] = {}

    def add(self, model_id: str, key: Key, seq: int) -> None:
        layers = self._layers.get(model_id)
        if layers is None:
            layers = self._layers[model_id] = LazyHeap()
        layers.push(key, -(layer_depth(key) * _SEQS + seq))  # deepest first, then the latest: (-depth, -seq) as one int

    def discard(self, model_id: str, key: Key) -> None:
        layers = self._layers[model_id]
        layers.discard(key)
        if not layers:
            del self._layers[model_id]
            self._models.discard(model_id)

    def rank(self, model_id: str, priority: Any, floor: Any | None) -> None:
        """Set the priority of a model that has entries in the pool, ``floor`` being the last one set (None:
        none): a rise (every insert, hit and donation) moves its heap item only when it surfaces."""
        self._models.rise(model_id, priority, floor)

    def head(self) -> tuple[Any, int, Key] | None:
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
    ranked: Any = None  # the priority last set in the pool


class DonorWindow(Policy):
    """The study's policy: evicts the deepest layer of the model least often a donor in the last ``window``
    evaluations (ties: least recently inserted, donated or hit); ``size_aware`` ranks donations per held byte.

    ``window=100`` evaluations suits a population of about 25; the window sweep (docs/policies.md) found
    W = 4 x P best on the traces it covered, which is what ``run_search`` sets.
    """

    name = "donor-window"
    options = ("window", "size_aware")

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
        # key -> its model, and key -> its size: two dicts of atoms rather than one of (model, size) tuples (a
        # tuple per entry would be one more object for the collector)
        self._entries: dict[Key, str] = {}
        self._sizes: dict[Key, int] = {}
        self._pool = _Pool()  # models ranked by (popularity [per byte], touched)

    def hold_instead(self, entries: Iterable[tuple[Key, str, int, int]], touched: Mapping[str, int], tick: int) -> None:
        """Hold ``entries`` (key, model, size, insert tick) instead of what it holds, each holding model last
        inserted, donated or hit at ``touched[model]``, and ``tick`` above every one of them; its clock and
        donation window stay. Having heard every donation and evaluation, it then decides as if it had heard
        every event (ticks that keep the order of the events give the same decisions as its own)."""
        self._tick = itertools.count(tick)
        self._models, self._entries, self._sizes, self._pool = {}, {}, {}, _Pool()
        for key, model_id, size, seq in entries:
            model = self._models.setdefault(model_id, _Donor(touched[model_id]))
            model.nbytes += size
            self._entries[key], self._sizes[key] = model_id, size
            self._pool.add(model_id, key, seq)
        for model_id in self._models:
            self._rank(model_id)

    def popularity(self, model_id: str) -> int:
        """Times ``model_id`` was a donor in the last ``window`` evaluations."""
        return self._popularity.get(model_id, 0)

    def on_insert(self, key: Key, size: int, model_id: str, deps: tuple[int, ...] = ()) -> None:
        self._add(key, check_size(size), model_id)
        self._rank(model_id)

    def on_found(self, model_id: str, entries: Sequence[tuple[Key, int, tuple[int, ...]]]) -> None:
        """As many inserts, the model ranked once after the last (each insert's rank replaces the one before)."""
        for key, size, _ in entries:
            self._add(key, check_size(size), model_id)
        if entries:
            self._rank(model_id)

    def _add(self, key: Key, size: int, model_id: str) -> None:
        """Hold ``key`` as ``model_id``'s newest entry (the model's rank is left to the caller)."""
        if key in self._entries:
            self.on_release(key)
        tick = next(self._tick)
        model = self._models.get(model_id)
        if model is None:
            model = self._models[model_id] = _Donor(tick)
        model.touched, model.nbytes = tick, model.nbytes + size
        self._entries[key], self._sizes[key] = model_id, size
        self._pool.add(model_id, key, tick)

    def on_hit(self, key: Key) -> None:
        if key in self._entries:
            self._touch(self._entries[key])

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

    def on_release(self, key: Key) -> None:
        model_id = self._entries.pop(key, None)
        if model_id is None:
            return
        size = self._sizes.pop(key)
        self._pool.discard(model_id, key)
        self._models[model_id].nbytes -= size
        if model_id not in self._pool:
            del self._models[model_id]
        elif self.size_aware:
            self._rank(model_id)

    def victim(self) -> Key:
        head = self._pool.head()
        if head is None:
            raise empty_error(self)
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
        priority = (value, model.touched)
        self._pool.rank(model_id, priority, model.ranked)
        model.ranked = priority
