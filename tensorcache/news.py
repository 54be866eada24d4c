"""Evaluation news: what a cache's eviction policies are told about the search between puts and lookups,
as one typed value the driver, its executors and replay all use.

One finished evaluation is news of three kinds: it is done (sliding windows advance), where its mutation
landed (if it was a mutated child), and the population it left (oldest first). A driver that issues
children before others finish also says which children are in flight (``ModelDescribed`` without layers).
News can be collected for a cache that is told later (a remote worker hears it with its next job).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .events import EvaluationDone, ModelDescribed, Mutated, PolicyEvent, PopulationChanged

if TYPE_CHECKING:
    from .cache import TensorCache


@dataclass
class EvaluationNews:
    """Evaluations finished (with their mutation positions and the last population) and children issued
    since, not yet told to a cache."""

    evaluations: int = 0
    mutations: list[int] = field(default_factory=list)
    population: list[tuple[str, float]] | None = None
    population_size: int = 0
    sample_size: int = 0
    described: list[ModelDescribed] = field(default_factory=list)

    @classmethod
    def of(cls, mutation_pos: int | None, members: Sequence[tuple[str, float]] | None, population_size: int,
           sample_size: int) -> EvaluationNews:
        """The news of one finished evaluation."""
        news = cls()
        news.add(mutation_pos, members, population_size, sample_size)
        return news

    def add(self, mutation_pos: int | None, members: Sequence[tuple[str, float]] | None, population_size: int,
            sample_size: int) -> None:
        """One more evaluation finished, leaving the population ``members`` (oldest first; None: unknown)."""
        self.evaluations += 1
        if mutation_pos is not None:
            self.mutations.append(mutation_pos)
        if members is not None:
            self.population, self.population_size, self.sample_size = list(members), population_size, sample_size

    def extend(self, later: EvaluationNews) -> None:
        """Add news that came after this (a listener catching up on several pieces at once)."""
        self.evaluations += later.evaluations
        self.mutations += later.mutations
        if later.population is not None:
            self.population, self.population_size, self.sample_size = (list(later.population),
                                                                       later.population_size, later.sample_size)
        self.described += later.described

    def describe(self, event: ModelDescribed) -> None:
        """A child was issued to some worker: the cache counts it in flight."""
        self.described.append(event)

    def events(self) -> list[PolicyEvent]:
        """The policy events, in the order a cache hears them: evaluations done, mutations, the population,
        then the children issued."""
        out: list[PolicyEvent] = [EvaluationDone() for _ in range(self.evaluations)]
        out += [Mutated(pos) for pos in self.mutations]
        if self.population is not None:
            out.append(PopulationChanged(tuple(self.population), self.population_size, self.sample_size))
        return out + list(self.described)

    def tell(self, cache: TensorCache) -> None:
        """Tell ``cache`` everything added so far."""
        for event in self.events():
            cache.observe(event)
