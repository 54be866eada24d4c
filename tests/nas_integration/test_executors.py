"""Executors: process workers that die or hang are reported and replaced; MPI ranks complete a search."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from nas_integration.data import nb201_table
from nas_integration.evaluators.tabular import TabularEvaluator
from nas_integration.executors import ProcessExecutor, merge_stats
from nas_integration.search import SearchSettings, Tally, evolve, run_search
from nas_integration.spaces import get_space
from tensorcache.config import CacheConfig
from tensorcache.evolution import RegularizedEvolution
from tensorcache.trace import TraceWriter, read_trace

TABLE = str(nb201_table())  # the table shipped with the package

FAULTY = textwrap.dedent('''
    import os
    import time

    from nas_integration.evaluators.tabular import TabularEvaluator


    class FaultyEvaluator(TabularEvaluator):
        """Dies on job `die_always` every time, on job `die_once` the first time, hangs on `hang`."""

        def __init__(self, marker, die_always=-1, die_once=-1, hang=-1, **kw):
            super().__init__(**kw)
            self.marker, self.die_always, self.die_once, self.hang = marker, die_always, die_once, hang

        def evaluate(self, candidate, cache):
            if candidate.index == self.die_always:
                os._exit(9)
            if candidate.index == self.die_once and not os.path.exists(self.marker):
                open(self.marker, "w").close()
                os._exit(9)
            if candidate.index == self.hang:
                time.sleep(3600)
            return super().evaluate(candidate, cache)
''')


@pytest.fixture
def faulty(tmp_path, monkeypatch):
    (tmp_path / "faulty_eval.py").write_text(FAULTY)
    monkeypatch.syspath_prepend(str(tmp_path))  # spawned workers inherit sys.path
    import faulty_eval

    return lambda **kw: faulty_eval.FaultyEvaluator(marker=str(tmp_path / "died-once"), table=TABLE, **kw)


def search(executor, tmp_path, evals=24):
    evo = RegularizedEvolution(get_space("nb201"), population_size=6, sample_size=2, seed=0)
    tally = Tally()
    with TraceWriter(tmp_path / "trace.jsonl") as trace:
        failures = evolve(evo, executor, evals, "async", 1, trace, tally)
    executor.close()
    return failures, tally, read_trace(tmp_path / "trace.jsonl")


def test_a_killed_worker_is_reported_replaced_and_its_job_requeued_or_dropped(tmp_path, faulty):
    executor = ProcessExecutor(faulty(die_always=3, die_once=8), None, workers=2)
    failures, tally, trace = search(executor, tmp_path)
    by_job = {}
    for f in failures:
        by_job.setdefault(f["model_id"], []).append(f["action"])
        assert "died" in f["error"]
    assert by_job == {"m000003": ["requeued", "dropped"], "m000008": ["requeued"]}
    assert executor.replaced == 3
    ids = {r["model_id"] for r in trace}
    assert tally.evaluations == 23 and "m000003" not in ids and "m000008" in ids


def test_a_hung_job_times_out(tmp_path, faulty):
    executor = ProcessExecutor(faulty(hang=2), None, workers=2, job_timeout=1.0)
    failures, tally, _ = search(executor, tmp_path, evals=8)
    assert [f["action"] for f in failures] == ["requeued", "dropped"]
    assert "timed out" in failures[0]["error"]
    assert tally.evaluations == 7


def test_worker_setup_errors_surface_in_the_scheduler(tmp_path):
    executor = ProcessExecutor(TabularEvaluator(tmp_path / "nope.csv"), None, workers=1)
    with pytest.raises(RuntimeError, match="could not start"):
        search(executor, tmp_path, evals=2)


def test_process_workers_share_the_disk_tier(tmp_path):
    summary = run_search(SearchSettings(out=str(tmp_path / "p"), evaluator="tabular", table=TABLE, evals=40,
                                        population=8, sample=3, executor="process", workers=2))
    trace = read_trace(tmp_path / "p" / "trace.jsonl")
    assert summary["evaluations"] == 40 and {r["worker"] for r in trace} == {0, 1}
    worker_of = {r["model_id"]: r["worker"] for r in trace}
    # children found donors written by the other process (through the shared LMDB tier)
    assert any(r["donor_id"] and worker_of[r["donor_id"]] != r["worker"] for r in trace)
    assert summary["cache"]["caches"] == 2 and summary["cache"]["puts"] == 40


def test_process_workers_can_count_children_in_flight(tmp_path):
    summary = run_search(SearchSettings(out=str(tmp_path / "p"), evaluator="tabular", table=TABLE, evals=30,
                                        population=8, sample=3, executor="process", workers=2, inflight=True,
                                        cache_config=CacheConfig(policy="evolution-aware")))
    assert summary["evaluations"] == 30 and summary["settings"]["inflight"] is True
    assert summary["cache"]["caches"] == 2 and summary["cache"]["puts"] == 30


def test_stats_merging():
    merged = merge_stats([{"hits": 1, "lookups": 4, "evictions": {"memory:capacity": 2}, "tiers": {"m": 1}},
                          {"hits": 3, "lookups": 4, "evictions": {"memory:capacity": 1}, "tiers": {"m": 2}}])
    assert merged["hit_ratio"] == 0.5 and merged["evictions"] == {"memory:capacity": 3}
    assert merged["tiers"] == [{"m": 1}, {"m": 2}]




def test_mpirun_with_three_ranks_completes(tmp_path, mpi_env):
    out = tmp_path / "mpi"
    cmd = ["mpirun", "--oversubscribe", "-n", "3", sys.executable, "-m", "nas_integration.cli", "--out", str(out),
           "--executor", "mpi", "--evaluator", "tabular", "--table", TABLE, "--evals", "40", "--population", "8",
           "--sample", "3", "--job-timeout", "60", "--quiet"]
    done = subprocess.run(cmd, check=False, env=mpi_env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    trace = read_trace(out / "trace.jsonl")
    assert len(trace) == 40 and {r["worker"] for r in trace} == {0, 1}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["executor"] == "mpi" and summary["workers"] == 2 and summary["evaluations"] == 40


MPI_HANG = textwrap.dedent('''
    import json
    import sys

    from mpi4py import MPI

    from faulty_eval import FaultyEvaluator
    from nas_integration.executors import MPIExecutor, mpi_worker
    from tensorcache.evolution import RegularizedEvolution
    from nas_integration.search import Tally, evolve
    from nas_integration.spaces import get_space
    from tensorcache.trace import TraceWriter

    comm = MPI.COMM_WORLD
    evaluator = FaultyEvaluator(marker="unused", hang=3, table=sys.argv[1])
    if comm.Get_rank():
        mpi_worker(comm, evaluator, None)
    else:
        executor = MPIExecutor(comm, job_timeout=2)
        tally = Tally()
        with TraceWriter(sys.argv[2]) as trace:
            failures = evolve(RegularizedEvolution(get_space("nb201"), 6, 2), executor, 16, "async", 1, trace, tally)
        executor.close()
        print("RESULT", json.dumps([tally.evaluations, [f["action"] for f in failures], sorted(executor.lost)]),
              flush=True)
        executor.release()
''')


def test_mpi_ranks_that_hang_are_given_up_and_the_search_ends(tmp_path, mpi_env):
    (tmp_path / "faulty_eval.py").write_text(FAULTY)
    (tmp_path / "hang_run.py").write_text(MPI_HANG)
    env = {**mpi_env, "PYTHONPATH": os.pathsep.join([str(tmp_path), mpi_env["PYTHONPATH"]])}
    cmd = ["mpirun", "--oversubscribe", "-n", "4", sys.executable, str(tmp_path / "hang_run.py"), TABLE,
           str(tmp_path / "trace.jsonl")]
    done = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    result = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
    evaluations, actions, lost = json.loads(result.removeprefix("RESULT "))
    # Two of the three worker ranks hung on job 3 (which two is up to timing) and were given up; one is left.
    assert evaluations == 15 and actions == ["requeued", "dropped"]
    assert len(lost) == 2 and set(lost) <= {0, 1, 2}
    assert len(read_trace(tmp_path / "trace.jsonl")) == 15


def test_serve_mpi_is_the_old_name_of_mpi_worker():
    import nas_integration.executors as executors

    with pytest.warns(DeprecationWarning, match="mpi_worker"):
        assert executors.serve_mpi is executors.mpi_worker
