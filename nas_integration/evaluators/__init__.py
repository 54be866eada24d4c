"""Evaluators: turn a candidate architecture into a score, using the cache as a user's NAS worker would.

An evaluator is built in the scheduling process from plain settings, pickled to each worker, and loads
its data there in ``setup()`` (``check()`` validates the settings cheaply before any worker starts).
``evaluate(candidate, cache)`` warm-starts from the cache, scores the child and puts its tensors back.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..evolution import Candidate

if TYPE_CHECKING:
    from tensorcache import TensorCache


@dataclass
class Result:
    """What one evaluation measured; the search loop adds ids, worker and times to make a trace record."""

    score: float
    train_s: float
    cache_s: float = 0.0
    test: float | None = None
    donor_id: str | None = None
    transfer_layers: int = 0
    transfer_bytes: int = 0
    tier: str | None = None
    tier_bytes: dict[str, int] = field(default_factory=dict)  # transfer bytes by the tier that served them
    layer_bytes: list[int] = field(default_factory=list)
    layer_keys: list[str] = field(default_factory=list)
    layer_deps: list[list[int]] = field(default_factory=list)  # arch positions each layer depends on
    t_start: float = 0.0
    t_end: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class Evaluator(ABC):
    """Scores candidates; subclasses keep only plain settings in ``__init__`` so they pickle cheaply."""

    name: str
    payload_scale: float = 1.0  # cache capacities are multiplied by this (synthetic payloads shrink bytes)

    def check(self) -> None:
        """Raise a clear error if the settings cannot work (missing files, wrong space) before workers start."""

    @abstractmethod
    def setup(self) -> None:
        """Load data and models' prerequisites in the process that will evaluate; idempotent."""

    @abstractmethod
    def evaluate(self, candidate: Candidate, cache: TensorCache | None) -> Result:
        """Evaluate one candidate (warm start, score, put) and report what it cost."""

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
