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
from contextlib import nullcontext
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from tensorcache.config import CacheConfig
from tensorcache.events import ModelDescribed
from tensorcache.evolution import Candidate, RegularizedEvolution
from tensorcache.fidelity import CONTROLS
from tensorcache.metrics import json_safe
from tensorcache.sizes import parse_size
from tensorcache.trace import TraceRecord, TraceWriter

from tensorcache.collector import fewer_full_collections
from .evaluators import Evaluator
from .executors import (
    Executor,
    Locality,
    MPIExecutor,
    Outcome,
    ProcessExecutor,
    SerialExecutor,
    SearchCache,
    SimulatedExecutor,
    merge_stats,
    mpi_worker,
)
from .lineage import Lineage
from .resume import Recorded, SkipWritten, check_same_search, ctrl_c_after, finished_records
from .revisits import Revisits
from .scratch import Scratch
from .settings import DEFAULTS, SearchSettings, evaluator_datasets
from .spaces import get_space
from .startup import check_disk, check_redis, gpu_ids, inside, mpi_local, prepare_out
from .tally import OnRecord, Tally
from .threads import worker_threads

log = logging.getLogger("nas_integration")

__all__ = ["DEFAULTS", "SearchSettings", "Tally", "evaluator_datasets", "evolve", "run_search"]  # settings re-exported


def _record(outcome: Outcome, revisit: bool) -> TraceRecord:
    """The outcome's trace record with what only the search knows: the worker and whether it revisits."""
    record = outcome.result
    record.worker = outcome.worker
    record.revisit = revisit
    return record


def evolve(evo: RegularizedEvolution, executor: Executor, evals: int, mode: str, retries: int,
           trace: TraceWriter | SkipWritten, tally: Tally, on_record: OnRecord | None = None,
           revisit: str = "train", on_issue: Callable[[Candidate], None] | None = None,
           failures: list[dict[str, Any]] | None = None, scratch: Scratch | None = None) -> list[dict[str, Any]]:
    """Run the search to ``evals`` issued children; returns the failures (each re-queued or dropped), also
    appended to ``failures`` as they happen (an interrupted search keeps them).
    ``revisit="reuse"`` answers a child that repeats a finished architecture with its score, untrained;
    ``on_issue`` hears each child sent to a worker, before the worker looks up its donor; ``scratch`` decides
    the from-scratch retrainings (control set, leaders' re-evaluation), which run before new children."""
    batch = mode == "batch"
    revisits = Revisits(revisit == "reuse")
    lineage = Lineage()
    scratch = scratch or Scratch(0.0, 0, 0, None)
    retry: deque[Candidate] = deque()
    attempts: dict[str, int] = {}
    failures = [] if failures is None else failures
    generation: list[tuple[Candidate, float]] = []
    gen_left = executor.workers
    outstanding = streak = 0
    while True:
        while executor.free() and (retry or scratch.pending or (evo.issued < evals and (not batch or gen_left > 0))):
            if retry:
                executor.submit(retry.popleft())
            elif scratch.pending:
                executor.submit(scratch.pending.popleft())
            else:
                cand = evo.ask()
                revisits.issue(cand)
                gen_left -= 1
                record = revisits.reused(cand, executor.now())
                if record is not None:
                    _finish(evo, executor, trace, tally, lineage, record, cand, generation if batch else None)
                    scratch.child_done(record, cand, evo)
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
            attempts[cand.model_id] = attempts.get(cand.model_id, 0) + 1
            action = "requeued" if attempts[cand.model_id] <= retries else "dropped"
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
        if cand.scratch_of is not None:
            outcome.result.worker = outcome.worker
            scratch.job_done(outcome.result, cand, evo)
            tally.controls = scratch.line()
            continue
        revisits.finished(cand, outcome.result.score, outcome.result.test)
        record = _record(outcome, revisits.again[cand.index])
        _finish(evo, executor, trace, tally, lineage, record, cand, generation if batch else None)
        scratch.child_done(record, cand, evo)
        if on_record is not None:
            on_record(tally, sum(f["action"] == "dropped" for f in failures))


