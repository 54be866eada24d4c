"""Tabular evaluator: NAS-Bench-201 accuracies and training times read from a CSV, no training.

Each evaluation still uses the cache exactly as a training worker would: look up a donor for the child
(with its parent), then put the child's layers. The tensors are synthetic, sized ``payload_scale`` x the
real layer sizes of the architecture (``space.layer_nbytes``), and the cache capacities are scaled by the
same factor, so eviction behaves as with real tensors while a 10^4-evaluation search stays cheap. Trace
records carry the REAL bytes (``layer_bytes``, ``bytes_served``), so replays see real sizes.

Durations come from the table's per-architecture 200-epoch training time, scaled by ``epochs / 200``.
The scores are always the table's 200-epoch values. Under the serial executor a discrete-event clock
(``executors.simulated``) runs the search in simulated time, calling ``start`` when a child starts (the
lookup) and ``finish`` when it ends (the put); under real workers (process, mpi)
each evaluation sleeps ``duration x time_scale`` seconds (default 0: no sleep) and ``train_s`` still
reports the simulated duration.
"""
from __future__ import annotations

import csv
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import xxhash

from tensorcache.evolution import Candidate
from tensorcache.tables import open_text
from tensorcache.trace import TraceRecord

from ..data import nb201_table
from ..spaces import SearchSpace, get_space
from . import Evaluator, Started

if TYPE_CHECKING:
    from tensorcache import Hit, LayerMap, TensorCache


@dataclass(frozen=True)
class Columns:
    """Which table columns hold one dataset's search score, reported test score and training time."""

    score: str
    test: str
    train_time: str
    num_classes: int
    input_shape: tuple[int, int, int]


DATASETS: dict[str, Columns] = {
    "cifar10": Columns("c10_valid_200ep_mean", "c10_test_200ep", "c10_train_time_200ep_s", 10, (3, 32, 32)),
    "cifar100": Columns("c100_valtest_200ep_mean", "c100_test_200ep", "c100_train_time_200ep_s", 100, (3, 32, 32)),
    "imagenet16-120": Columns("in16_valtest_200ep_mean", "in16_test_200ep", "in16_train_time_200ep_s", 120,
                              (3, 16, 16)),
}
TABLE_EPOCHS = 200
ARCH_COLUMN = "arch_str"


@dataclass(frozen=True)
class Row:
    score: float
    test: float
    train_time: float


def read_table(path: str | os.PathLike, space: SearchSpace, columns: Columns) -> dict[tuple[int, ...], Row]:
    """Architecture -> row of a NAS-Bench-201-style CSV (or .csv.gz); ValueError names a missing column or bad cell."""
    with open_text(path) as f:
        reader = csv.DictReader(f)
        missing = {ARCH_COLUMN, columns.score, columns.test, columns.train_time} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: table lacks column(s) {sorted(missing)}")
        table = {}
        for line, row in enumerate(reader, start=2):
            try:
                table[space.encode(row[ARCH_COLUMN])] = Row(
                    float(row[columns.score]), float(row[columns.test]), float(row[columns.train_time]))
            except ValueError as exc:
                raise ValueError(f"{path}:{line}: {exc}") from None
    if not table:
        raise ValueError(f"{path}: table has no rows")
    return table


class SyntheticPayloads:
    """Cheap, distinct stand-in tensors: slices of one random pool stamped with the model and layer."""

    def __init__(self, seed: int = 0, pool_bytes: int = 1 << 20) -> None:
        self._rng = np.random.default_rng(seed)
        self._pool = self._rng.integers(0, 256, pool_bytes, dtype=np.uint8)

    def layers(self, model_id: str, layer_bytes: list[int], scale: float) -> list[dict[str, np.ndarray]]:
        """One ``{"w": uint8 array}`` per layer of ``max(16, bytes x scale)`` bytes ({} for empty layers)."""
        out = []
        for index, nbytes in enumerate(layer_bytes):
            if nbytes <= 0:
                out.append({})
                continue
            n = max(16, round(nbytes * scale))
            if n > self._pool.size:
                self._pool = self._rng.integers(0, 256, n, dtype=np.uint8)
            stamp = xxhash.xxh3_128_digest(f"{model_id}/{index}".encode())
            offset = int.from_bytes(stamp[:4], "little") % (self._pool.size - n + 1)
            arr = self._pool[offset:offset + n].copy()
            arr[:16] = np.frombuffer(stamp, dtype=np.uint8)
            out.append({"w": arr})
        return out


@dataclass
class Lookup:
    """What a started tabular evaluation looked up; the put waits until the evaluation ends."""

    row: Row
    layer_map: LayerMap
    layer_bytes: list[int]
    hit: Hit | None
    cache_s: float


