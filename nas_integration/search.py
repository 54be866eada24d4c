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
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from tensorcache.config import CacheConfig
from tensorcache.events import ModelDescribed
from tensorcache.sizes import parse_size
from tensorcache.metrics import is_hit
from tensorcache.trace import TraceRecord, TraceWriter

from .evaluators import Evaluator
from .evolution import Candidate, RegularizedEvolution
from .executors import (
    Executor,
    MPIExecutor,
    Outcome,
    ProcessExecutor,
    SerialExecutor,
    SimulatedExecutor,
    merge_stats,
    serve_mpi,
)
from .locality import LocalityTracker
from .settings import DEFAULTS, SearchSettings, evaluator_datasets
from .spaces import get_space

log = logging.getLogger("nas_integration")

__all__ = ["DEFAULTS", "SearchSettings", "Tally", "evaluator_datasets", "evolve", "run_search"]  # settings re-exported

@dataclass
class Tally:
    """Running totals for the summary, fed one trace record at a time (hits and revisits as
    ``tensorcache.metrics`` defines them)."""

    mode: str = "prefix"  # the transfer mode, which decides which served layers a hit counts
    evaluations: int = 0
    hits: int = 0
    revisits: int = 0
    transfer_bytes: int = 0  # every byte served
    revisit_bytes: int = 0  # of which served to revisits
    transfer_layers: int = 0
    cache_s: float = 0.0
    train_s: float = 0.0
    best: dict[str, Any] | None = None  # the best record so far, as its trace line

    def add(self, record: TraceRecord) -> None:
        values = record.to_dict()
        self.evaluations += 1
        self.hits += is_hit(values, self.mode)
        self.revisits += bool(record.revisit)
        self.transfer_bytes += record.transfer_bytes
        self.revisit_bytes += record.transfer_bytes if record.revisit else 0
        self.transfer_layers += record.transfer_layers
        self.cache_s += record.cache_s
        self.train_s += record.train_s
        if self.best is None or record.score > self.best["score"]:
            self.best = values

    @property
    def hit_ratio(self) -> float:
        return self.hits / self.evaluations if self.evaluations else 0.0


Progress = Callable[[Tally, int], None]


def _record(outcome: Outcome, revisit: bool) -> TraceRecord:
    """The outcome's trace record with what only the search knows: the worker and whether it revisits."""
    record = outcome.result
    record.worker = outcome.worker
    record.revisit = revisit
    return record


class Revisits:
    """Which children repeat an architecture issued before, and (``reuse``) the earlier score to return
    for one instead of training it again; every trace record says whether it was a revisit."""

    def __init__(self, reuse: bool) -> None:
        self.reuse = reuse
        self.issued: set[tuple[int, ...]] = set()
        self.again: dict[int, bool] = {}  # candidate index -> revisit
        self.scores: dict[tuple[int, ...], tuple[float, float | None]] = {}  # arch -> (score, test) when finished

    def issue(self, cand: Candidate) -> None:
        self.again[cand.index] = cand.arch in self.issued
        self.issued.add(cand.arch)

    def finished(self, cand: Candidate, score: float, test: float | None) -> None:
        self.scores.setdefault(cand.arch, (score, test))

    def reused(self, cand: Candidate, now: float) -> TraceRecord | None:
        """The record of ``cand`` answered with the earlier score (no training), or None to train it."""
        if not self.reuse or cand.arch not in self.scores:
            return None
        score, test = self.scores[cand.arch]
        return TraceRecord(model_id=cand.model_id, parent_id=cand.parent_id, donor_id=None, worker="reused",
                           t_start=now, t_end=now, arch=list(cand.arch), mutation_pos=cand.mutation_pos,
                           score=score, test=test, transfer_layers=0, transfer_bytes=0, tier=None, cache_s=0.0,
                           train_s=0.0, layer_bytes=[], layer_keys=[], layer_deps=[], revisit=True,
                           extra={"reused": True})


def evolve(evo: RegularizedEvolution, executor: Executor, evals: int, mode: str, retries: int,
           trace: TraceWriter, tally: Tally, on_record: Progress | None = None,
           revisit: str = "train", on_issue: Callable[[Candidate], None] | None = None) -> list[dict[str, Any]]:
    """Run the search to ``evals`` issued children; returns the failures (each re-queued or dropped).
    ``revisit="reuse"`` answers a child that repeats a finished architecture with its score, untrained;
    ``on_issue`` hears each child sent to a worker, before the worker looks up its donor."""
    batch = mode == "batch"
    revisits = Revisits(revisit == "reuse")
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
                cand = evo.ask()
                revisits.issue(cand)
                gen_left -= 1
                record = revisits.reused(cand, executor.now())
                if record is not None:
                    _finish(evo, executor, trace, tally, record, cand, generation if batch else None)
                    if on_record is not None:
                        on_record(tally, sum(f["action"] == "dropped" for f in failures))
                    continue
                if on_issue is not None:
                    on_issue(cand)
                executor.submit(cand)
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
        revisits.finished(cand, outcome.result.score, outcome.result.test)
        _finish(evo, executor, trace, tally, _record(outcome, revisits.again[cand.index]), cand,
                generation if batch else None)
        if on_record is not None:
            on_record(tally, sum(f["action"] == "dropped" for f in failures))


def _finish(evo: RegularizedEvolution, executor: Executor, trace: TraceWriter, tally: Tally, record: TraceRecord,
            cand: Candidate, generation: list[tuple[Candidate, float]] | None) -> None:
    """Write a finished child's record and add it to the population (batch mode: to its generation)."""
    trace.write(record)
    tally.add(record)
    if generation is not None:
        generation.append((cand, record.score))
    else:
        evo.tell(cand, record.score)
        executor.observe(cand.mutation_pos, evo.members(), evo.population_size, evo.sample_size)


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


