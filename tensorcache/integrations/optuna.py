"""Warm starts inside an Optuna study that searches over an architecture sequence.

``OptunaWarmStart`` gives an objective ``suggest_arch`` (one integer parameter per position) and
``warm_start`` (look up the nearest finished trial whose model the cache holds, copy its layers into the
fresh model, record the lineage and the transfer as trial user attributes). A finished trial's model is
put by whichever of these the user drives the study with: the study callback (``study.optimize(...,
callbacks=[helper])``), ``helper.tell(study, trial, values)`` in place of ``study.tell`` (ask-and-tell), or,
when neither was used, the next ``warm_start`` of the same helper, which puts the models of the trials
finished since and warns once. Models waiting for their trial to finish are bounded (``max_pending``).

The nearest trial is the finished one whose architecture differs in the fewest positions, the better
value breaking ties (the better Pareto rank, or one chosen objective, in a multi-objective study):
Optuna samplers have no parent, so the closest evaluated model stands in for one. A pruned trial's model is
kept too (Hyperband, ASHA): a later trial of the same architecture starts from it and, when every layer
came over, reads the step to resume from in ``tc_resume_step``.
"""
from __future__ import annotations

import threading
import uuid
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..cache import TensorCache
from ..layers import LayerMap
from ..news import EvaluationNews
from ..transfer import TransferReport
from . import require
from .worker import CacheOptions, Transfer, WorkerCache, cache_settings, guarded, store, warm, worker_cache

_optuna = require("optuna", "tensorcache.integrations.optuna")

ARCH, MODEL, RESUME = "tc_arch", "tc_model", "tc_resume_step"
_State = _optuna.trial.TrialState
KEPT = (_State.COMPLETE, _State.PRUNED)    # finished trials whose models are put


