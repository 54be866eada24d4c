"""A cache error never fails the user's job: ``Guard`` runs one cache call and answers an exception with a
default (a miss, a skipped put), counted by operation, with one warning per kind of failure.

A tier's own faults (a full disk, Redis down) are misses inside the cache already; what still escapes a cache
call (a model id another search put with other tensors, a layer map that does not fit, a bug) is answered
here, for the framework integrations (``integrations.worker``) and for a search driver's evaluations alike.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
OUTCOME = {"lookup": "a miss", "warm start": "a miss", "put": "the put is skipped",
           "policy news": "the policies miss this news"}


class Guard:
    """Cache calls whose exceptions become a default: each counted by operation in ``errors``, and warned about
    (``RuntimeWarning``) once per operation and exception type; ``quiet``: exception types warned about
    elsewhere already, counted only."""

    def __init__(self, quiet: tuple[type[Exception], ...] = ()) -> None:
        self.errors: dict[str, int] = {}
        self._quiet = quiet
        self._warned: set[tuple[str, str]] = set()

    def __call__(self, what: str, default: T, call: Callable[[], T], subject: str = "",
                 noted: Callable[[str], None] | None = None) -> T:
        """``call()``, or ``default`` when it raises (``what``: one of ``OUTCOME``'s operations; ``subject``: what
        it was for, e.g. ``model m3``); ``noted`` is told the failure in one line."""
        try:
            return call()
        except Exception as exc:  # the user's job goes on without the cache
            self.errors[what] = self.errors.get(what, 0) + 1
            failure = f"{what}{f' of {subject}' if subject else ''} failed: {type(exc).__name__}: {exc}"
            if noted is not None:
                noted(failure)
            kind = (what, type(exc).__name__)
            if kind not in self._warned and not isinstance(exc, self._quiet):
                self._warned.add(kind)
                warnings.warn(f"tensorcache: {failure}; {OUTCOME[what]}, the job goes on without the cache "
                              "(further failures of this kind are counted, not warned about)", RuntimeWarning,
                              stacklevel=3)
            return default
