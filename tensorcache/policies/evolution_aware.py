"""Evict the lowest expected future reuse per byte under regularized evolution (docs/policies.md)."""
from __future__ import annotations

import functools
import heapq
import itertools
import math
from collections import Counter
import operator
import statistics
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .base import Key, Policy, check_size, empty_error, layer_depth
from .columns import Columns
from .donor_window import DonorWindow


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


def _positions(values: Sequence[Any], what: str) -> tuple[int, ...]:
    """Distinct arch positions, sorted; a value that is not one is named in a ValueError."""
    try:
        positions = sorted(set(map(operator.index, values)))  # the common case in one pass, without a call each
        if not positions or positions[0] >= 0:
            return tuple(positions)
    except TypeError:
        pass
    return tuple(sorted({_position(v, what) for v in values}))  # raises, naming the bad value


@functools.lru_cache(maxsize=1 << 16)
def _best_of(n: int, below: int, tied: int, sample: int) -> float:
    """P(the best of ``sample`` uniform draws from ``n`` scores is one of ``tied`` equal ones, with ``below``
    scores under them), split evenly among the tied ones (cached: every population update asks for each rank)."""
    better = n - tied - below
    return (((n - better) / n) ** sample - ((n - better - tied) / n) ** sample) / tied


def _run_ranks(group: np.ndarray, depth: np.ndarray, value: Sequence[float] | np.ndarray,
               size: Sequence[float] | np.ndarray) -> np.ndarray:
    """Each layer's value per byte of itself and every deeper layer of its ``group`` (a small int >= 0, such as a
    model's row; layers of a prefix run: a group holds depths 0 to its deepest), each sum taken deepest first, as a
    loop would add them."""
    total = np.zeros((2, int(group.max()) + 1, int(depth.max()) + 1))
    total[0, group, depth], total[1, group, depth] = value, size
    deeper = np.cumsum(total[:, :, ::-1], axis=2)[:, :, ::-1]  # zeros past a run's end, or in a row no group uses,
    # change no sum
    return deeper[0, group, depth] / deeper[1, group, depth]


_LOW7, _HIGH = np.uint64(0x7F7F7F7F7F7F7F7F), np.uint64(0x8080808080808080)
_PLACES = np.uint64(sum((8 - k) << (8 * k) for k in range(8)))  # byte k weighs 8 - k: the top byte of a product
# with a word of one set byte (0x01) is that byte's place + 1
_SHIFT, _SEVEN, _ONE = np.uint64(56), np.uint64(7), np.uint64(1)


def _words(rows: np.ndarray, width: int) -> np.ndarray:
    """Each row of ``width`` <= 8 values in [-1, 254] as one 64-bit word, a byte per position (-1 and the
    positions past ``width`` as 255)."""
    packed = np.full((len(rows), 8), 255, np.uint8)
    packed[:, :width] = rows
    return packed.view(np.uint64)[:, 0]