class TabularEvaluator(Evaluator):
    """Scores from a NAS-Bench-201 table; exercises the cache with synthetic tensors (see module doc)."""

    name = "tabular"

    def __init__(self, table: str | os.PathLike | None = None, space: str = "nb201", dataset: str = "cifar10",
                 epochs: int = TABLE_EPOCHS, payload_scale: float = 1 / 64, transfer: str = "prefix",
                 namespace: str = "nb201", time_scale: float = 0.0, seed: int = 0) -> None:
        if dataset not in DATASETS:
            raise ValueError(f"tabular: unknown dataset {dataset!r}; the table has {sorted(DATASETS)}")
        if epochs <= 0:
            raise ValueError(f"tabular: epochs must be positive, got {epochs}")
        if not 0 < payload_scale <= 1:
            raise ValueError(f"tabular: payload scale must be in (0, 1], got {payload_scale}")
        if time_scale < 0:
            raise ValueError(f"tabular: time scale must be >= 0, got {time_scale}")
        super().__init__(space, dataset, epochs, transfer, namespace, seed)
        self.table = os.fspath(nb201_table() if table is None else table)
        self.payload_scale = float(payload_scale)
        self.time_scale = float(time_scale)

    @property
    def columns(self) -> Columns:
        return DATASETS[self.dataset]

    def check(self) -> None:
        if not os.path.isfile(self.table):
            raise FileNotFoundError(f"tabular: table {self.table!r} not found (give a NAS-Bench-201 CSV with "
                                    f"--table, e.g. one with columns {ARCH_COLUMN}, {self.columns.score}, ...)")
        with open_text(self.table) as f:
            header = next(csv.reader(f), [])
            first = next(csv.DictReader(f, fieldnames=header), None)
        missing = {ARCH_COLUMN, self.columns.score, self.columns.test, self.columns.train_time} - set(header)
        if missing:
            raise ValueError(f"tabular: table {self.table!r} lacks column(s) {sorted(missing)}")
        if first is not None:
            try:
                get_space(self.space_name).encode(first[ARCH_COLUMN])
            except (ValueError, TypeError) as exc:
                raise ValueError(f"tabular: the table's architectures do not belong to space "
                                 f"{self.space_name!r} ({exc}); use --space nb201") from None

    def setup(self) -> None:
        if getattr(self, "_rows", None) is not None:
            return
        self._rows = read_table(self.table, self.space, self.columns)
        self._payloads = SyntheticPayloads(self.seed)

    def start(self, candidate: Candidate, cache: TensorCache | None) -> Started:
        """First half of an evaluation: find the row and look up a donor for the child; the duration is the
        table's training time scaled by epochs (simulated seconds)."""
        self.setup()
        cache = self.cache_for(candidate, cache)
        row = self._rows.get(candidate.arch)
        if row is None:
            raise ValueError(f"tabular: architecture {candidate.arch} is not in table {self.table!r}")
        cols = self.columns
        lmap = self.layer_map(candidate.arch)
        layer_bytes = self.space.layer_nbytes(candidate.arch, self.transfer, cols.num_classes, cols.input_shape)
        hit, cache_s = None, 0.0
        if cache is not None:
            t0 = time.perf_counter()
            hit = cache.lookup(candidate.arch, parent=candidate.parent_id, layer_map=lmap)
            cache_s = time.perf_counter() - t0
        return Started(candidate, row.train_time * self.epochs / TABLE_EPOCHS,
                       Lookup(row, lmap, layer_bytes, hit, cache_s))

    def finish(self, started: Started, cache: TensorCache | None) -> TraceRecord:
        """Second half: put the child's synthetic layers and report (real bytes, simulated seconds)."""
        cand, looked = started.candidate, started.state
        cache = self.cache_for(cand, cache)
        hit, cache_s = looked.hit, looked.cache_s
        stored = None
        if cache is not None:
            layers = self._payloads.layers(cand.model_id, looked.layer_bytes, self.payload_scale)
            t0 = time.perf_counter()
            stored = cache.put(cand.model_id, cand.arch, layers, score=looked.row.score, parent=cand.parent_id,
                               layer_map=looked.layer_map)
            cache_s += time.perf_counter() - t0
        served = hit.indices if hit is not None else []
        tier_bytes: dict[str, int] = {}
        for index, tier in zip(served, hit.tiers if hit is not None else []):
            tier_bytes[tier] = tier_bytes.get(tier, 0) + looked.layer_bytes[index]
        return self.record(
            cand, looked.layer_map, looked.layer_bytes, stored, score=looked.row.score, test=looked.row.test,
            train_s=started.duration, cache_s=cache_s, t_start=0.0, t_end=started.duration,
            donor_id=hit.donor if hit else None, layers_served=len(served),
            bytes_served=sum(looked.layer_bytes[i] for i in served), tier=hit.slowest_tier if hit else None,
            tier_bytes=tier_bytes, epochs=self.epochs)

    def evaluate(self, candidate: Candidate, cache: TensorCache | None) -> TraceRecord:
        """Both halves in real time, sleeping ``duration x time_scale`` between them."""
        t_start = time.time()
        started = self.start(candidate, cache)
        if self.time_scale:
            time.sleep(started.duration * self.time_scale)
        record = self.finish(started, cache)
        record.t_start, record.t_end = t_start, time.time()
        return record

    def describe(self) -> dict[str, Any]:
        return {"evaluator": self.name, "table": self.table, "dataset": self.dataset, "epochs": self.epochs,
                "payload_scale": self.payload_scale, "time_scale": self.time_scale,
                "score_column": self.columns.score, "test_column": self.columns.test}
