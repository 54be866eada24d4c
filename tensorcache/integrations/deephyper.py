"""Warm starts inside a DeepHyper search: run-function wrappers, lineage under regularized evolution, and
a callback that feeds the evolution-aware policy.

* ``warm_started(run, cache, layer_map, arch, problem)`` takes the user's own ``run(job)`` unchanged: the
  first torch module the job calls that holds the layer map's tensors is warm-started before that call
  and put with the objective when ``run`` returns; the architecture is named once (a prefix of the
  problem's hyperparameter names), and the wrapper has the kind of ``run`` (``async`` or not), so every
  evaluator method but ``ray`` takes it as it is.
* ``WarmStartRun(build, train, arch_params, ...)`` turns "build a torch model from the job, train it,
  return the objective" into a run function that warm-starts the model before ``train`` and puts it
  after; the transfer lands in ``results.csv`` as ``m:tc_*`` columns. Each worker process opens its
  cache once (``worker.worker_cache``), whatever the evaluator method.
* ``LineageEvolution`` is DeepHyper's ``RegularizedEvolution`` that also records, in each child's
  parameters, its own model id (``tc_id``), the id of the parent the tournament picked (``tc_parent``)
  and the mutated hyperparameter (``tc_mutated``), so lookups follow the real lineage.
* ``EvolutionFeed`` is an evaluator callback that sends every job the evaluation news
  (``tensorcache.news.EvaluationNews``: evaluations finished, where their mutations landed, the population)
  through the run function's keyword arguments; the worker's cache hears what it has not heard yet.
"""
from __future__ import annotations

import functools
import inspect
import threading
import uuid
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from numbers import Real
from typing import Any

from ..layers import LayerMap
from ..news import EvaluationNews
from . import require
from .worker import CacheOptions, Transfer, cache_settings, store, text_id, warm, worker_cache, worker_name

_hpo = require("deephyper.hpo", "tensorcache.integrations.deephyper")
_callback = require("deephyper.evaluator.callback", "tensorcache.integrations.deephyper")

MODEL_ID, PARENT, MUTATED = "tc_id", "tc_parent", "tc_mutated"
LINEAGE = (MODEL_ID, PARENT, MUTATED)
MUTATION = "tc_mutation"    # job metadata: the architecture position the job's mutation changed ("" for none)
FEED = "tensorcache_feed"   # run-function keyword that carries the evaluation news to workers
Feed = tuple[tuple[tuple[int, EvaluationNews], ...], EvaluationNews]  # (numbered news of finished evaluations, the population now)


class _Member(dict):
    """A population config that knows its model id and reports when the tournament copies it as a parent."""

    def __init__(self, config: Mapping[str, Any], model_id: str | None, on_copy: Callable[[_Member], None]) -> None:
        super().__init__(config)
        self.model_id = model_id
        self._on_copy = on_copy

    def copy(self) -> dict[str, Any]:
        self._on_copy(self)
        return dict(self)


class LineageEvolution(_hpo.RegularizedEvolution):
    """RegularizedEvolution whose children name their parent (``tc_parent``) and their own id (``tc_id``).

    Regularized evolution copies the tournament winner and mutates the copy; population members here
    record that copy, so the parent is the one the tournament picked, not a guess. Only the public
    ``ask``/``tell`` are extended; the population's ids and objectives are kept here, as DeepHyper keeps
    its population (the last ``population_size`` results that are not failures)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._copied: list[_Member] = []
        self._members: deque[tuple[str | None, float]] = deque(maxlen=self.population_size)

    def ask(self, n: int = 1) -> list[dict[str, Any]]:
        """DeepHyper's children, each with its id, its parent's id and the mutated hyperparameter."""
        self._copied = []
        evolving = len(self._members) >= self.population_size   # else RE samples at random
        children = super().ask(n)
        evolved = evolving and len(self._copied) == len(children)
        if evolving and not evolved:
            warnings.warn(f"LineageEvolution saw {len(self._copied)} parent copies for {len(children)} children; "
                          "this DeepHyper version evolves differently, so parents are not recorded", stacklevel=2)
        for i, child in enumerate(children):
            parent = self._copied[i] if evolved else None
            changed = [] if parent is None else [k for k, v in parent.items() if child.get(k) != v]
            child[MODEL_ID] = uuid.uuid4().hex
            child[PARENT] = (parent.model_id or "") if parent is not None else ""
            child[MUTATED] = changed[0] if changed else ""
        return children

    def tell(self, results: list[tuple[dict[str, Any], Any]]) -> None:
        """DeepHyper's tell, over population members that note when the tournament copies them."""
        tagged = []
        for config, objective in results:
            config = dict(config)
            model_id = config.get(MODEL_ID) or None
            for key in LINEAGE:
                config.pop(key, None)
            tagged.append((_Member(config, model_id, self._note_copy), objective))
            if not isinstance(objective, str):   # DeepHyper leaves failures out of the population
                self._members.append((model_id, objective))
        super().tell(tagged)

    def _note_copy(self, member: _Member) -> None:
        self._copied.append(member)

    def members(self) -> list[tuple[str, float]]:
        """The population as (model id, objective), oldest first."""
        return [(m, float(obj)) for m, obj in self._members if m]