class OptunaWarmStart:
    """Trial helpers, ``tell`` and a study callback (see module doc). ``cache`` is a TensorCache or its
    settings (keyword arguments, a ``CacheConfig`` or a ``tensorcache://`` URL; checked here, opened once per
    process); ``layer_map(arch)`` gives an architecture's layer
    map; ``objective`` picks the value that ranks models in a multi-objective study (default: the Pareto
    rank); ``keep_pruned`` puts pruned trials' models; ``max_pending`` bounds the models held for trials
    that have not finished."""

    def __init__(self, cache: TensorCache | CacheOptions,
                 layer_map: Callable[[tuple[int, ...]], LayerMap] | None = None, prefix: str = "arch",
                 objective: int | None = None, keep_pruned: bool = True, max_pending: int = 32) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending!r}")
        self._cache = cache if isinstance(cache, TensorCache) else cache_settings(cache)
        self._worker = WorkerCache(cache) if isinstance(cache, TensorCache) else None
        self.layer_map = layer_map
        self.prefix = prefix
        self.objective = objective
        self.keep_pruned = keep_pruned
        self.max_pending = max_pending
        self._pending: OrderedDict[tuple[str, int], tuple[Any, tuple[int, ...], Transfer]] = OrderedDict()
        self._lock = threading.Lock()
        self._warned: set[str] = set()

    @property
    def worker(self) -> WorkerCache:
        """The cache this process uses."""
        return self._worker if self._worker is not None else worker_cache(self._cache)

    @property
    def pending(self) -> int:
        """How many models wait for their trial to finish."""
        return len(self._pending)

    def suggest_arch(self, trial: Any, choices: Sequence[int]) -> tuple[int, ...]:
        """One ``suggest_int`` per position (``<prefix><i>`` in ``0..choices[i]-1``); recorded as ``tc_arch``."""
        arch = tuple(trial.suggest_int(f"{self.prefix}{i}", 0, int(n) - 1) for i, n in enumerate(choices))
        trial.set_user_attr(ARCH, list(arch))
        return arch

    def warm_start(self, trial: Any, module: Any, arch: Sequence[int] | None = None) -> TransferReport:
        """Copy the nearest held trial's layers into ``module``; the lineage and the transfer become user
        attributes (``tc_model``, ``tc_parent``, ``tc_donor``, ``tc_layers``, ``tc_bytes``, ...,
        ``tc_resume_step`` when a pruned trial of the same architecture gave every layer)."""
        if arch is None:
            if ARCH not in trial.user_attrs:
                raise ValueError("warm_start needs the trial's architecture: call suggest_arch first or pass arch")
            arch = trial.user_attrs[ARCH]
        arch = tuple(int(a) for a in arch)
        trial.set_user_attr(ARCH, list(arch))
        study = trial.study
        finished = {t.number: t for t in study.get_trials(deepcopy=False, states=KEPT + (_State.FAIL,))}
        self._put_finished(study, finished)
        lmap = self.layer_map(arch) if self.layer_map is not None else None
        transfer = Transfer(uuid.uuid4().hex, None)
        parent = self._held_parent(study, arch, finished.values(), transfer)
        transfer.parent = parent.user_attrs[MODEL] if parent is not None else None
        warm(self.worker, module, arch, transfer, lmap)
        for key, value in transfer.metadata().items():
            trial.set_user_attr(key, value)
        report = transfer.report
        if (parent is not None and parent.state == _State.PRUNED and report.donor == transfer.parent
                and tuple(parent.user_attrs[ARCH]) == arch and report.layers == len(lmap or arch)
                and parent.intermediate_values):
            trial.set_user_attr(RESUME, max(parent.intermediate_values) + 1)
        with self._lock:
            self._pending[(study.study_name, trial.number)] = (module, arch, transfer)
            while len(self._pending) > self.max_pending:
                (name, number), _ = self._pending.popitem(last=False)
                self._warn("bound", f"{len(self._pending) + 1} models wait for unfinished trials (max_pending="
                                    f"{self.max_pending}); trial {number}'s model is dropped unstored")
        return report

    def tell(self, study: Any, trial: Any, values: float | Sequence[float] | None = None,
             state: Any = None) -> Any:
        """Ask-and-tell: ``study.tell(trial, values, state)``, then put the trial's model."""
        frozen = study.tell(trial, values, state)
        self(study, frozen)
        return frozen

    def __call__(self, study: Any, trial: Any) -> None:
        """Study callback: put a finished trial's warm-started model (a completed one scored by its value,
        higher is better; a pruned one by its last intermediate value)."""
        with self._lock:
            pending = self._pending.pop((study.study_name, trial.number), None)
        if pending is None or trial.state not in KEPT or (trial.state == _State.PRUNED and not self.keep_pruned):
            return
        module, arch, transfer = pending
        lmap = self.layer_map(arch) if self.layer_map is not None else None
        store(self.worker, module, arch, self._score(study, trial), transfer, lmap)
        with self.worker.lock:
            if self.worker.cache is not None:   # else this process could not open it (warned once)
                EvaluationNews(evaluations=1).tell(self.worker.cache)

    def _put_finished(self, study: Any, finished: Mapping[int, Any]) -> None:
        """Put the models of this study's trials that finished without ``tell`` or the callback."""
        with self._lock:
            done = [number for name, number in self._pending if name == study.study_name and number in finished]
        if done:
            self._warn("callback", f"trial(s) {done} finished without helper.tell or callbacks=[helper]; their "
                                   "models are put now, at the next warm start")
        for number in done:
            self(study, finished[number])

    def _held_parent(self, study: Any, arch: tuple[int, ...], trials: Any, transfer: Transfer) -> Any:
        """The nearest finished trial whose model the cache holds, or None (also when the cache fails: noted in
        ``transfer``)."""
        if self.worker.cache is None:   # this process could not open it (warned once): the warm start says so
            return None
        for t in ranked_trials(study, arch, trials, self.objective):
            other = tuple(t.user_attrs[ARCH])
            layers = self.layer_map(other) if self.layer_map is not None else None
            held = guarded(self.worker, transfer, "lookup", None, lambda cache: cache.best_donor(
                other, parent=t.user_attrs[MODEL], layer_map=layers) == t.user_attrs[MODEL])
            if held is None:
                return None
            if held:
                return t
        return None

    def _score(self, study: Any, trial: Any) -> float | None:
        """The cache score of a finished trial: higher is better."""
        values = trial.values
        if trial.state == _State.PRUNED:
            if not trial.intermediate_values or len(study.directions) != 1:
                return None
            values = [trial.intermediate_values[max(trial.intermediate_values)]]
        if values is None:
            return None
        if len(values) == 1 or self.objective is not None:
            i = 0 if len(values) == 1 else self.objective
            return _signed(study.directions[i], values[i])
        others = [t.values for t in study.get_trials(deepcopy=False, states=(_State.COMPLETE,))
                  if t.number != trial.number and t.values is not None]
        return -float(sum(dominates(study.directions, v, values) for v in others))

    def _warn(self, kind: str, message: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            warnings.warn(message, stacklevel=3)


def _signed(direction: Any, value: float) -> float:
    return value if direction == _optuna.study.StudyDirection.MAXIMIZE else -value


def dominates(directions: Sequence[Any], a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether values ``a`` Pareto-dominate ``b`` under the study's directions."""
    sa = [_signed(d, x) for d, x in zip(directions, a)]
    sb = [_signed(d, x) for d, x in zip(directions, b)]
    return all(x >= y for x, y in zip(sa, sb)) and any(x > y for x, y in zip(sa, sb))


def ranked_trials(study: Any, arch: Sequence[int], trials: Any = None, objective: int | None = None) -> list[Any]:
    """Finished trials with a model and an architecture of ``arch``'s length, nearest first: fewest
    differing positions, then the better value (in a multi-objective study the better Pareto rank, or
    ``objective``'s value), completed before pruned, then trial number."""
    arch = tuple(arch)
    if trials is None:
        trials = study.get_trials(deepcopy=False, states=KEPT)
    trials = [t for t in trials if t.state in KEPT and t.user_attrs.get(MODEL)
              and len(t.user_attrs.get(ARCH) or ()) == len(arch)]
    directions = study.directions

    def worth(t: Any) -> float:
        values = t.values if t.state == _State.COMPLETE else None
        if values is None:
            return float("-inf")
        if len(values) == 1 or objective is not None:
            i = 0 if len(values) == 1 else objective
            return _signed(directions[i], values[i])
        return -float(sum(dominates(directions, o.values, values) for o in trials
                          if o.state == _State.COMPLETE and o.values is not None))

    return sorted(trials, key=lambda t: (sum(a != b for a, b in zip(arch, t.user_attrs[ARCH])), -worth(t),
                                         t.state != _State.COMPLETE, t.number))


def nearest_trial(study: Any, arch: Sequence[int], objective: int | None = None) -> str | None:
    """Model id of the finished trial nearest ``arch`` (see ``ranked_trials``), or None."""
    ranked = ranked_trials(study, arch, objective=objective)
    return ranked[0].user_attrs[MODEL] if ranked else None
