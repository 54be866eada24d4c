"""News for remote caches: the policy events of finished evaluations and of children issued since, sent with a
worker's next job."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tensorcache.events import ModelDescribed

if TYPE_CHECKING:
    from tensorcache import TensorCache


@dataclass
class CacheNews:
    """Events a cache has not been told yet (for its eviction policy): finished evaluations, and children
    issued since (described, no layers yet)."""

    evaluations: int = 0
    mutations: list[int] = field(default_factory=list)
    population: list[tuple[str, float]] | None = None
    population_size: int = 0
    sample_size: int = 0
    described: list[ModelDescribed] = field(default_factory=list)

    def add(self, mutation_pos: int | None, members: list[tuple[str, float]], population_size: int,
            sample_size: int) -> None:
        """One more evaluation finished, leaving the population ``members`` (oldest first)."""
        self.evaluations += 1
        if mutation_pos is not None:
            self.mutations.append(mutation_pos)
        self.population, self.population_size, self.sample_size = members, population_size, sample_size

    def describe(self, event: ModelDescribed) -> None:
        """A child was issued to some worker: the cache counts it in flight."""
        self.described.append(event)

    def apply(self, cache: TensorCache) -> None:
        """Tell ``cache`` everything added so far: the finished evaluations' news, then the children issued."""
        for _ in range(self.evaluations):
            cache.notify_evaluation()
        for pos in self.mutations:
            cache.observe_mutation(pos)
        if self.population is not None:
            cache.update_population(self.population, self.population_size, self.sample_size)
        for event in self.described:
            cache.observe(event)