class EvolutionFeed(_callback.Callback):
    """Evaluator callback: every started job carries the evaluation news its worker's cache may not have
    heard: the news of each finished evaluation (numbered; the last ``keep``), and the population now.

    Pass ``method_kwargs=feed.method_kwargs(...)`` to ``Evaluator.create``: it adds the callback and the
    run-function keyword through which the news travels (a dict the callback keeps current). As under
    ``run_search``, a mutation is news when its evaluation finishes (the run function reports its position)."""

    def __init__(self, keep: int = 1024, **old: int) -> None:
        if "keep_mutations" in old:
            warnings.warn("EvolutionFeed(keep_mutations=...) is now keep=...", DeprecationWarning, stacklevel=2)
            keep = old.pop("keep_mutations")
        if old:
            raise TypeError(f"EvolutionFeed got unexpected keyword arguments {sorted(old)}")
        self._kwargs: dict[str, Any] = {}
        self._finished = 0
        self._news: deque[tuple[int, EvaluationNews]] = deque(maxlen=keep)

    def method_kwargs(self, **kwargs: Any) -> dict[str, Any]:
        """``Evaluator.create`` method kwargs with this callback and its run-function keyword added."""
        out = dict(kwargs)
        out["callbacks"] = [*out.get("callbacks", []), self]
        self._kwargs.update(out.get("run_function_kwargs", {}))
        out["run_function_kwargs"] = self._kwargs
        return out

    def on_launch(self, job: Any) -> None:
        search = job.context.search
        members = search.members() if isinstance(search, LineageEvolution) else []
        now = EvaluationNews(population=list(members) if members else None,
                             population_size=getattr(search, "population_size", 0),
                             sample_size=getattr(search, "sample_size", 0))
        self._kwargs[FEED] = (tuple(self._news), now)

    def on_done(self, job: Any) -> None:
        position = job.metadata.get(MUTATION)
        self._finished += 1
        mutation = position if isinstance(position, int) and not isinstance(position, bool) else None
        self._news.append((self._finished, EvaluationNews.of(mutation, None, 0, 0)))

    def on_done_other(self, job: Any) -> None:
        self.on_done(job)


class _Run:
    """What the two run-function forms share: the architecture of a job, the evolution's news told to the
    worker's cache, and the job's output with the transfer fields added."""

    def __init__(self, arch_params: Sequence[str], cache: CacheOptions,
                 layer_map: Callable[[tuple[int, ...]], LayerMap] | None) -> None:
        if isinstance(arch_params, str) or not arch_params:
            raise ValueError(f"arch_params must name the hyperparameters of the architecture, got {arch_params!r}")
        self.arch_params = tuple(arch_params)
        self.cache = cache_settings(cache)
        self.layer_map = layer_map

    def arch(self, params: Mapping[str, Any]) -> tuple[int, ...]:
        """The architecture sequence of a job's parameters; ValueError naming a missing or non-int one."""
        out = []
        for name in self.arch_params:
            if name not in params:
                raise ValueError(f"architecture hyperparameter {name!r} is missing from the job's parameters")
            value = params[name]
            if isinstance(value, bool) or not isinstance(value, Real) or int(value) != value:
                raise ValueError(f"architecture hyperparameter {name!r} = {value!r} is not an int")
            out.append(int(value))
        return tuple(out)

    def _start(self, job: Any, kwargs: dict[str, Any]) -> tuple[Any, tuple[int, ...], LayerMap | None, Transfer]:
        """The worker's cache (told the news ``kwargs`` carries), the job's architecture, layer map and transfer."""
        feed = kwargs.pop(FEED, None)
        worker = worker_cache(self.cache)
        if feed is not None:
            self._tell(worker, feed)
        params = job.parameters
        arch = self.arch(params)
        lmap = self.layer_map(arch) if self.layer_map is not None else None
        transfer = Transfer(str(params.get(MODEL_ID) or uuid.uuid4().hex), text_id(params.get(PARENT)))
        mutated = params.get(MUTATED)
        transfer.mutation = self.arch_params.index(mutated) if mutated in self.arch_params else None
        return worker, arch, lmap, transfer

    def _finish(self, worker: Any, module: Any, arch: tuple[int, ...], lmap: LayerMap | None, transfer: Transfer,
                output: Any) -> dict[str, Any]:
        """Put the trained ``module`` (when the objective is a number) and return DeepHyper's output form."""
        objective, metadata = (output.get("objective"), dict(output.get("metadata") or {})) \
            if isinstance(output, Mapping) else (output, {})
        stored = 0
        if module is not None and isinstance(objective, Real) and not isinstance(objective, bool):
            stored = store(worker, module, arch, float(objective), transfer, lmap)
        metadata.update(transfer.metadata())
        metadata.update({"tc_worker": worker_name(), "tc_worker_jobs": stored,
                         MUTATION: "" if transfer.mutation is None else transfer.mutation})
        return {"objective": objective, "metadata": metadata}

    @staticmethod
    def _tell(worker: Any, feed: Feed) -> None:
        """Tell the worker's cache the news of evaluations it has not heard of (those too old to be kept
        only as finished), then the population now."""
        finished, now = feed
        news = EvaluationNews()
        with worker.lock:
            if worker.cache is None:   # this process could not open it (warned once); its jobs run without it
                return
            if finished and finished[0][0] > worker.heard + 1:
                news.evaluations = finished[0][0] - worker.heard - 1
            for number, done in finished:
                if number > worker.heard:
                    news.extend(done)
                    worker.heard = number
            news.extend(now)
            news.tell(worker.cache)


