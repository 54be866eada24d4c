"""Warm starts and small, capacity-bounded checkpoints for Ray Tune trials (PBT, PB2, ASHA, searchers).

A trainable opens its trial's cache with ``TuneCache.start(model, config)`` and reports
``checkpoint=trial.checkpoint(model, score)``. The weights go into the worker's ``TensorCache``
(deduplicated by content, held under the tiers' byte capacities); the Tune checkpoint holds only a small
pointer (``tensorcache.json``: the model id, the architecture and the user's small state), so Tune's
storage grows by a few hundred bytes per checkpoint however large the model. When a trial starts from a
checkpoint (a PBT/PB2 exploit, a resume, a promotion) the pointer names the donor and ``start`` copies its
layers; when the donor's weights are gone from the cache or the mutated config changed some shapes, the
layers that fit come from the donor (or, with the donor gone, from the nearest model held) and the rest
keep their fresh initialisation: the trial trains on instead of failing. A new trial whose config names a
parent (``tc_parent``, as ``EvolutionSearcher`` and DeepHyper's ``LineageEvolution`` write) starts from it.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ..evolution import RegularizedEvolution, Space
from ..layers import LayerMap, LayerSpec
from . import require
from .worker import CacheOptions, Transfer, WorkerCache, cache_settings, store, text_id, warm, worker_cache

_tune = require("ray.tune", "tensorcache.integrations.ray_tune", "ray")
_search = require("ray.tune.search", "tensorcache.integrations.ray_tune", "ray")

POINTER = "tensorcache.json"
MODEL_ID, PARENT, MUTATED = "tc_id", "tc_parent", "tc_mutated"   # the lineage keys of a config


def module_layers(module: Any) -> LayerMap:
    """A layer map read off ``module``: one layer per top-level child holding tensors, depending on no
    position, so a donor gives every layer whose shapes fit (``compatible`` mode)."""
    groups: dict[str, list[str]] = {}
    for name in module.state_dict():
        groups.setdefault(name.split(".", 1)[0], []).append(name)
    return LayerMap(tuple(LayerSpec(group, tuple(names), ()) for group, names in groups.items()), "compatible")


@dataclass
class TrialCache:
    """One trial run's link to the cache: what its warm start did, its lineage and its small state."""

    owner: TuneCache
    worker: WorkerCache
    arch: tuple[int, ...]
    layer_map: LayerMap
    transfer: Transfer
    state: dict[str, Any] = field(default_factory=dict)
    resumed: bool = False        # started from a Tune checkpoint (an exploit, a resume, a promotion)
    stored: list[str] = field(default_factory=list)   # ids this run put, oldest first
    _dirs: list[str] = field(default_factory=list, repr=False)

    @property
    def model_id(self) -> str:
        """The id of this run's latest put (before any, the id its first put will take)."""
        return self.stored[-1] if self.stored else self.transfer.model_id

    def put(self, model: Any, score: float | None = None) -> str:
        """Store ``model`` (higher ``score`` is better) under a new id whose parent is the model this run
        last stored, or the one it started from; returns the id."""
        model_id = self.owner.new_id(len(self.stored)) if self.stored else self.transfer.model_id
        parent = self.stored[-1] if self.stored else self.transfer.parent
        put_as = Transfer(model_id, parent)
        store(self.worker, model, self.arch, score, put_as, self.layer_map)
        self.transfer.seconds += put_as.seconds
        self.stored.append(model_id)
        return model_id

    def checkpoint(self, model: Any, score: float | None = None, **state: Any) -> Any:
        """Put ``model`` and return a Tune ``Checkpoint`` holding only a pointer to it and ``state`` (small
        JSON values, e.g. the epoch), for ``tune.report(..., checkpoint=...)``."""
        model_id = self.put(model, score)
        self.state.update(state)
        for old in self._dirs[:-1]:   # Tune persisted them at the reports that carried them
            shutil.rmtree(old, ignore_errors=True)
        del self._dirs[:-1]
        folder = tempfile.mkdtemp(prefix="tensorcache-ckpt-")
        with open(os.path.join(folder, POINTER), "w") as f:
            json.dump({"model": model_id, "arch": list(self.arch), "state": self.state}, f)
        self._dirs.append(folder)
        return _tune.Checkpoint.from_directory(folder)

    def metrics(self, prefix: str = "tc_") -> dict[str, Any]:
        """Fields to add to a report: the warm start's (model, parent, donor, layers, bytes, tier, seconds),
        whether the run resumed from a checkpoint, and the id of its last put (``tc_last``)."""
        out = self.transfer.metadata(prefix)
        out[f"{prefix}resumed"] = self.resumed
        out[f"{prefix}last"] = self.model_id
        return out