def _check_redis(config: CacheConfig) -> None:
    """Raise ConnectionError now, before any output or worker, when the required Redis tier is unreachable."""
    from tensorcache.tiers.redis import RedisTier

    RedisTier(config.redis, 1, namespace=config.namespace, required=True).close()


def _inside(path: str, folder: str) -> bool:
    return os.path.abspath(path).startswith(os.path.abspath(folder) + os.sep)


def _check_disk(config: CacheConfig) -> None:
    """Raise OSError now, naming the path, when the LMDB tier's folder cannot be made (a mistyped --disk)."""
    try:
        os.makedirs(config.disk_path, exist_ok=True)
    except OSError as exc:
        raise OSError(f"cannot open LMDB tier at {config.disk_path!r}: {exc.strerror or exc}") from None


def _prepare_out(s: SearchSettings) -> tuple[str, str]:
    os.makedirs(s.out, exist_ok=True)
    trace_path, summary_path = os.path.join(s.out, "trace.jsonl"), os.path.join(s.out, "summary.json")
    if os.path.exists(trace_path):
        if not s.overwrite:
            raise FileExistsError(f"{trace_path} already exists; choose another --out or pass --overwrite")
        for path in (trace_path, summary_path):
            if os.path.exists(path):
                os.remove(path)
        disk = s.cache_config.disk_path
        if disk == os.path.join(s.out, "cache.lmdb") and os.path.isdir(disk):
            shutil.rmtree(disk)
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
            serve_mpi(comm, evaluator, s.worker_cache(evaluator.payload_scale))
            return None
    elif s.executor == "process":
        threads = max(1, (os.cpu_count() or 1) // s.workers)
    evaluator = s.make_evaluator(threads)
    evaluator.check()
    cache_config = s.worker_cache(evaluator.payload_scale)
    if cache_config is not None and cache_config.redis_required:
        _check_redis(cache_config)
    if cache_config is not None and cache_config.disk_path is not None and not _inside(cache_config.disk_path, s.out):
        _check_disk(cache_config)
    if s.mutation_bias:
        log.warning("mutation bias %g: position i is mutated with weight (i+1)^%g, not uniformly",
                    s.mutation_bias, s.mutation_bias)
    created = not os.path.exists(s.out)
    trace_path, summary_path = _prepare_out(s)
    try:
        if comm is not None:
            comm.barrier()
        executor = _make_executor(s, evaluator, cache_config, comm)
    except BaseException:
        if created:  # a run that never started leaves no output folder behind
            shutil.rmtree(s.out, ignore_errors=True)
        raise
    space = get_space(s.space)
    evo = RegularizedEvolution(space, s.population, s.sample, seed=s.seed, mutation_bias=s.mutation_bias,
                               id_prefix=f"{s.run_id}-")
    tally = Tally(s.transfer)
    t0 = time.time()
    try:
        with TraceWriter(trace_path) as trace:
            on_issue = _describe_issued(executor, evaluator, s.transfer) if s.inflight else None
            failures = evolve(evo, executor, s.evals, s.mode, s.retries, trace, tally, on_record, s.revisit, on_issue)
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
        # a hit serves a layer that depends on a position; served bytes split into transfers and revisits
        "hit_ratio": tally.hit_ratio, "revisits": tally.revisits, "transfer_bytes": tally.transfer_bytes,
        "transfer_only_bytes": tally.transfer_bytes - tally.revisit_bytes, "revisit_bytes": tally.revisit_bytes,
        "transfer_layers": tally.transfer_layers, "cache_s": tally.cache_s, "train_s": tally.train_s,
        "cache": merge_stats(cache_stats) if cache_stats else None,
        "locality": executor.locality_summary(),
        "trace": trace_path,
    }
    with open(summary_path, "w") as f:
        json.dump(summary, f, indent=2, default=str)
    executor.release()
    return summary


def _describe_issued(executor: Executor, evaluator: Evaluator, mode: str) -> Callable[[Candidate], None] | None:
    """Tell the in-process cache each issued child's arch and layer count (no score yet): a child in flight."""
    cache = executor.cache if isinstance(executor, SerialExecutor | SimulatedExecutor) else None
    if cache is None:
        return None
    return lambda cand: cache.observe(ModelDescribed(cand.model_id, cand.arch, mode,
                                                     len(evaluator.layer_map(cand.arch)), None))


def _make_executor(s: SearchSettings, evaluator: Evaluator, cache_config: CacheConfig | None,
                   comm: Any = None) -> Executor:
    locality = None
    if s.evaluator == "tabular":  # only the tabular evaluator reports which tier served each byte
        workers = comm.Get_size() - 1 if s.executor == "mpi" else s.workers
        locality = LocalityTracker(workers, parse_size(s.worker_memory or s.cache_config.memory), s.locality_wait)
    if s.executor == "serial":
        cache = cache_config.open() if cache_config is not None else None
        if locality is not None:
            return SimulatedExecutor(evaluator, cache, s.workers, locality)
        return SerialExecutor(evaluator, cache)
    if s.executor == "process":
        gpus = _gpu_ids() if s.evaluator == "train" else []
        return ProcessExecutor(evaluator, cache_config, s.workers, gpus=gpus, job_timeout=s.job_timeout,
                               locality=locality)
    return MPIExecutor(comm, job_timeout=s.job_timeout, locality=locality, evaluator=evaluator,
                       cache_config=cache_config)