class WarmStartRun(_Run):
    """A DeepHyper run function: build, warm-start, ``train``, put; transfer fields in the job's metadata.

    ``build(job) -> torch module``; ``train(job, module, **kwargs)`` returns the objective, or DeepHyper's
    ``{"objective": ..., "metadata": {...}}``. The architecture is ``job.parameters[name]`` for each name of
    ``arch_params``, in order; ``layer_map(arch)`` gives its layer map (e.g. a search space's
    ``layer_map``); ``cache`` holds ``TensorCache`` keyword arguments (or is a ``CacheConfig`` or a
    ``tensorcache://`` URL), checked here (``worker.cache_settings``). Objects given must pickle for
    process, MPI and Ray evaluators (module-level functions, ``functools.partial``, search spaces).
    """

    def __init__(self, build: Callable[[Any], Any], train: Callable[..., Any], arch_params: Sequence[str],
                 cache: CacheOptions, layer_map: Callable[[tuple[int, ...]], LayerMap] | None = None) -> None:
        super().__init__(arch_params, cache, layer_map)
        self.build, self.train = build, train

    def __call__(self, job: Any, **kwargs: Any) -> dict[str, Any]:
        worker, arch, lmap, transfer = self._start(job, kwargs)
        module = self.build(job)
        warm(worker, module, arch, transfer, lmap)
        return self._finish(worker, module, arch, lmap, transfer, self.train(job, module, **kwargs))

    def for_evaluator(self, method: str) -> Callable[..., Any]:
        """This run function in the form ``Evaluator.create(..., method=method)`` accepts: ``serial`` wants
        ``async def``, ``ray`` a plain function; the others take this object (it pickles by value)."""
        if method == "serial":
            async def coroutine(job: Any, **kwargs: Any) -> dict[str, Any]:
                return self(job, **kwargs)

            return coroutine
        if method == "ray":
            def function(job: Any, **kwargs: Any) -> dict[str, Any]:
                return self(job, **kwargs)

            return function
        return self


class _Capture:
    """The job a context runs: the state-dict names its model must have, and the model once seen."""

    def __init__(self, params: frozenset[str], on_model: Callable[[Any], None]) -> None:
        self.params, self.on_model, self.module = params, on_model, None


_JOB: ContextVar[_Capture | None] = ContextVar("tensorcache_deephyper_job", default=None)
_HOOK_LOCK = threading.Lock()
_HOOK: list[Any] = [None, 0]   # the global forward pre-hook's handle, and how many jobs run under it


def _first_forward(module: Any, args: Any) -> None:
    """Global forward pre-hook: the first module called in a job that holds the layer map's tensors is the
    job's model; it is warm-started before that first forward."""
    capture = _JOB.get()
    if capture is None or capture.module is not None:
        return
    if capture.params <= set(module.state_dict(keep_vars=True)):
        capture.module = module
        capture.on_model(module)


