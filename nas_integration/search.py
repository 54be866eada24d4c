"""The search loop: regularized evolution over an executor, one trace record per evaluation, a summary.

Asynchronous mode hands a free worker a new child at once, bred from the population of evaluations
finished so far. Batch mode breeds a generation of ``workers`` children from one population and adds
them (in issue order) when the whole generation is done. A failed job (worker died, timed out, raised) is
re-queued ``retries`` times, then dropped; both are logged and listed in the summary.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from tensorcache.sizes import parse_size
from tensorcache.trace import TraceWriter

from .data import DATASETS, nb201_table
from .evaluators import Evaluator, make_evaluator
from .evaluators.tabular import DATASETS as TABLE_DATASETS
from .evolution import Candidate, RegularizedEvolution
from .locality import LocalityTracker
from .executors import (
    CacheSettings,
    Executor,
    MPIExecutor,
    Outcome,
    ProcessExecutor,
    SerialExecutor,
    SimulatedExecutor,
    merge_stats,
    serve_mpi,
)
from .spaces import get_space

log = logging.getLogger("nas_integration")

# per-evaluator defaults for settings left as None
DEFAULTS: dict[str, dict[str, Any]] = {
    "tabular": {"space": "nb201", "dataset": "cifar10", "evals": 1000, "population": 100, "sample": 25,
                "epochs": 200},
    "train": {"space": "attn", "dataset": "mnist-small", "evals": 24, "population": 8, "sample": 3, "epochs": 1,
              "train_subset": 5000},
}


def evaluator_datasets(evaluator: str) -> tuple[str, ...]:
    """The dataset names an evaluator takes, as ``--help`` and the errors spell them."""
    return tuple(TABLE_DATASETS) if evaluator == "tabular" else DATASETS


@dataclass
class SearchSettings:
    """Every knob of a search; ``None`` means the evaluator's default (see ``DEFAULTS`` and ``resolved``)."""

    out: str
    evaluator: str = "train"
    space: str | None = None
    dataset: str | None = None
    data_dir: str | None = None
    table: str | None = None
    evals: int | None = None
    population: int | None = None
    sample: int | None = None
    mode: str = "async"
    mutation_bias: float = 0.0
    seed: int = 0
    workers: int = 1
    executor: str = "serial"
    job_timeout: float | None = None
    retries: int = 1
    cache: bool = True
    policy: str = "donor-window"
    memory: str = "2GB"
    device_memory: str = "0"  # GPU-resident tier ahead of the memory tier, on the training device
    disk: str | None = None  # None: out/cache.lmdb; "none": no disk tier
    disk_capacity: str = "20GB"
    redis: str | None = None
    redis_capacity: str = "100GB"
    redis_required: bool = False  # an unreachable --redis is an error, not a search without sharing
    transfer: str = "prefix"
    namespace: str | None = None
    payload_scale: float = 1 / 64
    time_scale: float = 0.0
    window: int | None = None  # donor-window W in evaluations (default 4 x population: bench/policy_compare sweep)
    locality_wait: float | None = None  # tabular: reserve a busy worker holding the donor if free within this
    worker_memory: str | None = None  # tabular: each worker's memory as placement models it (default: --memory)
    epochs: int | None = None
    batch_size: int = 128
    lr: float = 1e-3
    amp: bool = False
    train_subset: int | None = None  # 0 = the whole training set
    device: str = "auto"
    run_id: str | None = None
    overwrite: bool = False

    def resolved(self) -> SearchSettings:
        """A copy with every None default filled in and the values checked (resolving twice changes nothing)."""
        if self.evaluator not in DEFAULTS:
            raise ValueError(f"unknown evaluator {self.evaluator!r}; expected one of {sorted(DEFAULTS)}")
        values = asdict(self)
        for key, default in DEFAULTS[self.evaluator].items():
            if values[key] is None:
                values[key] = default
        if self.evaluator == "tabular" and values["table"] is None:
            values["table"] = os.fspath(nb201_table())
        if values["disk"] is None:
            values["disk"] = os.path.join(self.out, "cache.lmdb")
        if values["namespace"] is None:
            values["namespace"] = f"{get_space(values['space']).name}-{self.evaluator}-{values['dataset']}"
        if values["run_id"] is None:
            values["run_id"] = uuid.uuid4().hex[:8]
        if values["window"] is None:
            values["window"] = 4 * values["population"]
        s = SearchSettings(**values)
        names = evaluator_datasets(s.evaluator)
        checks = [(s.dataset in names, f"{s.evaluator} evaluator: unknown dataset {s.dataset!r}; expected one of "
                                       f"{', '.join(names)}"),
                  (s.redis is not None or not s.redis_required, "--redis-required needs --redis URL"),
                  (s.mode in ("async", "batch"), f"mode must be 'async' or 'batch', got {s.mode!r}"),
                  (s.executor in ("serial", "process", "mpi"),
                   f"executor must be serial, process or mpi, got {s.executor!r}"),
                  (s.transfer in ("prefix", "compatible"), f"transfer must be prefix or compatible, got {s.transfer!r}"),
                  (s.evals >= 1, f"evals must be >= 1, got {s.evals}"),
                  (s.workers >= 1, f"workers must be >= 1, got {s.workers}"),
                  (s.retries >= 0, f"retries must be >= 0, got {s.retries}"),
                  (s.population >= 1, f"population must be >= 1, got {s.population}"),
                  (s.window >= 1, f"window must be >= 1 evaluations, got {s.window}"),
                  (1 <= s.sample <= s.population, f"sample must be in 1..population ({s.population}), got {s.sample}"),
                  (s.locality_wait is None or s.evaluator == "tabular",
                   "--locality-wait needs the tabular evaluator (it reports which tier served each transfer)"),
                  (s.locality_wait is None or s.executor == "serial" or not s.cache
                   or s.disk.lower() not in ("", "none") or s.redis,
                   "--locality-wait with process or mpi workers needs a shared tier (--disk or --redis): the "
                   "scheduler sees the workers' models through it"),
                  (s.evaluator == "tabular" or s.executor != "serial" or s.workers == 1,
                   (f"--workers {s.workers} needs --executor process or mpi: the serial executor trains one model "
                    "at a time (only the tabular evaluator simulates several workers in one process)"))]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        sizes = ((s.memory, "memory size"), (s.device_memory, "device memory size"), (s.disk_capacity, "disk capacity"),
                 (s.redis_capacity, "redis capacity"), (s.worker_memory, "worker memory"))
        for value, what in sizes:  # named here, before any worker, tier or scheduler parses them
            if value is not None:
                parse_size(value, what=what)
        return s

    def cache_settings(self, scale: float) -> CacheSettings | None:
        if not self.cache:
            return None
        disk = None if self.disk.lower() in ("", "none") else self.disk
        return CacheSettings(namespace=self.namespace, memory=self.memory, disk=disk,
                             disk_capacity=self.disk_capacity, redis=self.redis,
                             redis_capacity=self.redis_capacity, redis_required=self.redis_required, policy=self.policy, scale=scale,
                             window=self.window, device_memory=self.device_memory, device=_cache_device(self.device))

    def make_evaluator(self, threads: int | None = None) -> Evaluator:
        common = {"space": self.space, "dataset": self.dataset, "epochs": self.epochs, "transfer": self.transfer,
                  "namespace": self.namespace, "seed": self.seed}
        if self.evaluator == "tabular":
            return make_evaluator("tabular", table=self.table, payload_scale=self.payload_scale,
                                  time_scale=self.time_scale, **common)
        return make_evaluator("train", data_dir=self.data_dir, batch_size=self.batch_size, lr=self.lr, amp=self.amp,
                              train_subset=self.train_subset or None, device=self.device, threads=threads, **common)


