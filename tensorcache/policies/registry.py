"""Policies by name: the built-ins, and any a user registers."""
from __future__ import annotations

from typing import Any

from .base import Policy
from .belady import Belady
from .classic import FIFO, LFU, LRU
from .donor_window import DonorWindow
from .evolution_aware import EvolutionAware


POLICIES: dict[str, type] = {}


def register_policy(name: str, cls: type, replace: bool = False) -> None:
    """Make ``cls`` (a Policy subclass) available to ``make_policy`` under ``name``; a name already
    registered is an error unless ``replace=True``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"policy name must be a non-empty string, got {name!r}")
    if not (isinstance(cls, type) and issubclass(cls, Policy)):
        raise TypeError(f"policy {name!r} must be a Policy subclass, got {cls!r}")
    if name in POLICIES and not replace:
        raise ValueError(f"policy name {name!r} is already taken by {POLICIES[name].__name__} "
                         "(register with replace=True to replace it)")
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