class TuneCache:
    """Builds each trial's ``TrialCache``. ``cache``: TensorCache keyword arguments, a ``CacheConfig`` or a
    ``tensorcache://`` URL (checked here, opened once per worker process; give a ``disk`` so that trials on
    one node share models, a ``redis`` across nodes).
    ``arch``: the config keys (or a function of the config) giving the architecture sequence; without it
    every model has the same one-position architecture and shapes alone decide what transfers.
    ``layer_map(arch)``: the layer map (default: ``module_layers`` of the model). ``new_trials``: also
    warm-start trials with neither a checkpoint nor a parent, from the nearest model held."""

    def __init__(self, cache: CacheOptions,
                 arch: Sequence[str] | Callable[[Mapping[str, Any]], Sequence[int]] | None = None,
                 layer_map: Callable[[tuple[int, ...]], LayerMap] | None = None, new_trials: bool = False) -> None:
        if isinstance(arch, str):
            raise ValueError(f"arch must name config keys (a list) or be a function of the config, got {arch!r}")
        self.cache = cache_settings(cache)
        self.arch_of = arch
        self.layer_map = layer_map
        self.new_trials = new_trials

    def arch(self, config: Mapping[str, Any]) -> tuple[int, ...]:
        """The architecture sequence of ``config``; ValueError naming a missing key."""
        if self.arch_of is None:
            return (0,)
        if callable(self.arch_of):
            return tuple(int(a) for a in self.arch_of(config))
        missing = [k for k in self.arch_of if k not in config]
        if missing:
            raise ValueError(f"architecture key(s) {missing} missing from the trial's config {sorted(config)}")
        return tuple(int(config[k]) for k in self.arch_of)

    def start(self, model: Any, config: Mapping[str, Any], checkpoint: Any = None) -> TrialCache:
        """Warm-start ``model`` for this trial: from the model Tune's checkpoint points to (default
        ``tune.get_checkpoint()``), else from the config's ``tc_parent``, else (``new_trials``) the nearest."""
        if checkpoint is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")   # outside a Tune session there is none, with a warning
                checkpoint = _tune.get_checkpoint()
        arch = self.arch(config)
        lmap = self.layer_map(arch) if self.layer_map is not None else module_layers(model)
        pointer = read_pointer(checkpoint) if checkpoint is not None else None
        parent = pointer.get("model") if pointer else text_id(config.get(PARENT))
        given = text_id(config.get(MODEL_ID))   # a searcher's id names the first put of a fresh start only
        first = given if given is not None and checkpoint is None else self.new_id(0)
        trial = TrialCache(self, worker_cache(self.cache), arch, lmap, Transfer(first, parent),
                           dict(pointer["state"]) if pointer and isinstance(pointer.get("state"), dict) else {},
                           checkpoint is not None)
        if parent is not None or self.new_trials:
            warm(trial.worker, model, arch, trial.transfer, lmap)
        report = trial.transfer.report
        if pointer and (report.donor != parent or report.skipped):
            warnings.warn(f"trial resumed from model {parent!r} took {report.layers} layer(s) from "
                          f"{report.donor!r} (left out: {report.skipped or 'the layers the donor lacked'}); "
                          "the rest keeps its fresh initialisation", stacklevel=2)
        return trial

    def new_id(self, n: int) -> str:
        """A model id naming the trial (when run under Tune) and its ``n``-th put, unique across restarts."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # outside a Tune session the id is None, with a warning
            trial = _tune.get_context().get_trial_id()
        return f"{trial or 'model'}-{n}-{uuid.uuid4().hex[:8]}"


def read_pointer(checkpoint: Any) -> dict[str, Any] | None:
    """The pointer a ``TrialCache.checkpoint`` wrote, or None (with one warning) when the checkpoint holds
    none or it cannot be read."""
    try:
        with checkpoint.as_directory() as folder:
            with open(os.path.join(folder, POINTER)) as f:
                pointer = json.load(f)
        if not isinstance(pointer, dict) or not isinstance(pointer.get("model"), str):
            raise ValueError(f"no model id in {pointer!r:.200}")
        return pointer
    except (OSError, ValueError) as exc:
        warnings.warn(f"checkpoint {getattr(checkpoint, 'path', checkpoint)!r} holds no readable tensorcache "
                      f"pointer ({exc}); the trial starts without it", stacklevel=3)
        return None



class EvolutionSearcher(_search.Searcher):
    """Regularized evolution over a search space's architecture sequence as a Tune searcher. Each config
    holds one int per position (``<prefix><i>``) and the lineage DeepHyper's ``LineageEvolution`` records:
    ``tc_id`` (the model's id in the cache), ``tc_parent`` (the tournament's pick; empty for the random
    first population) and ``tc_mutated`` (the mutated key); ``metric`` and ``mode`` say how it ranks
    finished trials. A trial reporting ``TrialCache.metrics()``
    tells the searcher the id of its last put, which later children then name as their parent."""

    def __init__(self, space: Space, population_size: int, sample_size: int, metric: str, mode: str = "max",
                 seed: int = 0, prefix: str = "arch") -> None:
        if not isinstance(metric, str) or not metric or mode not in ("max", "min"):
            raise ValueError(f"EvolutionSearcher needs the metric it selects by and mode 'max' or 'min', got "
                             f"metric={metric!r}, mode={mode!r}")
        super().__init__(metric=metric, mode=mode)
        self.prefix = prefix
        self.evolution = RegularizedEvolution(space, population_size, sample_size, seed=seed,
                                              id_prefix=f"re-{uuid.uuid4().hex[:8]}-")
        self._live: dict[str, Any] = {}

    @property
    def keys(self) -> list[str]:
        """The config keys of the architecture, in order (what ``TuneCache(arch=...)`` takes)."""
        return [f"{self.prefix}{i}" for i in range(self.evolution.space.n_positions)]

    def suggest(self, trial_id: str) -> dict[str, Any]:
        """The next child's config: its architecture and lineage."""
        child = self.evolution.ask()
        self._live[trial_id] = child
        config: dict[str, Any] = dict(zip(self.keys, child.arch))
        config[MODEL_ID] = child.model_id
        config[PARENT] = child.parent_id or ""
        config[MUTATED] = self.keys[child.mutation_pos] if child.mutation_pos is not None else ""
        return config

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """A finished trial joins the population under the id of its last put (``tc_last``)."""
        child = self._live.pop(trial_id, None)
        if child is None or error or not result or result.get(self.metric) is None:
            return
        score = float(result[self.metric])
        last = result.get("tc_last")
        if isinstance(last, str) and last:
            child = replace(child, model_id=last)
        self.evolution.tell(child, score if self.mode != "min" else -score)