@dataclass
class Tally:
    """Running totals for the summary, fed one trace record at a time."""

    evaluations: int = 0
    hits: int = 0
    transfer_bytes: int = 0
    transfer_layers: int = 0
    cache_s: float = 0.0
    train_s: float = 0.0
    best: dict[str, Any] | None = None

    def add(self, record: dict[str, Any]) -> None:
        self.evaluations += 1
        self.hits += record["transfer_layers"] > 0
        self.transfer_bytes += record["transfer_bytes"]
        self.transfer_layers += record["transfer_layers"]
        self.cache_s += record["cache_s"]
        self.train_s += record["train_s"]
        if self.best is None or record["score"] > self.best["score"]:
            self.best = record

    @property
    def hit_ratio(self) -> float:
        return self.hits / self.evaluations if self.evaluations else 0.0


Progress = Callable[[Tally, int], None]


def _record(outcome: Outcome) -> dict[str, Any]:
    c, r = outcome.candidate, outcome.result
    return {"model_id": c.model_id, "parent_id": c.parent_id, "donor_id": r.donor_id, "worker": outcome.worker,
            "t_start": r.t_start, "t_end": r.t_end, "arch": list(c.arch), "mutation_pos": c.mutation_pos,
            "score": r.score, "test": r.test, "transfer_layers": r.transfer_layers,
            "transfer_bytes": r.transfer_bytes, "tier": r.tier, "tier_bytes": r.tier_bytes,
            "cache_s": r.cache_s, "train_s": r.train_s,
            "layer_bytes": r.layer_bytes, "layer_keys": r.layer_keys, "layer_deps": r.layer_deps, **r.extra}