@contextmanager
def _watching(capture: _Capture) -> Iterator[None]:
    """Run a job's code with the hook watching for its model (the hook is installed while any job runs)."""
    from torch.nn.modules.module import register_module_forward_pre_hook

    with _HOOK_LOCK:
        if _HOOK[1] == 0:
            _HOOK[0] = register_module_forward_pre_hook(_first_forward)
        _HOOK[1] += 1
    token = _JOB.set(capture)
    try:
        yield
    finally:
        _JOB.reset(token)
        with _HOOK_LOCK:
            _HOOK[1] -= 1
            if _HOOK[1] == 0:
                _HOOK[0].remove()


class WarmStarted(_Run):
    """The user's own ``run(job)``, unchanged, warm-started: the first torch module the job calls that holds
    the tensors of the job's layer map is its model; it is warm-started from the cache (the job's parent
    preferred) before that first call and put with the objective when ``run`` returns. ``arch`` names the
    architecture once: a list of hyperparameter names, or the prefix of the names ``<prefix>0``,
    ``<prefix>1``, ... of ``problem`` (an ``HpProblem``)."""

    def __init__(self, run: Callable[..., Any], cache: CacheOptions,
                 layer_map: Callable[[tuple[int, ...]], LayerMap], arch: str | Sequence[str],
                 problem: Any = None) -> None:
        super().__init__(arch_names(arch, problem), cache, layer_map)
        self.run = run

    @contextmanager
    def job(self, job: Any, kwargs: dict[str, Any]) -> Iterator[list[Any]]:
        """Around one call of ``run``: yields a list to put ``run``'s output in, and turns it into DeepHyper's
        output form (with the transfer fields) in place."""
        worker, arch, lmap, transfer = self._start(job, kwargs)
        params = frozenset(p for layer in lmap.layers for p in layer.params)
        capture = _Capture(params, lambda module: warm(worker, module, arch, transfer, lmap))
        out: list[Any] = []
        with _watching(capture):
            yield out
        out[0] = self._finish(worker, capture.module, arch, lmap, transfer, out[0])


def warm_started(run: Callable[..., Any], cache: CacheOptions, layer_map: Callable[[tuple[int, ...]], LayerMap],
                 arch: str | Sequence[str], problem: Any = None) -> Callable[..., Any]:
    """``run`` (the user's unchanged run function) warm-started by the cache (see ``WarmStarted``), of the
    same kind as ``run``: an ``async`` function for an ``async`` ``run`` (the serial evaluator), a plain one
    otherwise; either pickles for process, MPI and loky workers. Give it a new name (``run_warm =
    warm_started(run, ...)``) rather than decorating ``run`` in a module that workers import: they find
    ``run`` by its name."""
    wrapped = WarmStarted(run, cache, layer_map, arch, problem)
    return functools.partial(_run_async if inspect.iscoroutinefunction(run) else _run_plain, wrapped)


def _run_plain(wrapped: WarmStarted, job: Any, **kwargs: Any) -> dict[str, Any]:
    with wrapped.job(job, kwargs) as out:
        out.append(wrapped.run(job, **kwargs))
    return out[0]


async def _run_async(wrapped: WarmStarted, job: Any, **kwargs: Any) -> dict[str, Any]:
    with wrapped.job(job, kwargs) as out:
        out.append(await wrapped.run(job, **kwargs))
    return out[0]


def arch_names(arch: str | Sequence[str], problem: Any = None) -> tuple[str, ...]:
    """The architecture's hyperparameter names: ``arch`` itself, or, for a prefix, ``problem``'s names
    ``<prefix><i>`` ordered by ``i``; ValueError when they are missing or not integers of ``problem``."""
    if isinstance(arch, str):
        if problem is None:
            raise ValueError(f"arch={arch!r} is a prefix: give the problem whose hyperparameters it starts")
        found = [(int(n[len(arch):]), n) for n in problem.hyperparameter_names
                 if n.startswith(arch) and n[len(arch):].isdigit()]
        names = tuple(n for _, n in sorted(found))
        if not names:
            raise ValueError(f"the problem has no hyperparameter named {arch!r} + a number; it has "
                             f"{problem.hyperparameter_names}")
    else:
        names = tuple(arch)
    if problem is not None:
        for name in names:
            hp = problem.space[name] if name in problem.hyperparameter_names else None
            if hp is None or not type(hp).__name__.endswith("IntegerHyperparameter"):
                raise ValueError(f"architecture hyperparameter {name!r} is not an integer hyperparameter of "
                                 f"the problem")
    return names
