"""Evaluators: turn a candidate architecture into a score, using the cache as a user's NAS worker would.

An evaluator is built in the scheduling process from plain settings, pickled to each worker, and loads
its data there in ``setup()`` (``check()`` validates the settings cheaply before any worker starts).
``evaluate(candidate, cache)`` warm-starts from the cache, scores the child, puts its tensors back and
returns the evaluation's trace record. ``Evaluator`` is everything an executor calls: ``start``/``finish``
split an evaluation for executors on a simulated clock, ``donor`` tells a placing scheduler which model
the cache would serve a child.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tensorcache.evolution import Candidate
from tensorcache.trace import TraceRecord

from ..spaces import SearchSpace, get_space

if TYPE_CHECKING:
    from tensorcache import LayerMap, TensorCache
    from tensorcache.hit import Stored


@dataclass
class Started:
    """A started evaluation: how long it takes on the executor's clock, and what ``finish`` needs."""

    candidate: Candidate
    duration: float
    state: Any = None


class Evaluator(ABC):
    """Scores candidates; subclasses keep only plain settings in ``__init__`` so they pickle cheaply."""

    name: str
    payload_scale: float = 1.0  # cache capacities are multiplied by this (synthetic payloads shrink bytes)

    def __init__(self, space: str, dataset: str, epochs: int, transfer: str, namespace: str, seed: int) -> None:
        """The settings every evaluator has (subclasses check their own values first)."""
        self.space_name = space
        self.dataset = dataset
        self.epochs = epochs
        self.transfer = transfer  # "prefix" or "compatible": which layers a child may take from a donor
        self.namespace = namespace  # the cache namespace, for the layer keys of searches without a cache
        self.seed = seed

    def check(self) -> None:
        """Raise a clear error if the settings cannot work (missing files, wrong space) before workers start."""

    @abstractmethod
    def setup(self) -> None:
        """Load data and models' prerequisites in the process that will evaluate; idempotent."""

    @abstractmethod
    def evaluate(self, candidate: Candidate, cache: TensorCache | None) -> TraceRecord:
        """Evaluate one candidate (warm start, score, put) and report it (``worker`` is the executor's to set)."""

    def start(self, candidate: Candidate, cache: TensorCache | None) -> Started:
        """First half of an evaluation on a simulated clock; by default the whole of it, timed."""
        record = self.evaluate(candidate, cache)
        return Started(candidate, record.t_end - record.t_start, record)

    def finish(self, started: Started, cache: TensorCache | None) -> TraceRecord:
        """Second half: what ``start`` left to do (by default nothing but hand its record back)."""
        return started.state

    def donor(self, candidate: Candidate, cache: TensorCache) -> str | None:
        """The donor the cache would serve this child now (for placement), from its catalog alone."""
        if candidate.scratch_of is not None:
            return None
        return cache.best_donor(candidate.arch, parent=candidate.parent_id, layer_map=self.layer_map(candidate.arch))

    @staticmethod
    def cache_for(candidate: Candidate, cache: TensorCache | None) -> TensorCache | None:
        """The cache an evaluation of ``candidate`` may use: none for a scratch job (no warm start, no put)."""
        return None if candidate.scratch_of is not None else cache

    @property
    def space(self) -> SearchSpace:
        """The search space, built on first use (cheap: no data is loaded)."""
        if getattr(self, "_space", None) is None:
            self._space = get_space(self.space_name)
        return self._space

    def layer_map(self, arch: tuple[int, ...]) -> LayerMap:
        """Which arch positions decide each layer of ``arch``, in this evaluator's transfer mode."""
        return self.space.layer_map(arch, self.transfer)

    def record(self, candidate: Candidate, layer_map: LayerMap, layer_bytes: list[int], stored: Stored | None,
               **measured: Any) -> TraceRecord:
        """The trace record of ``candidate`` with what the evaluation ``measured``: the layer keys and
        dependencies as the cache's ``put`` reported them (``stored``); a search without a cache still
        records them for replays, keyed as the cache would from the layer map and ``namespace``."""
        if stored is not None:
            keys, deps = stored.keys, stored.depends_on
        else:
            keys, deps = layer_map.keys(self.namespace, candidate.arch), [s.depends_on for s in layer_map.layers]
        return TraceRecord(model_id=candidate.model_id, parent_id=candidate.parent_id, worker=0,
                           arch=list(candidate.arch), mutation_pos=candidate.mutation_pos,
                           layer_bytes=list(layer_bytes), layer_keys=[k.hex() for k in keys],
                           layer_deps=[list(d) for d in deps], **measured)

    def describe(self) -> dict[str, Any]:
        """Settings worth recording in the summary."""
        return {"evaluator": self.name}

    def __getstate__(self) -> dict[str, Any]:
        """Pickle settings only; loaded data is rebuilt by ``setup()`` in the receiving process."""
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}


def make_evaluator(name: str, **settings: Any) -> Evaluator:
    """The evaluator called ``name`` ("tabular" or "train") built from keyword settings."""
    if name == "tabular":
        from .tabular import TabularEvaluator
        return TabularEvaluator(**settings)
    if name == "train":
        from .train import TrainEvaluator
        return TrainEvaluator(**settings)
    raise ValueError(f"unknown evaluator {name!r}; expected 'tabular' or 'train'")