def evolve(evo: RegularizedEvolution, executor: Executor, evals: int, mode: str, retries: int,
           trace: TraceWriter, tally: Tally, on_record: Progress | None = None) -> list[dict[str, Any]]:
    """Run the search to ``evals`` issued children; returns the failures (each re-queued or dropped)."""
    batch = mode == "batch"
    retry: deque[Candidate] = deque()
    attempts: dict[int, int] = {}
    failures: list[dict[str, Any]] = []
    generation: list[tuple[Candidate, float]] = []
    gen_left = executor.workers
    outstanding = streak = 0
    while True:
        while executor.free() and (retry or (evo.issued < evals and (not batch or gen_left > 0))):
            if retry:
                executor.submit(retry.popleft())
            else:
                executor.submit(evo.ask())
                gen_left -= 1
            outstanding += 1
        if outstanding == 0:
            if batch and generation:
                generation.sort(key=lambda pair: pair[0].index)
                for cand, score in generation:
                    evo.tell(cand, score)
                for cand, _ in generation:
                    executor.observe(cand.mutation_pos, evo.members(), evo.population_size, evo.sample_size)
                generation, gen_left = [], executor.workers
                continue
            if evo.issued >= evals and not retry:
                return failures
            raise RuntimeError("no worker is left to run the remaining evaluations")
        outcome = executor.next_outcome()
        outstanding -= 1
        cand = outcome.candidate
        if outcome.error is not None:
            attempts[cand.index] = attempts.get(cand.index, 0) + 1
            action = "requeued" if attempts[cand.index] <= retries else "dropped"
            if action == "requeued":
                retry.append(cand)
            reason = outcome.error.strip().splitlines()[-1]
            log.warning("job %s on worker %d failed (%s); %s", cand.model_id, outcome.worker, reason, action)
            failures.append({"model_id": cand.model_id, "worker": outcome.worker, "error": outcome.error,
                             "action": action})
            streak += 1
            if streak > 2 * executor.workers + 2:
                raise RuntimeError(f"{streak} evaluations failed in a row; the last error:\n{outcome.error}")
            continue
        streak = 0
        record = _record(outcome)
        trace.write(record)
        tally.add(record)
        if on_record is not None:
            on_record(tally, sum(f["action"] == "dropped" for f in failures))
        if batch:
            generation.append((cand, outcome.result.score))
        else:
            evo.tell(cand, outcome.result.score)
            executor.observe(cand.mutation_pos, evo.members(), evo.population_size, evo.sample_size)


def _cache_device(device: str) -> str:
    """The device tier's device: the training device, with "auto" resolved as training resolves it."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _gpu_ids() -> list[str]:
    """Visible CUDA device ids when there are several (one per worker process), else []."""
    import torch

    count = torch.cuda.device_count()
    if count < 2:
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return (visible.split(",") if visible else [str(i) for i in range(count)])[:count]


def _mpi_local() -> tuple[Any, int, int]:
    """COMM_WORLD, this rank's index on its node, and the number of ranks on the node (collective: call once)."""
    from mpi4py import MPI

    node = MPI.COMM_WORLD.Split_type(MPI.COMM_TYPE_SHARED)
    return MPI.COMM_WORLD, node.Get_rank(), node.Get_size()


def _check_redis(settings: CacheSettings) -> None:
    """Raise ConnectionError now, before any output or worker, when the required Redis tier is unreachable."""
    from tensorcache.tiers.redis import RedisTier

    RedisTier(settings.redis, 1, settings.namespace, required=True).close()


def _prepare_out(s: SearchSettings) -> tuple[str, str]:
    os.makedirs(s.out, exist_ok=True)
    trace_path, summary_path = os.path.join(s.out, "trace.jsonl"), os.path.join(s.out, "summary.json")
    if os.path.exists(trace_path):
        if not s.overwrite:
            raise FileExistsError(f"{trace_path} already exists; choose another --out or pass --overwrite")
        for path in (trace_path, summary_path):
            if os.path.exists(path):
                os.remove(path)
        if s.disk == os.path.join(s.out, "cache.lmdb") and os.path.isdir(s.disk):
            shutil.rmtree(s.disk)
    return trace_path, summary_path


