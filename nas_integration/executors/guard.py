"""The cache as a search's executors hand it to evaluations: a cache error never fails an evaluation.

``SearchCache`` runs each cache call under the library's ``Guard``: whatever escapes a cache call (a model id
another search put with other tensors, a bug) is a miss or a skipped put, one warning per kind of failure and
cache, every one counted in ``stats()["errors"]`` (the summary's ``cache errors`` row), and the evaluation goes
on with its score.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tensorcache import TensorCache
from tensorcache.events import PolicyEvent
from tensorcache.guard import Guard
from tensorcache.hit import Hit, Stored
from tensorcache.layers import LayerMap
from tensorcache.transfer import TransferReport


class SearchCache(TensorCache):
    """A ``TensorCache`` whose lookups, warm starts, puts and policy news never raise: a failure is a miss (None,
    an empty report), a skipped put (None) or news not told, counted by operation in ``stats()["errors"]``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._guard = Guard()

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
                                                                             layer_map), f"model {model_id}")

    def observe(self, event: PolicyEvent) -> None:
        self._guard("policy news", None, lambda: super(SearchCache, self).observe(event))

    def stats(self) -> dict[str, Any]:
        """``TensorCache.stats`` and ``errors``: the cache calls that failed, by operation."""
        return {**super().stats(), "errors": dict(self._guard.errors)}
