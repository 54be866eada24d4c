"""Regularized evolution (Real et al. 2019): a population of the last P models, tournament of S, aging.

``ask`` hands out the next child; ``tell`` adds a finished one. While fewer than P evaluations have
finished, children are random architectures; after that each child is a one-position mutation of the
best of S members sampled from the population, and every new member pushes the oldest out. The object
is not tied to a scheduling mode: the search loop decides when to ask (asynchronous: whenever a worker
is free; batch: a generation at a time) and all randomness comes from one seeded ``random.Random``. It
lives in the library because both ``run_search`` and the Ray Tune searcher (``integrations.ray_tune``) breed
with it; a space is anything that samples and mutates architectures (``Space``).
"""
from __future__ import annotations

import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

Arch = tuple[int, ...]  # one choice per position of the architecture sequence


class Space(Protocol):
    """What evolution needs of a search space (``nas_integration``'s ``SearchSpace`` is one)."""

    @property
    def n_positions(self) -> int:
        """Positions of the architecture sequence."""

    def sample(self, rng: random.Random) -> Arch:
        """A uniformly random architecture."""

    def mutate(self, arch: Sequence[int], rng: random.Random, bias: float = 0.0) -> tuple[Arch, int]:
        """``arch`` with one position changed, and that position."""


@dataclass(frozen=True)
class Candidate:
    """A child to evaluate: its number in issue order, id, architecture and where it came from. A *scratch*
    job (``scratch_of``) retrains the architecture of an evaluated model from scratch, never touching the
    cache: ``scratch_seed`` 0 starts from the same initialisation as that model, others from another one."""

    index: int
    model_id: str
    arch: Arch
    parent_id: str | None = None
    mutation_pos: int | None = None
    scratch_of: str | None = None
    scratch_seed: int = 0

    def scratch(self, seed: int, purpose: str = "scratch") -> Candidate:
        """A scratch job retraining this candidate's architecture (see the class doc), named by ``purpose``."""
        return Candidate(self.index, f"{self.model_id}-{purpose}{seed}", self.arch, scratch_of=self.model_id,
                         scratch_seed=seed)


@dataclass(frozen=True)
class Member:
    """A finished model in the population."""

    model_id: str
    arch: Arch
    score: float


class RegularizedEvolution:
    """Breeds children from a finished population; see the module docstring for the rules."""

    def __init__(self, space: Space, population_size: int, sample_size: int, seed: int = 0,
                 mutation_bias: float = 0.0, id_prefix: str = "m") -> None:
        if population_size < 1:
            raise ValueError(f"population size must be >= 1, got {population_size}")
        if not 1 <= sample_size <= population_size:
            raise ValueError(f"sample size must be in 1..population size ({population_size}), got {sample_size}")
        self.space = space
        self.population_size = population_size
        self.sample_size = sample_size
        self.mutation_bias = float(mutation_bias)
        self.id_prefix = id_prefix
        self.rng = random.Random(seed)
        self.population: deque[Member] = deque(maxlen=population_size)
        self.issued = 0
        self.finished = 0

    def ask(self) -> Candidate:
        """The next child: random until P evaluations finished, then a mutated tournament winner."""
        index = self.issued
        self.issued += 1
        model_id = f"{self.id_prefix}{index:06d}"
        if self.finished < self.population_size:
            return Candidate(index, model_id, self.space.sample(self.rng))
        sample = self.rng.sample(list(self.population), self.sample_size)
        parent = max(sample, key=lambda m: m.score)  # first of equals wins: deterministic
        child, pos = self.space.mutate(parent.arch, self.rng, bias=self.mutation_bias)
        return Candidate(index, model_id, child, parent.model_id, pos)

    def tell(self, candidate: Candidate, score: float) -> None:
        """Add a finished child; the oldest member leaves once the population holds P."""
        self.population.append(Member(candidate.model_id, candidate.arch, float(score)))
        self.finished += 1

    def rescore(self, model_id: str, score: float) -> bool:
        """Replace a population member's score (e.g. by a from-scratch retraining); False if it has left."""
        for n, m in enumerate(self.population):
            if m.model_id == model_id:
                self.population[n] = Member(m.model_id, m.arch, float(score))
                return True
        return False

    def leader(self) -> Member | None:
        """The population's best member (first of equals), or None while it is empty."""
        return max(self.population, key=lambda m: m.score) if self.population else None

    def members(self) -> list[tuple[str, float]]:
        """Population as (model_id, score), oldest first (what ``TensorCache.update_population`` takes)."""
        return [(m.model_id, m.score) for m in self.population]