def _finish(evo: RegularizedEvolution, executor: Executor, trace: TraceWriter | SkipWritten, tally: Tally,
            lineage: Lineage, record: TraceRecord, cand: Candidate,
            generation: list[tuple[Candidate, float]] | None) -> None:
    """Write a finished child's record (with its inherited training) and add it to the population (batch mode:
    to its generation)."""
    with ctrl_c_after():
        lineage.add(record)
        trace.write(record)
        tally.add(record)
    if generation is not None:
        generation.append((cand, record.score))
    else:
        evo.tell(cand, record.score)
        executor.observe(cand.mutation_pos, evo.members(), evo.population_size, evo.sample_size)


def run_search(settings: SearchSettings, on_record: OnRecord | None = None) -> dict[str, Any] | None:
    """Run a whole search; write ``out/trace.jsonl`` and ``out/summary.json``; return the summary.

    ``on_record(tally, dropped)`` is called after every finished evaluation (progress display).
    Under ``--executor mpi`` every rank calls this: rank 0 schedules and returns the summary, the other
    ranks evaluate and return None. Interrupted (KeyboardInterrupt, Ctrl-C) once the search has started, it
    stops its workers and returns the summary of what finished (``"interrupted": true``);
    ``settings.resume`` continues the search in ``settings.out`` from its trace (``nas_integration.resume``).
    """
    s = settings.resolved()
    if s.resume:
        check_same_search(s)
    threads, threads_why, comm = None, "", None
    if s.executor == "mpi":
        comm, local_rank, local_size = mpi_local()
        if s.evaluator == "train":  # each node's ranks split its cores (rank 0, the scheduler, counts as one)
            threads, threads_why = worker_threads(s.threads, local_size)
        if comm.Get_rank() != 0:
            evaluator = s.make_evaluator(threads)
            if s.evaluator == "train" and (gpus := gpu_ids()):
                os.environ["CUDA_VISIBLE_DEVICES"] = gpus[local_rank % len(gpus)]
            comm.barrier()  # rank 0 has checked the settings and prepared the output folder
            mpi_worker(comm, evaluator, s.worker_cache_config(evaluator.payload_scale))
            return None
    elif s.evaluator == "train":
        threads, threads_why = worker_threads(s.threads, s.workers)
    evaluator: Evaluator = s.make_evaluator(threads)
    evaluator.check()
    done = finished_records(s.out) if s.resume else []
    if len(done) > s.evals:
        raise ValueError(f"--resume: the search in {s.out!r} already finished {len(done)} evaluations, more than "
                         f"--evals {s.evals}; --evals may only grow")
    controls_path = os.path.join(s.out, CONTROLS)
    done_controls = finished_records(s.out, CONTROLS) if done and os.path.exists(controls_path) else []
    if done:  # the scratch jobs it finished are answered from controls.jsonl the same way
        evaluator = Recorded(evaluator, done + done_controls)
    cache_config = s.worker_cache_config(evaluator.payload_scale)
    if cache_config is not None and cache_config.redis_required:
        check_redis(cache_config)
    if cache_config is not None and cache_config.disk_path is not None and not inside(cache_config.disk_path, s.out):
        check_disk(cache_config)
    if s.mutation_bias:
        log.warning("mutation bias %g: position i is mutated with weight (i+1)^%g, not uniformly",
                    s.mutation_bias, s.mutation_bias)
    created = not os.path.exists(s.out)
    trace_path, summary_path = prepare_out(s)
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
    failures: list[dict[str, Any]] = []
    scratch = Scratch(s.control, s.reeval_leaders, s.seed, None)
    interrupted = False
    try:
        with TraceWriter(trace_path) as writer, fewer_full_collections(), \
                (TraceWriter(controls_path) if s.control or s.reeval_leaders else nullcontext()) as kept:
            trace = SkipWritten(writer, {r.model_id for r in done}) if done else writer
            controls = SkipWritten(kept, {r.model_id for r in done_controls}) if kept and done_controls else kept
            on_issue = _describe_issued(executor, evaluator, s.transfer) if s.inflight else None
            scratch.writer = controls
            evolve(evo, executor, s.evals, s.mode, s.retries, trace, tally, on_record, s.revisit, on_issue, failures,
                   scratch)
    except KeyboardInterrupt:  # Ctrl-C: stop the workers, keep what finished, summarise it
        interrupted = True
    finally:
        cache_stats = executor.close()
    best = tally.best
    summary = {
        "run_id": s.run_id, "settings": asdict(s), "evaluator": evaluator.describe(), "interrupted": interrupted,
        "resumed": len(done),
        "evaluations": tally.evaluations, "issued": evo.issued,
        "dropped": sum(f["action"] == "dropped" for f in failures), "failures": failures,
        "workers": executor.workers, "executor": s.executor, "mode": s.mode, "clock": executor.clock,
        "wall_s": time.time() - t0, "search_s": executor.now(),
        "best": None if best is None else {"model_id": best["model_id"], "arch": best["arch"],
                                           "native": space.decode(best["arch"]), "score": best["score"],
                                           "test": best["test"], "epochs": best["epochs"],
                                           "inherited_epochs": best["inherited_epochs"]},
        # what new architectures received leads (the cache's real saving); revisits apart. A hit serves a layer
        # that depends on a position; served bytes split into transfers to new architectures and revisits
        "new_architectures": tally.new, "new_hit_ratio": tally.new_hit_ratio,
        "new_byte_share": tally.new_byte_share,
        "hit_ratio": tally.hit_ratio, "revisits": tally.revisits, "bytes_served": tally.bytes_served,
        "transfer_bytes_served": tally.transfer_bytes_served, "revisit_bytes_served": tally.revisit_bytes_served,
        "layers_served": tally.layers_served, "cache_s": tally.cache_s, "train_s": tally.train_s,
        "cache": merge_stats(cache_stats) if cache_stats else None,
        "locality": executor.locality_summary(),
        "threads": None if threads is None else {"per_worker": threads, "why": threads_why},
        "scratch": scratch.summary(),  # the control set's fidelity figures and the leaders' re-evaluations
        "trace": trace_path,
    }
    with open(summary_path, "w") as f:
        # valid JSON for every reader: a ratio without a denominator (no evaluation finished) is null
        json.dump(json_safe(summary), f, indent=2, default=str, allow_nan=False)
    executor.release()
    return summary


