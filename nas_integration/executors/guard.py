"""The cache as a search's executors hand it to evaluations: a cache error never fails an evaluation.

A shared tier's faults (a disk full, Redis killed) are misses inside the cache already; ``SearchCache`` also
answers whatever still escapes a cache call (a model id another search put with other tensors, a bug) as a
miss or a skipped put: one warning per kind of failure and cache, every one counted in ``stats()["errors"]``
(the summary's ``cache errors`` row), and the evaluation goes on with its score.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from tensorcache import TensorCache
from tensorcache.events import PolicyEvent
from tensorcache.hit import Hit, Stored
from tensorcache.layers import LayerMap
from tensorcache.transfer import TransferReport

log = logging.getLogger("nas_integration")
T = TypeVar("T")
_OUTCOME = {"lookup": "a miss", "warm start": "a miss", "put": "the put is skipped",
            "policy news": "the policies miss this news"}


class SearchCache(TensorCache):
    """A ``TensorCache`` whose lookups, warm starts, puts and policy news never raise: a failure is a miss (None,
    an empty report), a skipped put (None) or news not told, counted by operation in ``stats()["errors"]``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._errors: dict[str, int] = {}
        self._warned: set[tuple[str, str]] = set()

    def lookup(self, arch: Sequence[int], parent: str | None = None, layer_map: LayerMap | None = None) -> Hit | None:
        return self._guard("lookup", None, lambda: super(SearchCache, self).lookup(arch, parent, layer_map))

    def warm_start(self, module: Any, arch: Sequence[int], parent: str | None = None,
                   layer_map: LayerMap | None = None, cast: bool = True) -> TransferReport:
        return self._guard("warm start", TransferReport(),
                           lambda: super(SearchCache, self).warm_start(module, arch, parent, layer_map, cast))

    def best_donor(self, arch: Sequence[int], parent: str | None = None,
                   layer_map: LayerMap | None = None) -> str | None:
        return self._guard("lookup", None, lambda: super(SearchCache, self).best_donor(arch, parent, layer_map))

    def put(self, model_id: str, arch: Sequence[int], layers: Any, score: float | None = None,
            parent: str | None = None, layer_map: LayerMap | None = None) -> Stored | None:  # type: ignore[override]
        """``TensorCache.put``, or None when it failed (nothing of the model is kept)."""
        return self._guard("put", None, lambda: super(SearchCache, self).put(model_id, arch, layers, score, parent,
                                                                             layer_map))

    def observe(self, event: PolicyEvent) -> None:
        self._guard("policy news", None, lambda: super(SearchCache, self).observe(event))

    def stats(self) -> dict[str, Any]:
        """``TensorCache.stats`` and ``errors``: the cache calls that failed, by operation."""
        return {**super().stats(), "errors": dict(self._errors)}

    def _guard(self, what: str, default: T, call: Callable[[], T]) -> T:
        try:
            return call()
        except Exception as exc:  # the evaluation goes on without the cache
            self._errors[what] = self._errors.get(what, 0) + 1
            kind = (what, type(exc).__name__)
            if kind not in self._warned:
                self._warned.add(kind)
                log.warning("cache %s failed (%s: %s); %s, the search goes on (further failures of this kind "
                            "are counted, not logged)", what, type(exc).__name__, exc, _OUTCOME[what])
            return default
