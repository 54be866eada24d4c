"""Warm starts inside an Optuna study that searches over an architecture sequence.

``OptunaWarmStart`` gives an objective three calls: ``suggest_arch`` (one integer parameter per position),
``warm_start`` (look up the nearest completed trial as the parent, copy its layers into the fresh model,
record the lineage and the transfer as trial user attributes) and, passed to ``study.optimize(...,
callbacks=[helper])``, a study callback that puts a completed trial's trained model with its value.
The nearest trial is the completed one whose architecture differs in the fewest positions, the better
value breaking ties: Optuna samplers have no parent, so the closest evaluated model stands in for one.
"""
from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..cache import TensorCache
from ..layers import LayerMap
from ..transfer import TransferReport
from . import require
from .worker import Transfer, WorkerCache, check_options, store, warm, worker_cache

_optuna = require("optuna", "tensorcache.integrations.optuna")

ARCH, MODEL = "tc_arch", "tc_model"


class OptunaWarmStart:
    """Trial helpers and a study callback (see module doc). ``cache`` is a TensorCache or its keyword
    arguments (then opened once per process); ``layer_map(arch)`` gives an architecture's layer map."""

    def __init__(self, cache: TensorCache | Mapping[str, Any],
                 layer_map: Callable[[tuple[int, ...]], LayerMap] | None = None, prefix: str = "arch") -> None:
        self._cache = cache if isinstance(cache, TensorCache) else check_options(cache)
        self._worker = WorkerCache(cache) if isinstance(cache, TensorCache) else None
        self.layer_map = layer_map
        self.prefix = prefix
        self._pending: dict[tuple[str, int], tuple[Any, tuple[int, ...], Transfer]] = {}
        self._lock = threading.Lock()

    @property
    def worker(self) -> WorkerCache:
        """The cache this process uses."""
        return self._worker if self._worker is not None else worker_cache(self._cache)

    def suggest_arch(self, trial: Any, choices: Sequence[int]) -> tuple[int, ...]:
        """One ``suggest_int`` per position (``<prefix><i>`` in ``0..choices[i]-1``); recorded as ``tc_arch``."""
        arch = tuple(trial.suggest_int(f"{self.prefix}{i}", 0, int(n) - 1) for i, n in enumerate(choices))
        trial.set_user_attr(ARCH, list(arch))
        return arch

    def warm_start(self, trial: Any, module: Any, arch: Sequence[int] | None = None) -> TransferReport:
        """Copy the nearest completed trial's layers into ``module``; the lineage and the transfer become
        user attributes (``tc_model``, ``tc_parent``, ``tc_donor``, ``tc_layers``, ``tc_bytes``, ...)."""
        if arch is None:
            if ARCH not in trial.user_attrs:
                raise ValueError("warm_start needs the trial's architecture: call suggest_arch first or pass arch")
            arch = trial.user_attrs[ARCH]
        arch = tuple(int(a) for a in arch)
        trial.set_user_attr(ARCH, list(arch))
        transfer = Transfer(uuid.uuid4().hex, nearest_trial(trial.study, arch))
        lmap = self.layer_map(arch) if self.layer_map is not None else None
        warm(self.worker, module, arch, transfer, lmap)
        for key, value in transfer.metadata().items():
            trial.set_user_attr(key, value)
        with self._lock:
            self._pending[(trial.study.study_name, trial.number)] = (module, arch, transfer)
        return transfer.report

    def __call__(self, study: Any, trial: Any) -> None:
        """Study callback: put a completed trial's warm-started model, scored by its value (higher is better)."""
        with self._lock:
            pending = self._pending.pop((study.study_name, trial.number), None)
        if pending is None or trial.state != _optuna.trial.TrialState.COMPLETE:
            return
        module, arch, transfer = pending
        score = None
        if len(study.directions) == 1 and trial.value is not None:
            maximize = study.direction == _optuna.study.StudyDirection.MAXIMIZE
            score = trial.value if maximize else -trial.value
        lmap = self.layer_map(arch) if self.layer_map is not None else None
        store(self.worker, module, arch, score, transfer, lmap)
        with self.worker.lock:
            self.worker.cache.notify_evaluation()


def nearest_trial(study: Any, arch: Sequence[int]) -> str | None:
    """Model id of the completed trial nearest ``arch`` (fewest differing positions, then best value)."""
    arch = tuple(arch)
    single = len(study.directions) == 1
    sign = 1.0 if single and study.direction == _optuna.study.StudyDirection.MAXIMIZE else -1.0
    best: tuple[int, float, int] | None = None
    found = None
    states = (_optuna.trial.TrialState.COMPLETE,)
    for t in study.get_trials(deepcopy=False, states=states):
        other, model = t.user_attrs.get(ARCH), t.user_attrs.get(MODEL)
        if model is None or other is None or len(other) != len(arch):
            continue
        value = t.value if single and t.value is not None else 0.0
        rank = (sum(a != b for a, b in zip(arch, other)), -sign * value, t.number)
        if best is None or rank < best:
            best, found = rank, model
    return found