def _describe_issued(executor: Executor, evaluator: Evaluator, mode: str) -> Callable[[Candidate], None]:
    """Tell the caches each issued child's arch and layer count (no score yet): a child in flight. An in-process
    cache hears it at once, a worker's with its next job."""
    return lambda cand: executor.describe(ModelDescribed(cand.model_id, cand.arch, mode,
                                                         len(evaluator.layer_map(cand.arch)), None))


def _make_executor(s: SearchSettings, evaluator: Evaluator, cache_config: CacheConfig | None,
                   comm: Any = None) -> Executor:
    # only the tabular evaluator reports which tier served each byte
    locality = Locality(s.locality_wait) if s.evaluator == "tabular" else None
    if s.executor == "serial":
        cache = SearchCache(cache_config) if cache_config is not None else None
        if locality is not None:
            return SimulatedExecutor(evaluator, cache, s.workers, locality,
                                     parse_size(s.worker_memory or s.cache_config.memory))
        return SerialExecutor(evaluator, cache)
    if s.executor == "process":
        gpus = gpu_ids() if s.evaluator == "train" else []
        return ProcessExecutor(evaluator, cache_config, s.workers, gpus=gpus, job_timeout=s.job_timeout,
                               locality=locality)
    return MPIExecutor(comm, job_timeout=s.job_timeout, locality=locality, evaluator=evaluator,
                       cache_config=cache_config)