def run_search(settings: SearchSettings, on_record: Progress | None = None) -> dict[str, Any] | None:
    """Run a whole search; write ``out/trace.jsonl`` and ``out/summary.json``; return the summary.

    ``on_record(tally, dropped)`` is called after every finished evaluation (progress display).
    Under ``--executor mpi`` every rank calls this: rank 0 schedules and returns the summary, the other
    ranks evaluate and return None.
    """
    s = settings.resolved()
    threads, comm = None, None
    if s.executor == "mpi":
        comm, local_rank, local_size = _mpi_local()
        threads = max(1, (os.cpu_count() or 1) // local_size)
        if comm.Get_rank() != 0:
            evaluator = s.make_evaluator(threads)
            if s.evaluator == "train" and (gpus := _gpu_ids()):
                os.environ["CUDA_VISIBLE_DEVICES"] = gpus[local_rank % len(gpus)]
            comm.barrier()  # rank 0 has checked the settings and prepared the output folder
            serve_mpi(comm, evaluator, s.cache_settings(evaluator.payload_scale))
            return None
    elif s.executor == "process":
        threads = max(1, (os.cpu_count() or 1) // s.workers)
    evaluator = s.make_evaluator(threads)
    evaluator.check()
    cache_settings = s.cache_settings(evaluator.payload_scale)
    if cache_settings is not None and s.redis_required:
        _check_redis(cache_settings)
    if s.mutation_bias:
        log.warning("mutation bias %g: position i is mutated with weight (i+1)^%g, not uniformly",
                    s.mutation_bias, s.mutation_bias)
    created = not os.path.exists(s.out)
    trace_path, summary_path = _prepare_out(s)
    try:
        if comm is not None:
            comm.barrier()
        executor = _make_executor(s, evaluator, cache_settings, comm)
    except BaseException:
        if created:  # a run that never started leaves no output folder behind
            shutil.rmtree(s.out, ignore_errors=True)
        raise
    space = get_space(s.space)
    evo = RegularizedEvolution(space, s.population, s.sample, seed=s.seed, mutation_bias=s.mutation_bias,
                               id_prefix=f"{s.run_id}-")
    tally = Tally()
    t0 = time.time()
    try:
        with TraceWriter(trace_path) as trace:
            failures = evolve(evo, executor, s.evals, s.mode, s.retries, trace, tally, on_record)
    finally:
        cache_stats = executor.close()
    best = tally.best
    summary = {
        "run_id": s.run_id, "settings": asdict(s), "evaluator": evaluator.describe(),
        "evaluations": tally.evaluations, "issued": evo.issued,
        "dropped": sum(f["action"] == "dropped" for f in failures), "failures": failures,
        "workers": executor.workers, "executor": s.executor, "mode": s.mode, "clock": executor.clock,
        "wall_s": time.time() - t0, "search_s": executor.now(),
        "best": None if best is None else {"model_id": best["model_id"], "arch": best["arch"],
                                           "native": space.decode(best["arch"]), "score": best["score"],
                                           "test": best["test"]},
        "hit_ratio": tally.hit_ratio, "transfer_bytes": tally.transfer_bytes,
        "transfer_layers": tally.transfer_layers, "cache_s": tally.cache_s, "train_s": tally.train_s,
        "cache": merge_stats(cache_stats) if cache_stats else None,
        "locality": executor.locality_summary(),
        "trace": trace_path,
    }
    with open(summary_path, "w") as f:
        json.dump(summary, f, indent=2, default=str)
    executor.release()
    return summary


def _make_executor(s: SearchSettings, evaluator: Evaluator, cache_settings: CacheSettings | None,
                   comm: Any = None) -> Executor:
    locality = None
    if s.evaluator == "tabular":  # only the tabular evaluator reports which tier served each byte
        workers = comm.Get_size() - 1 if s.executor == "mpi" else s.workers
        locality = LocalityTracker(workers, parse_size(s.worker_memory or s.memory), s.locality_wait)
    if s.executor == "serial":
        cache = cache_settings.open() if cache_settings is not None else None
        if locality is not None:
            return SimulatedExecutor(evaluator, cache, s.workers, locality)
        return SerialExecutor(evaluator, cache)
    if s.executor == "process":
        gpus = _gpu_ids() if s.evaluator == "train" else []
        return ProcessExecutor(evaluator, cache_settings, s.workers, gpus=gpus, job_timeout=s.job_timeout,
                               locality=locality)
    return MPIExecutor(comm, job_timeout=s.job_timeout, locality=locality, evaluator=evaluator,
                       cache_settings=cache_settings)