def _packed(arch: np.ndarray, pick: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The parents' side of ``_chances`` by words, made once per set of parents: each row of ``arch`` as a
    word, and place + 1 -> ``pick`` (0: none); None where the arch is wider than 8 positions or holds a value
    of 255 or more."""
    width = arch.shape[1]
    if width > 8 or int(arch.max(initial=0)) >= 255:
        return None
    at = np.zeros(9)
    at[1:width + 1] = pick
    return _words(arch, width), at


def _chances(arch: np.ndarray, packed: tuple[np.ndarray, np.ndarray] | None, want: np.ndarray, mask: np.ndarray,
             pick: np.ndarray, stay: np.ndarray) -> np.ndarray:
    """For each parent (row of ``arch``, ``packed`` its words: ``_packed``) and pattern (row of ``want``, ``mask``
    where it depends): P(one mutation of the parent recreates the pattern): ``stay`` of the pattern where they
    agree, ``pick`` at the one position where they differ at one, else 0. Up to 8 positions of values below 255
    go a word per row (a byte per position), in place, and only the pairs that differ at one position at most
    are read one by one (far fewer array passes than one per position); one pattern goes over the parents' rows
    alone (the fewest numpy calls: a put's end often values one), more positions or larger values position by
    position."""
    width = arch.shape[1]
    if packed is not None and len(want) > 1 and int(want.max(initial=0)) < 255:
        words, at = packed
        care = np.zeros((len(want), 8), np.uint8)
        care[:, :width] = mask * np.uint8(255)
        apart = words[:, None] ^ _words(want, width)[None, :]
        apart &= care.view(np.uint64)[:, 0][None, :]
        high = apart & _LOW7  # then the high bit of each byte that differs, alone
        high += _LOW7
        high |= apart
        high &= _HIGH
        np.subtract(high, _ONE, out=apart)  # reused: zero where one byte differs at most
        apart &= high
        close = np.flatnonzero(apart.ravel() == 0)
        differ = high.ravel()[close]
        chance = np.zeros(high.shape)
        flat, agree = chance.ravel(), differ == 0
        flat[close[agree]] = stay[close[agree] % len(want)]
        flat[close[~agree]] = at[((differ[~agree] >> _SEVEN) * _PLACES) >> _SHIFT]
        return chance
    if len(want) == 1:  # in place, on the parents' rows alone
        differ = arch != want[0]
        differ &= mask[0]
        count, chance = differ @ np.ones(width, np.int32), differ @ pick  # exact where one position differs
        chance[count > 1] = 0.0
        chance[count == 0] = stay[0]
        return chance.reshape(len(arch), 1)
    differ = (arch[:, None, :] != want[None, :, :]) & mask[None, :, :]  # parents x patterns x positions
    count, single = differ @ np.ones(width, np.int32), differ @ pick  # a product counts faster than a boolean sum
    return np.where(count == 0, stay[None, :], np.where(count == 1, single, 0.0))


def _wanted(deps: Sequence[int], values: Sequence[int], width: int) -> list[int]:
    """A pattern as the arch value it wants at each of ``width`` positions: ``values`` at ``deps``, -1 (any)
    elsewhere."""
    row = [-1] * width
    for j, v in zip(deps, values):
        row[j] = v
    return row


def _ties(fields: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
    """Integer sort keys (last first, as lexsort takes them) as one key of the same order where their ranges
    multiply within int64 (each key taken from its least value: lexsort's cost grows with the keys), else as given."""
    if not len(fields[0]):
        return tuple(fields)
    lows = [int(values.min()) for values in fields]
    spans = [int(values.max()) - low + 1 for values, low in zip(fields, lows)]
    if math.prod(spans) >= 1 << 62:
        return tuple(fields)
    key, scale = np.zeros(len(fields[0]), np.int64), 1
    for values, low, span in zip(fields, lows, spans):
        key += (values - low) * scale
        scale *= span
    return (key,)


class _Sorted:
    """The priorities of entries in sorted order, by place: columns of numbers put in ``order`` and turned into
    tuples a chunk at a time, from the front (a rebuild's heap asks only for the entries that surface before the
    next rebuild)."""

    def __init__(self, fields: Sequence[np.ndarray], order: np.ndarray) -> None:
        self._fields, self._order = fields, order
        self._done: list[tuple] = []

    def at(self, place: int) -> tuple:
        """The priority at ``place`` of the order (a bound method: cheaper to call than the object)."""
        done = self._done
        if place >= len(done):
            chunk = self._order[len(done):max(place + 1, 2 * len(done), 64)]
            done.extend(zip(*(field[chunk].tolist() for field in self._fields)))
        return done[place]


class _RowHeap:
    """Min-heap of entry rows whose priorities change, each priority a tuple ending with its row (so no two rows
    share one). A row's live item is the priority tuple itself, kept by row in a list, so an item needs no token
    and no wrapper: a new priority pushes a new tuple and the old one is skipped when it surfaces (it is no longer
    its row's item). Starts from rows already in priority order (a rebuild's), read one place at a time, so a start
    costs no item per row; a priority set above the last one set waits until the row surfaces (``rise``)."""

    def __init__(self, ranked: Callable[[int], tuple] | None = None, count: int = 0, rows: int = 0) -> None:
        """``ranked(i)``: the priority of the i-th of ``count`` distinct rows below ``rows``, in priority order."""
        self._heap: list[tuple] = []
        self._ranked, self._end, self._next = ranked, count, 0
        self._front = ranked(0) if count else None  # the priority at place ``_next`` (None: past the last)
        self._item: list[tuple | None] = [None] * rows  # row -> its live item; None: its place in the start's order,
        # if it has one; (): none (discarded)
        self._in_heap = 0  # rows whose item is in the heap
        self._risen: dict[int, tuple] = {}  # row -> its priority, where that is above its item's

    def push(self, row: int, priority: tuple) -> None:
        """Set ``row``'s priority (``priority[-1] == row``) now."""
        item = self._item
        if row >= len(item):
            item.extend([None] * (row + 1 - len(item)))
        if not item[row]:
            self._in_heap += 1
        item[row] = priority
        if self._risen:
            self._risen.pop(row, None)
        heap = self._heap
        heapq.heappush(heap, priority)
        if len(heap) > 2 * self._in_heap + 64:
            self._heap = [got for got in heap if item[got[-1]] is got]
            heapq.heapify(self._heap)

    def rise(self, priorities: Iterable[tuple]) -> None:
        """Set each of ``priorities`` (of distinct rows): pushed when below the last one set for its row (or none
        was set since the start, or the row was discarded), since the order needs it now; else it moves when the
        row's item surfaces."""
        item, risen = self._item, self._risen
        for priority in priorities:
            row = priority[-1]
            floor = (risen.get(row) if risen else None) or (item[row] if row < len(item) else None)
            if not floor or priority < floor:
                self.push(row, priority)
            else:
                risen[row] = priority

    def discard(self, row: int) -> None:
        """``row`` leaves the heap."""
        item = self._item
        if row < len(item):
            if item[row]:
                self._in_heap -= 1
            item[row] = ()
        if self._risen:
            self._risen.pop(row, None)

    def peek(self) -> tuple | None:
        """The least live priority, or None."""
        heap, item, risen = self._heap, self._item, self._risen
        top = self._front
        while True:
            if top is not None and item[top[-1]] is not None:  # pushed again or discarded since the start
                first = self._next
                while top is not None and item[top[-1]] is not None:
                    first += 1
                    top = self._ranked(first) if first < self._end else None  # type: ignore[misc]  # given with it
                self._next, self._front = first, top
            if top is not None and risen and top[-1] in risen:  # its item moves into the heap
                self.push(top[-1], risen[top[-1]])
                heap = self._heap  # a push may compact it into a new list
                continue
            while heap:
                got = heap[0]
                row = got[-1]
                if item[row] is not got:
                    heapq.heappop(heap)
                elif risen and row in risen:
                    item[row] = risen.pop(row)
                    heapq.heapreplace(heap, item[row])
                else:
                    break
            if top is not None:
                return heap[0] if heap and heap[0] < top else top
            return heap[0] if heap else None


_NONE = object()  # no deps tuple seen yet

Content = tuple  # what an entry holds: (depth, deps, arch values at deps), or ("own", key) for undescribed models


@dataclass(slots=True)
class _Entry:
    model_id: str
    depth: int
    deps: tuple[int, ...]
    size: float  # >= 1, so per-byte values stay finite
    seq: int
    nbytes: int  # the size given
    model: _Model  # the model it is a layer of
    content: Content = ()  # set when filed under its holders
    content_row: int = -1  # its content's row of ``EvolutionAware._contents``
    row: int = -1  # its row of ``EvolutionAware._entry_rows``


@dataclass(slots=True)
class _Model:
    """A model holding entries: its arch and mode once described, its layers, and when it arrived."""

    born: int  # population updates seen when its first entry arrived
    arch: tuple[int, ...] | None = None
    prefix: bool = False  # prefix mode: a layer is only served after all the layers before it
    layers: int = 0  # how many layers it has (0: unknown)
    lost: bool = False  # one of its layers left the tier
    keys: dict[int, Key] = field(default_factory=dict)  # depth -> key
    row: int = -1  # its row of ``EvolutionAware._model_rows``
    held_run: int = 0  # length of the unbroken run of held layers from depth 0 (``add`` and ``remove`` keep it)

    def add(self, depth: int, key: Key) -> None:
        """Hold ``key`` as its layer at ``depth``."""
        keys = self.keys
        keys[depth] = key
        if depth == self.held_run:
            run = depth + 1
            while run in keys:
                run += 1
            self.held_run = run

    def remove(self, depth: int) -> None:
        """Its layer at ``depth`` left the tier."""
        del self.keys[depth]
        self.lost = True
        self.held_run = min(self.held_run, depth)

    def run(self) -> int:
        """Length of the unbroken run of held layers from depth 0."""
        return self.held_run

    def deepest(self) -> int:
        """Its deepest held layer (-1: none): the run's last when the run holds them all (no max to take)."""
        keys = self.keys
        return len(keys) - 1 if self.held_run == len(keys) else max(keys)

    def arriving(self) -> bool:
        """Its layers are still being inserted (a put in progress): it keeps them until the put ends."""
        return not self.lost and len(self.keys) < self.layers

    def reach(self) -> int:
        """The run it can serve: a model still arriving layer by layer counts with all its layers."""
        run = self.run()
        return max(run, self.layers) if not self.lost and run == len(self.keys) else run


class EvolutionAware(Policy):
    """Evicts the entry with the lowest expected future reuse per byte, given the evolution's state.

    A future child is a one-position mutation of a population member p, chosen with P(p wins a tournament)
    over p's remaining lifetime (``on_population``), at position j with the observed mutation
    frequency (``on_mutation``, Laplace-smoothed) to one of the other values seen at j. An entry whose
    layer depends on positions D is reused when that child agrees with it on D: p agrees and j is not in D,
    or p differs from it on D at exactly j and the mutation picks its value. Models described with
    ``on_model`` get this over the whole population (so an evaluated architecture a member can mutate
    back into keeps its value); undescribed ones only through themselves as a parent. Worthless first:
    spare copies (a prefix run whose last layer another model holds with a run as long; in compatible
    mode the layers of a model whose arch another model holds more of) and, in prefix mode, layers after
    a gap. Stale news: a model not yet listed counts as a member that joined at its insert, with its own
    score if ``on_model`` gave one, else the median. Ties: fewer hits on the content, least recently
    used model, deepest layer. No population: DonorWindow(window).
    """

    name = "evolution-aware"
    options = ("window", "refresh", "churn")

    def __init__(self, window: int = 100, refresh: int | None = None, churn: float = 0.125) -> None:
        if refresh is not None and (isinstance(refresh, bool) or not isinstance(refresh, int) or refresh < 1):
            raise ValueError(f"refresh must be an int >= 1 population updates, got {refresh!r}")
        if not 0 <= churn <= 1:
            raise ValueError(f"churn must be a fraction in [0, 1], got {churn!r}")
        self.refresh = refresh  # re-rank every this many population updates (None: P // 10) ...
        self.churn = churn  # ... and once inserts and removals since the last rebuild reach this share of entries
        self._changes = 0  # inserts and removals since the last rebuild
        self._pending = False  # the population moved enough for a rebuild, which waits for enough changes
        self._fallback = DonorWindow(window)  # decides while no population is given; it always hears donations and
        # evaluations (the one donation window), and the entries' events only while it decides
        self._fallback_current = True  # else it holds no entries, and is given them again if it has to decide
        self._tick = itertools.count()
        self._deps: tuple[Any, tuple[int, ...]] = (_NONE, ())  # the last deps tuple inserted, and its positions
        self._spelled: tuple[Any, ...] = (None, None, ())  # the last (arch, deps) filed, and the arch's values at deps
        self._entries: dict[Key, _Entry] = {}
        self._models: dict[str, _Model] = {}
        self._holders: dict[int, set[Key]] = {}  # held content's row -> the keys holding it
        self._contents = Columns(hits="q", pattern="q", value="d")  # held contents: hits on each, its pattern's
        # row of ``_patterns`` (-1: an undescribed model's own), its value as of the last rebuild (NaN: not yet)
        self._hits, self._valued = self._contents.array("hits"), self._contents.array("value")
        self._pattern_of = self._contents.array("pattern")
        self._patterns = Columns(uses="q", width="q")  # (deps, arch values at deps) of held contents: contents
        # held, positions it covers; contents that differ only in layer share one, valued once
        self._uses = self._patterns.array("uses")
        self._want = np.full((0, 0), -1, np.int64)  # pattern row -> its arch value at each position (-1: any)
        self._model_rows = Columns(touch="q")  # a row for each model holding entries: the tick of its last insert,
        # donation or hit
        self._touches = self._model_rows.array("touch")
        self._entry_rows = Columns(seq="q", depth="q", size="d", model="q", content="q", rank="d")  # rank: value
        # per byte (-1: worthless, NaN: not ranked since the last rebuild); the heap and priorities go by row
        self._entry_content, self._ranks = self._entry_rows.array("content"), self._entry_rows.array("rank")
        # evolution state
        self._members: set[str] = set()  # the population of the last update
        self._population: tuple[list[str], list[float]] = ([], [])  # its ids and scores, oldest first
        self._weights: dict[str, float] | None = {}  # member -> P(donor at one step) x remaining lifetime (None:
        # not yet computed for the last update, see ``_member_weights``)
        self._listed: set[str] = set()  # every model ever listed as a member
        self._unlisted: set[str] = set()  # described or dropped from the population since the last update
        self._archs: dict[str, tuple[int, ...]] = {}  # described models that are members or hold entries
        self._modes: dict[str, tuple[bool, int]] = {}  # described model -> (prefix mode, layer count)
        self._updates = 0
        self._ranked_at = 0  # population updates seen at the last rebuild
        self._population_size = self._sample_size = 0
        self._ascending: list[float] = []  # member scores of the last update
        self._newcomer_p = 0.0
        self._scores: dict[str, float] = {}  # described models not yet listed -> their score
        self._inflight: dict[str, int] = {}  # described before any entry (a child in flight) -> updates then
        self._hist: list[int] = []
        self._mutations = 0
        self._values_seen: list[set[int]] = []  # per position, the values seen in described archs
        # ranking: rebuilt when the state moves, kept up to date entry by entry in between
        self._stale = True
        self._value: dict[Content, float] = {}  # valued since the last rebuild but not held now (expected reuses)
        self._state: tuple[Any, ...] | None = None  # parents and mutation odds of the last rebuild (``_parents``)
        self._heap = _RowHeap()  # of entry rows
        self._held: set[str] = set()  # models still arriving whose entries are out of the heap (``_touch``)

    # --------------------------------------------------------------- evolution state
    def on_population(self, members: Sequence[tuple[str, float]], population_size: int,
                          sample_size: int) -> None:
        """The population as (model_id, score), oldest first (the first dies next), P and S."""
        if population_size < 1 or sample_size < 1:
            raise ValueError(f"need population_size >= 1 and sample_size >= 1, got {population_size}, {sample_size}")
        if len(members) > population_size:
            raise ValueError(f"{len(members)} members exceed population_size {population_size}")
        ids = [str(m) for m, _ in members]
        scores = [s if type(s) is float and s == s else _score(s) for _, s in members]  # most are plain floats
        self._updates += 1
        self._population_size, self._sample_size = population_size, sample_size
        self._ascending = sorted(scores)
        self._population, self._weights, dropped, self._members = (ids, scores), None, self._members, set(ids)
        self._unlisted.update(dropped - self._members)
        self._listed |= self._members
        if self._members:
            if self._fallback_current:
                self._fallback.hold_instead((), {}, 0)
            self._fallback_current = False  # the population decides now
        for m in self._scores.keys() & self._members:
            del self._scores[m]
        inflight = self._inflight
        if inflight:
            gone = inflight.keys() & self._members  # listed at last
            if min(inflight.values()) <= self._updates - population_size:  # or its news is too old to trust
                gone.update(m for m, born in inflight.items() if self._updates - born >= population_size)
            for m in gone:
                del inflight[m]
            self._unlisted |= gone
        for m in self._unlisted:  # only these can have become dead models that hold nothing
            if m in self._archs and m not in self._members and m not in self._models and m not in self._inflight:
                del self._archs[m]  # no parent and no entry
                self._modes.pop(m, None)
                self._scores.pop(m, None)
        self._unlisted.clear()
        if not self._entries:  # nothing ranked (a stale ranking is rebuilt anyway)
            self._stale = True
        elif self._updates - self._ranked_at >= (self.refresh or max(1, population_size // 10)):
            self._pending = True  # rebuilt once enough entries changed too (``_rebuild_if_due``)

    def _member_weights(self) -> dict[str, float]:
        """Each member's P(donor at one step) x remaining lifetime, worked out when first asked after an update
        (the ranking asks at a rebuild, every few updates; most updates only change who the members are)."""
        if self._weights is None:
            (ids, scores), size = self._population, self._population_size
            odds = self._donor_odds()
            lives = range(size - len(ids) + 1, size + 1)  # evaluations each has left
            self._weights = dict(zip(ids, map(operator.mul, map(odds.__getitem__, scores), lives)))
            self._newcomer_p = self._p_donor(statistics.median_low(self._ascending)) if ids else 0.0
        return self._weights

    def _p_donor(self, score: float, joining: int = 0) -> float:
        """P(the best of S uniform draws from the members, plus ``joining`` newcomers with this score, scores
        ``score``), split evenly among the tied ones."""
        ascending = self._ascending
        lo, hi = bisect_left(ascending, score), bisect_right(ascending, score)
        return _best_of(len(ascending) + joining, lo, hi - lo + joining, self._sample_size)

    def _donor_odds(self) -> dict[float, float]:
        """``_p_donor`` of every member score, in one pass over the sorted scores (a bisection each costs
        more: the population changes at every evaluation)."""
        n, sample, odds, lo = len(self._ascending), self._sample_size, {}, 0
        for score, tied in Counter(self._ascending).items():  # in ascending order, as counted
            odds[score] = _best_of(n, lo, tied, sample)
            lo += tied
        return odds

    def on_mutation(self, position: int) -> None:
        """A child's mutation landed on arch ``position``."""
        position = _position(position, "mutation position")
        if position >= len(self._hist):
            self._hist.extend([0] * (position + 1 - len(self._hist)))
        self._hist[position] += 1
        self._mutations += 1

    def on_model(self, model_id: str, arch: Sequence[int], mode: str = "prefix", layers: int = 0,
                      score: float | None = None) -> None:
        """``model_id`` has architecture ``arch``, ``layers`` layers (0: unknown) and ``score`` (None: not
        known), served in ``mode`` ("prefix" or "compatible"); call it before inserting its layers."""
        model_id = str(model_id)
        if score is not None and model_id not in self._listed:
            self._scores[model_id] = _score(score)
        if model_id not in self._models and model_id not in self._listed and model_id not in self._archs:
            self._inflight[model_id] = self._updates  # described before its layers: a child in flight
        arch = tuple(_position(a, "arch value") for a in arch)
        self._archs[model_id] = arch
        self._unlisted.add(model_id)
        self._modes[model_id] = (mode == "prefix", int(layers))
        for j, a in enumerate(arch):
            if j == len(self._values_seen):
                self._values_seen.append(set())
            self._values_seen[j].add(a)
        model = self._models.get(model_id)
        if model is not None:
            for key in list(model.keys.values()):  # re-file its entries under the content they now name
                self._unfile(key, self._entries[key])
            self._describe(model_id, model)
            for key in list(model.keys.values()):
                entry = self._entries[key]
                self._entry_content[entry.row] = self._file(key, entry, model)
                if not self._stale:
                    self._rank_filed(key, entry, model, entry.row, push=True)

    def _describe(self, model_id: str, model: _Model) -> None:
        model.arch = self._archs.get(model_id)
        model.prefix, model.layers = self._modes.get(model_id, (False, 0))

    @property
    def has_population(self) -> bool:
        """True once a non-empty population drives the ranking (else donor-window decides)."""
        return bool(self._members)

    def rerank_and_reuse(self, key: Key) -> float:
        """Re-rank every entry if the evolution moved enough since the last ranking (the rebuild ``victim`` would
        do), then the expected future reuses of a held entry (0 for keys not held)."""
        if key not in self._entries:
            return 0.0
        if self._stale or self._pending:
            self._rebuild()
        return 0.0 if self._ranks[self._entries[key].row] < 0 else self._entry_value(key)

    # --------------------------------------------------------------- Policy
    def on_insert(self, key: Key, size: int, model_id: str, deps: tuple[int, ...] = ()) -> None:
        size = size if type(size) is int and size >= 0 else check_size(size)  # most sizes are plain ints
        if deps is self._deps[0]:  # the layers of a model often share one deps tuple: checked once
            deps = self._deps[1]
        else:
            given, deps = deps, _positions(deps, "deps")
            self._deps = (given, deps) if type(given) is tuple else (_NONE, ())
        entries = self._entries
        if key in entries:
            self.on_release(key)
        self._changes += 1
        if self._fallback_current:
            self._fallback.on_insert(key, size, model_id, deps)
        model = self._models.get(model_id)
        tick = next(self._tick)
        if model is None:
            model = self._models[model_id] = _Model(self._updates)
            model.row = self._model_rows.add(model_id, tick)
            self._describe(model_id, model)
        depth = key[1] if type(key) is tuple and len(key) == 2 and type(key[1]) is int else layer_depth(key)
        weight = float(size) if size > 1 else 1.0
        entry = entries[key] = _Entry(model_id, depth, deps, weight, tick, size, model)
        model.add(depth, key)
        content = self._file(key, entry, model)
        if not model.lost and len(model.keys) < model.layers:  # ``arriving``, without a call per insert: keeps all
            entry.row = self._entry_rows.add(key, tick, depth, weight, model.row, content,
                                             math.nan if self._stale else math.inf)
            if model_id in self._held:  # its put goes on: its entries stay out of the heap (``_touch``)
                self._touches[model.row] = next(self._tick)
                return
        else:
            row = entry.row = self._entry_rows.add(key, tick, depth, weight, model.row, content, math.nan)
            if not self._stale:
                self._rank_filed(key, entry, model, row)
        self._touch(model_id, model)  # sets the priorities of its entries

    def on_hit(self, key: Key) -> None:
        if self._fallback_current:
            self._fallback.on_hit(key)
        entry = self._entries.get(key)
        if entry is not None:  # other copies of the content see the hit at the next rebuild
            self._hits[entry.content_row] += 1
            self._touches[entry.model.row] = next(self._tick)
            if not self._stale:
                self._push(entry)

    def on_donation(self, model_id: str) -> None:
        self._fallback.on_donation(model_id)
        model = self._models.get(model_id)
        if model is not None:
            self._touch(model_id, model)

    def on_evaluation(self) -> None:
        self._fallback.on_evaluation()

    def on_release(self, key: Key) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        self._changes += 1
        if self._fallback_current:
            self._fallback.on_release(key)
        model = entry.model
        ranked = self._ranks[entry.row] >= 0  # False if not ranked (NaN)
        self._unfile(key, entry)
        self._entry_rows.drop(key)
        model.remove(entry.depth)
        if entry.model_id in self._held:  # no longer arriving: its entries go back into the heap
            self._held.discard(entry.model_id)
            if not self._stale:
                self._push_model(model)
        if ranked and not self._stale:  # re-rank what its loss changes, until the next rebuild
            ranks, entries = self._ranks, self._entries
            for other in self._holders.get(entry.content_row, ()):  # a spare copy of the same content is needed again
                held = entries[other]
                if ranks[held.row] < 0:
                    ranks[held.row] = self._entry_value(other) / held.size
                    self._push(held)
            if model.prefix and model.deepest() > entry.depth:  # the layers after it can no longer be
                for depth, other in model.keys.items():  # served (the deepest usually goes first: none)
                    if depth > entry.depth:
                        deeper = entries[other]
                        ranks[deeper.row] = -1.0
                        self._push(deeper)
        if not model.keys:
            del self._models[entry.model_id]
            self._model_rows.drop(entry.model_id)
            if entry.model_id not in self._members:
                self._archs.pop(entry.model_id, None)
                self._modes.pop(entry.model_id, None)
                self._scores.pop(entry.model_id, None)

    def victim(self) -> Key:
        if not self._entries:
            raise empty_error(self)
        if not self._members:  # no population: donor-window decides
            if not self._fallback_current:  # the population was withdrawn: the fallback catches up
                self._fallback.hold_instead(
                    ((key, e.model_id, e.nbytes, e.seq) for key, e in self._entries.items()),
                    {m: self._touches[model.row] for m, model in self._models.items()}, next(self._tick))
                self._fallback_current = True
            return self._fallback.victim()
        if self._pending and self._changes >= self.churn * len(self._entries):
            self._stale = True  # a rebuild is paid for by the inserts and removals since the last one
        if self._stale:
            self._rebuild()
        top = self._heap.peek()
        if self._held and (top is None or top[0] == math.inf):
            return self._arriving_victim(top)
        assert top is not None  # every entry has a live item, or its model is still arriving
        return self._entry_rows.key(top[-1])

    def _arriving_victim(self, top: tuple | None) -> Key:
        """The victim when nothing but models still arriving (out of the heap) and ``top``, the heap's least
        priority or None, can be evicted: the least of both."""
        entries = self._entries
        arriving = min(self._priority(entries[key]) for m in self._held for key in self._models[m].keys.values())
        return self._entry_rows.key((arriving if top is None else min(top, arriving))[-1])

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    # --------------------------------------------------------------- contents and values
    def _file(self, key: Key, entry: _Entry, model: _Model) -> int:
        """File the entry (of ``model``) under its content; returns the content's row."""
        arch, deps = model.arch, entry.deps
        if arch is None or (deps and deps[-1] >= len(arch)):
            content: Content = ("own", key)
        else:
            spelled = self._spelled
            if arch is not spelled[0] or deps is not spelled[1]:  # a model's layers often share one deps tuple
                spelled = self._spelled = (arch, deps, tuple(map(arch.__getitem__, deps)))
            content = (entry.depth, deps, spelled[2])
        contents = self._contents
        at = contents.row.get(content)
        if at is None:
            pattern = -1 if content[0] == "own" else self._pattern_row(content[1:])
            at = contents.add(content, 0, pattern, self._value.pop(content, math.nan))
            self._holders[at] = {key}
        else:
            content = contents.key(at)  # the one copy of it held (no new object kept per entry)
            self._holders[at].add(key)
        entry.content, entry.content_row = content, at
        return at

    def _rank_filed(self, key: Key, entry: _Entry, model: _Model, row: int, push: bool = False) -> None:
        """Rank a filed entry (of ``model``, at entry ``row``) until the next rebuild (``push``: set its priorities
        too)."""
        if not model.lost and len(model.keys) < model.layers:  # ``arriving``, without a call per insert
            self._ranks[row] = math.inf
            if push:
                self._push(entry)
        elif model.layers and not model.lost and len(model.keys) == model.layers:  # its put just ended
            self._rank_model(model)
            if push:
                for other in model.keys.values():
                    self._push(self._entries[other])
        else:  # a new layer is its model's deepest: its own value per byte
            self._ranks[row] = self._entry_value(key) / entry.size
            if push:
                self._push(entry)

    def _rank_model(self, model: _Model) -> None:
        """Rank the layers of a model whose put just ended (until the next rebuild), as ``_rank_columns`` does
        but without looking for other copies."""
        entries, rank, valued = self._entries, self._ranks, self._valued
        missing: dict[Content, int] = {}  # content not valued since the last rebuild -> its row, in order
        for key in model.keys.values():
            entry = entries[key]
            if math.isnan(valued[entry.content_row]):
                missing.setdefault(entry.content, entry.content_row)
        if len(missing) > 1:  # valued in one pass (a single one is valued below only if it is needed)
            for row, value in zip(missing.values(), self._values(list(missing)).tolist()):
                valued[row] = value
        if not model.prefix:
            for key in model.keys.values():
                entry = entries[key]
                rank[entry.row] = self._entry_value(key) / entry.size
            return
        run = model.run()
        value = size = 0.0
        for depth in range(run - 1, -1, -1):  # _run_ranks for one model, without building its columns
            key = model.keys[depth]
            entry = entries[key]
            got = valued[entry.content_row]
            value += self._content_value(entry.content) if math.isnan(got) else got
            size += entry.size
            rank[entry.row] = value / size
        if len(model.keys) > run:  # layers past a gap
            for depth, key in model.keys.items():
                if depth > run:
                    rank[entries[key].row] = -1.0

    def _unfile(self, key: Key, entry: _Entry) -> None:
        """Take ``key`` off its content's holders (the content goes with its last holder) and off the heap."""
        content, row = entry.content, entry.content_row
        holders = self._holders[row]
        holders.discard(key)
        if not holders:
            del self._holders[row]
            value, pattern = self._valued[row], self._pattern_of[row]
            if value == value:  # valued: kept until the next rebuild, as if still held
                self._value[content] = value
            if pattern >= 0:
                self._drop_pattern(pattern)
            self._contents.drop(content)
        self._heap.discard(entry.row)

    def _touch(self, model_id: str, model: _Model) -> None:
        """Mark a model used now and re-rank its entries. A model still arriving keeps them all (rank inf),
        so its entries leave the heap, to be ranked by ``victim`` only when nothing else is left (a put
        inserts its layers with no lookup in between: their hits and recency are then as of this call)."""
        self._touches[model.row] = next(self._tick)
        if self._stale:
            return
        if not model.lost and len(model.keys) < model.layers:  # ``arriving``, without a call per insert
            if model_id not in self._held:
                self._held.add(model_id)
                entries = self._entries
                for key in model.keys.values():
                    row = entries[key].row
                    self._heap.discard(row)
            return
        self._held.discard(model_id)
        self._push_model(model)

    def _entry_value(self, key: Key) -> float:
        """Expected reuses of one entry. Compatible mode serves a child every matching layer of the one
        donor with the most: a model is that donor for its own children (weight x P(the mutation spares
        the layer)) and for a child that repeats its arch, so its layers share its arch's value."""
        entry = self._entries[key]
        model = entry.model
        if model.prefix or entry.content[0] == "own":
            return self._content_value(entry.content)
        repeat = self._content_value((-1, tuple(range(len(model.arch))), model.arch))
        assert self._state is not None  # computed by _content_value, covering the arch's positions
        return repeat + self._weight(entry.model_id) * (1.0 - self._state[2][list(entry.deps)].sum())

    def _pattern_row(self, pattern: tuple[tuple[int, ...], tuple[int, ...]]) -> int:
        """The row of a held content's pattern, added on its first use (one more content uses it)."""
        row = self._patterns.row.get(pattern)
        if row is not None:
            self._uses[row] += 1
            return row
        deps, values = pattern
        width = deps[-1] + 1 if deps else 0
        row = self._patterns.add(pattern, 1, width)
        rows, columns = self._want.shape
        if row >= rows or width > columns:
            grown = np.full((max(rows, 2 * row + 16), max(columns, width)), -1, np.int64)
            grown[:rows, :columns] = self._want
            self._want = grown
        self._want[row] = _wanted(deps, values, self._want.shape[1])
        return row

    def _drop_pattern(self, row: int) -> None:
        """One content fewer uses the pattern of ``row``; the pattern goes with its last."""
        self._uses[row] -= 1
        if not self._uses[row]:
            self._patterns.drop(self._patterns.key(row))

    def _known_value(self, content: Content) -> float:
        """The content's value if valued since the last rebuild, else NaN."""
        row = self._contents.row.get(content)
        if row is None:
            return self._value.get(content, math.nan)
        return self._valued[row]

    def _keep_value(self, content: Content, value: float) -> None:
        row = self._contents.row.get(content)
        if row is None:
            self._value[content] = value
        else:
            self._valued[row] = value

    def _content_value(self, content: Content) -> float:
        value = self._known_value(content)
        if value != value:
            value = float(self._values([content])[0])
            self._keep_value(content, value)
        return value

    def _push(self, entry: _Entry) -> None:
        """Set the entry's priority (a rise waits in the heap until the entry surfaces)."""
        if entry.model_id in self._held:
            return
        self._heap.rise((self._priority(entry),))

    def _push_model(self, model: _Model) -> None:
        """``_push`` every entry of a model that is not held, in one call to the heap."""
        self._heap.rise(map(self._priority, map(self._entries.__getitem__, model.keys.values())))

    def _priority(self, entry: _Entry) -> tuple[float, int, int, int, int, int]:
        """The entry's place in the eviction order, least first: its rank, hits on its content, its model's last
        use, then the deepest layer and the latest insert (the order a rebuild sorts by, ``_rebuild``), and its row
        (no two entries share a priority: the heap finds an entry by it)."""
        row = entry.row
        return (self._ranks[row], self._hits[entry.content_row], self._touches[entry.model.row], -entry.depth,
                -entry.seq, row)

    def _weight(self, model_id: str) -> float:
        """P(donor at one step) x remaining lifetime; an unlisted young model counts as a median newcomer."""
        weight = self._member_weights().get(model_id)
        return weight if weight is not None else 0.0 if model_id in self._listed else self._newcomer_weight(model_id)

    def _newcomer_weight(self, model_id: str) -> float:
        """``_weight`` of a model never listed as a member: a young one counts as a median newcomer."""
        model = self._models.get(model_id)
        born = model.born if model is not None else self._inflight.get(model_id)
        if born is None or not self._ascending:
            return 0.0
        score = self._scores.get(model_id)
        p = self._newcomer_p if score is None else self._p_donor(score, joining=1)
        return p * max(0, self._population_size - (self._updates - born))

    def _mutation_odds(self, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Per position: P(the mutation lands there), and P(it then picks one given other value)."""
        width = max(width, len(self._hist))
        hist = np.zeros(width)
        hist[: len(self._hist)] = self._hist
        where = (hist + 1) / (self._mutations + width)
        choices = np.array([len(self._values_seen[j]) if j < len(self._values_seen) else 2
                            for j in range(width)], dtype=np.float64)
        return where, where / np.maximum(choices - 1, 1)

    def _parents(self, width: int) -> tuple[Any, ...]:
        """(arch matrix, weight) of the described parents with weight > 0, the mutation odds, and the arch matrix
        packed for ``_chances``."""
        width = max(width, len(self._hist), max(map(len, self._archs.values()), default=0))
        merged: dict[tuple[int, ...], float] = {}  # parents of one arch breed alike: one row, summed weight
        members, listed = self._member_weights(), self._listed
        for m, a in self._archs.items():
            w = members.get(m)
            if w is None:
                if m in listed:  # listed once, no longer a member: no weight (``_weight``)
                    continue
                w = self._newcomer_weight(m)
            if w > 0:
                merged[a] = merged.get(a, 0.0) + w
        rows = list(merged) if set(map(len, merged)) <= {width} else [a + (-1,) * (width - len(a)) for a in merged]
        arch = np.array(rows, np.int64).reshape(len(merged), width)
        where, pick = self._mutation_odds(width)
        return arch, np.array(list(merged.values())), where, pick, _packed(arch, pick)

    def _values(self, contents: Sequence[Content]) -> np.ndarray:
        """Expected reuses of each content: sum over parents of weight x P(one mutation recreates it)."""
        patterns: dict[tuple, int] = {}  # (deps, values) -> its row: contents that differ only in layer share one
        rows: list[int] = []  # of each described content, in order
        described: list[int] = []
        owned: list[tuple[int, _Entry]] = []  # undescribed contents: valued through their own model only
        for i, c in enumerate(contents):
            if c[0] == "own":
                owned.append((i, self._entries[c[1]]))
            else:
                described.append(i)
                rows.append(patterns.setdefault(c[1:], len(patterns)))
        out = self._owned_values(len(contents), owned, max([1] + [deps[-1] + 1 for deps, _ in patterns if deps]))
        if patterns and len(self._state[1]):
            held = list(map(self._patterns.row.get, patterns))  # the table of patterns in use has their rows
            if None in held:
                width = self._state[0].shape[1]
                want = np.array([_wanted(deps, values, width) for deps, values in patterns], np.int64)
            else:
                want = self._want[held]
            out[described] = self._pattern_values(want)[rows]
        return out

    def _held_values(self, content_rows: np.ndarray) -> np.ndarray:
        """``_values`` of the held contents of ``content_rows``, in that order, from the patterns kept in columns
        (the same patterns in the same order, so the same floats)."""
        pattern = self._contents.column("pattern", content_rows)
        described = pattern >= 0
        used = pattern[described]
        owned = [(int(i), self._entries[self._contents.keys(content_rows[i:i + 1])[0][1]])
                 for i in np.flatnonzero(~described)]
        need = int(self._patterns.column("width", used).max(initial=1))
        out = self._owned_values(len(content_rows), owned, need)
        if len(used) and len(self._state[1]):
            patterns, first, inverse = np.unique(used, return_index=True, return_inverse=True)
            order = np.argsort(first)  # in the order of first use, as ``_values`` numbers them
            place = np.empty_like(order)
            place[order] = np.arange(len(order))
            out[described] = self._pattern_values(self._want[patterns[order]])[place[inverse]]
        return out

    def _owned_values(self, n: int, owned: Sequence[tuple[int, _Entry]], need: int) -> np.ndarray:
        """Values of ``n`` contents: those of undescribed models (index, entry) through their own model, 0 for the
        rest; first makes sure the parents' state covers ``need`` positions and the owned entries' deps."""
        need = max([need] + [entry.deps[-1] + 1 for _, entry in owned if entry.deps])
        if self._state is None or self._state[2].shape[0] < need:
            self._state = self._parents(need)
        where = self._state[2]
        out = np.zeros(n)
        for i, entry in owned:
            out[i] = self._weight(entry.model_id) * (1.0 - where[list(entry.deps)].sum())
        return out

    def _pattern_values(self, want: np.ndarray) -> np.ndarray:
        """Sum over parents of weight x P(one mutation recreates the pattern), for each row of ``want`` (an arch
        value per position, -1 where the pattern does not depend on it)."""
        arch, weight, where, pick, packed = self._state
        width = arch.shape[1]
        if want.shape[1] < width:
            want = np.pad(want, ((0, 0), (0, width - want.shape[1])), constant_values=-1)
        want = want[:, :width]
        mask = want >= 0  # arch values are >= 0
        stay = 1.0 - mask @ where  # P(the mutation misses every position of the pattern)
        return weight @ _chances(arch, packed, want, mask, pick, stay)

    def _rebuild(self) -> None:
        """Value every held content and re-rank every entry (when the state is stale, not per call), in a few
        passes over the columns of the entries."""
        self._state, self._ranked_at, self._changes, self._pending = None, self._updates, 0, False
        content_rows = self._contents.rows()
        self._contents.put("value", content_rows, self._held_values(content_rows))
        self._value = {}
        value = self._contents.column("value")
        rows = self._entry_rows.rows()
        column = {name: self._entry_rows.column(name, rows) for name in ("seq", "depth", "size", "model", "content")}
        ranks, others = self._rank_columns(column, value)
        if others:
            entry_row = self._entry_rows.row
            ranks[np.searchsorted(rows, [entry_row[key] for key in others])] = list(others.values())
        fields = (-column["seq"], -column["depth"], self._model_rows.column("touch", column["model"]),
                  self._contents.column("hits", column["content"]), ranks)  # _priority's, last first, as lexsort takes them
        order = np.lexsort(_ties(fields[:4]) + fields[4:])
        self._entry_rows.put("rank", rows, ranks)
        self._heap = _RowHeap(_Sorted(fields[::-1] + (rows,), order).at, len(order), self._entry_rows.size)
        self._held.clear()
        self._stale = False

    def _rank_columns(self, column: dict[str, np.ndarray], value: np.ndarray) -> tuple[np.ndarray, dict[Key, float]]:
        """Every entry's rank, in the order of the columns; the entries of models of neither prefix mode nor still
        arriving are ranked one by one and returned apart (key -> rank). A model still arriving keeps everything
        (inf). Prefix mode: evicting a layer loses the layers after it too, so each layer of a model's unbroken
        run is worth the value per byte of itself and everything deeper (``_run_ranks``); layers past a gap are
        worthless, and so is the whole run when another model's copy of the run's last layer serves at least as
        much. Compatible mode: a model's layers are worthless when another model of its arch serves more."""
        arriving, counted, dominated = 1, 2, 3  # the models' kinds; 0: neither prefix mode nor arriving
        kind, run = [0] * self._model_rows.size, [0] * self._model_rows.size  # by model row
        serves: dict[str, tuple[int, int]] = {}  # filled as asked: model -> how much its copy serves, then recency
        kept: dict[int, Key] = {}  # filled as asked: content row -> the copy of it worth keeping
        twins: dict[tuple[int, ...], str] = {}  # compatible mode: arch -> the copy of that model worth keeping
        others: list[tuple[str, _Model]] = []
        entries, holders = self._entries, self._holders
        for m, model in self._models.items():
            row = model.row
            if not model.lost and len(model.keys) < model.layers:  # ``arriving``, without a call per model
                kind[row] = arriving
            elif model.prefix:
                got = run[row] = model.held_run
                kind[row] = counted
                if got:
                    last = model.keys[got - 1]
                    content = entries[last].content_row
                    if len(holders[content]) > 1 and self._kept_copy(content, kept, serves) != last:  # one holder:
                        kind[row] = dominated  # its own copy is kept (no call)
            else:
                others.append((m, model))
                if model.arch is not None:
                    twin = twins.get(model.arch)
                    if twin is None or self._serves(m, serves) > self._serves(twin, serves):
                        twins[model.arch] = m
        model_of, depth = column["model"], column["depth"]
        kinds, runs = np.array(kind, np.int8)[model_of], np.array(run, np.int64)[model_of]
        ranks = np.zeros(len(depth))
        ranks[kinds == arriving] = math.inf
        ranks[(kinds == dominated) | ((kinds == counted) & (depth > runs))] = -1.0
        summed = (kinds == counted) & (depth < runs)
        if summed.any():
            ranks[summed] = _run_ranks(model_of[summed], depth[summed], value[column["content"][summed]],
                                       column["size"][summed])
        ranked: dict[Key, float] = {}
        for m, model in others:
            twin = twins.get(model.arch) if model.arch is not None else None
            for depth_of, key in model.keys.items():
                spare = twin not in (None, m) and depth_of in self._models[twin].keys
                ranked[key] = -1.0 if spare else self._entry_value(key) / entries[key].size
        return ranks, ranked

    def _serves(self, model_id: str, known: dict[str, tuple[int, int]]) -> tuple[int, int]:
        """How much a model's copy can serve (its run in prefix mode, else its layers), then its recency."""
        got = known.get(model_id)
        if got is None:
            model = self._models[model_id]
            got = known[model_id] = (model.reach() if model.prefix else len(model.keys), self._touches[model.row])
        return got

    def _kept_copy(self, content: int, known: dict[int, Key], serves: dict[str, tuple[int, int]]) -> Key:
        """The one copy of a content (its row) worth keeping: the holder whose model serves most, then the newest
        (found once per rebuild, ``known``: the stem's content has a holder in every model)."""
        keys = self._holders[content]
        if len(keys) == 1:
            return next(iter(keys))
        kept = known.get(content)
        if kept is None:
            entries = self._entries
            kept = known[content] = max(keys, key=lambda k: (self._serves(entries[k].model_id, serves), entries[k].seq))
        return kept
