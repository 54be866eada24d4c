"""The typed events a cache tier's policy hears, one class per kind, shared by the live cache and replay.

The cache and ``replay`` both speak to policies only through these objects (``Policy.handle``), so a
replay of a recorded search feeds a policy the very sequence of events the live cache fed it. Each event
names the declared ``Policy`` method that takes it; there are no optional hooks looked up by name.
"""
from __future__ import annotations

import warnings
from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:
    from .policies.base import Policy

Key = Hashable  # the cache uses (model_id, layer_index)


@dataclass(frozen=True)
class Inserted:
    """``key`` entered the tier: ``size`` bytes of ``model_id``, depending on arch positions ``deps``."""

    key: Key
    size: int
    model_id: str
    deps: tuple[int, ...] = ()

    def deliver(self, policy: Policy) -> None:
        policy.on_insert(self.key, self.size, self.model_id, self.deps)


@dataclass(frozen=True)
class Found:
    """Another process's entries of ``model_id`` found held in a shared tier (opening a cache, following the
    store): ``entries`` as (key, size, deps) in the order they would have been inserted, given at once so a
    policy can rank the model once rather than once per layer."""

    model_id: str
    entries: tuple[tuple[Key, int, tuple[int, ...]], ...]

    def deliver(self, policy: Policy) -> None:
        policy.on_found(self.model_id, self.entries)


@dataclass(frozen=True)
class Released:
    """``key`` was released from the tier (evicted after ``victim``, found damaged or missing, or released by
    another process)."""

    key: Key

    def deliver(self, policy: Policy) -> None:
        policy.on_release(self.key)


@dataclass(frozen=True)
class LayerServed:
    """The entry ``key`` was served to a child."""

    key: Key

    def deliver(self, policy: Policy) -> None:
        policy.on_hit(self.key)


@dataclass(frozen=True)
class Donated:
    """``model_id`` was chosen as a donor (once per lookup)."""

    model_id: str

    def deliver(self, policy: Policy) -> None:
        policy.on_donation(self.model_id)


@dataclass(frozen=True)
class EvaluationDone:
    """One evaluation finished: windows and clocks advance."""

    def deliver(self, policy: Policy) -> None:
        policy.on_evaluation()


@dataclass(frozen=True)
class PopulationChanged:
    """The evolution's population as (model_id, score), oldest first, with its size P and sample size S."""

    members: tuple[tuple[str, float], ...]
    population_size: int
    sample_size: int

    def deliver(self, policy: Policy) -> None:
        policy.on_population(self.members, self.population_size, self.sample_size)


@dataclass(frozen=True)
class Mutated:
    """A child's mutation landed on arch ``position``."""

    position: int

    def deliver(self, policy: Policy) -> None:
        policy.on_mutation(self.position)


@dataclass(frozen=True)
class ModelDescribed:
    """``model_id``'s arch, transfer mode, layer count and score, told before its layers arrive."""

    model_id: str
    arch: tuple[int, ...]
    mode: str
    layers: int
    score: float | None

    def deliver(self, policy: Policy) -> None:
        policy.on_model(self.model_id, self.arch, self.mode, self.layers, self.score)


@dataclass(frozen=True)
class ClockMoved:
    """Replay only: the next event's requests are positions ``start:end`` of the request stream (Belady's clock)."""

    start: int
    end: int

    def deliver(self, policy: Policy) -> None:
        policy.on_clock(self.start)


PolicyEvent = Union[Inserted, Found, Released, LayerServed, Donated, EvaluationDone, PopulationChanged, Mutated,
                    ModelDescribed, ClockMoved]


def __getattr__(name: str) -> object:
    """``Removed``, the old name of ``Released``, with a DeprecationWarning."""
    if name == "Removed":
        warnings.warn("tensorcache.events.Removed is now Released", DeprecationWarning, stacklevel=2)
        return Released
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
