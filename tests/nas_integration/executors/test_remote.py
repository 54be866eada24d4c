"""Locality-aware placement over real workers: MPI ranks and processes, each with its own memory tier,
placed by what their caches report holding."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from nas_integration.data import nb201_table
from nas_integration.evaluators import make_evaluator
from nas_integration.executors import Executor, ProcessExecutor
from nas_integration.executors import Locality
from nas_integration.search import SearchSettings, run_search
from tensorcache.config import CacheConfig
from tensorcache.evolution import Candidate
from tensorcache.trace import read_trace

TABLE = str(nb201_table())  # the table shipped with the package
WAIT = 0.2  # wall seconds; a job sleeps ~0.09 s (table time x 5e-5)


# Both placements in one mpirun (the ranks serve one search, then the next), to pay the start-up once.
# Batch mode breeds the same children whatever order jobs finish in, so the two runs are comparable.
BOTH = textwrap.dedent('''
    import json
    import sys
    import traceback

    from mpi4py import MPI

    from nas_integration.search import SearchSettings, run_search

    out, table, wait = sys.argv[1], sys.argv[2], float(sys.argv[3])
    try:
        for name, locality_wait in (("off", None), ("on", wait)):
            summary = run_search(SearchSettings(out=f"{out}/{name}", evaluator="tabular", table=table,
                                                executor="mpi", mode="batch", evals=48, population=8, sample=3,
                                                time_scale=5e-5, seed=0, job_timeout=60,
                                                locality_wait=locality_wait))
            if summary is not None:
                print("RESULT", name, json.dumps(summary, default=str), flush=True)
    except BaseException:
        traceback.print_exc()
        MPI.COMM_WORLD.Abort(1)  # never leave the other ranks waiting
''')


def check_accounting(summary, trace_path):
    """Nothing lost, and the local/shared split is the sum of what the workers' caches reported."""
    trace = read_trace(trace_path)
    loc = summary["locality"]
    assert summary["evaluations"] == len(trace) == summary["settings"]["evals"] and summary["dropped"] == 0
    assert len({r["model_id"] for r in trace}) == len(trace)
    assert loc["local_bytes"] == sum(r["tier_bytes"].get("memory", 0) for r in trace)
    assert loc["local_bytes"] + loc["remote_bytes"] == sum(r["bytes_served"] for r in trace)
    assert all(set(r["tier_bytes"]) <= {"memory", "lmdb"} for r in trace)
    return loc


def test_mpi_ranks_serve_more_bytes_from_their_own_memory_with_locality_on(tmp_path, mpi_env):
    (tmp_path / "both.py").write_text(BOTH)
    cmd = ["mpirun", "--oversubscribe", "-n", "4", sys.executable, str(tmp_path / "both.py"), str(tmp_path),
           TABLE, str(WAIT)]
    done = subprocess.run(cmd, check=False, env=mpi_env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    summaries = {line.split(" ", 2)[1]: json.loads(line.split(" ", 2)[2])
                 for line in done.stdout.splitlines() if line.startswith("RESULT ")}
    off = check_accounting(summaries["off"], tmp_path / "off" / "trace.jsonl")
    on = check_accounting(summaries["on"], tmp_path / "on" / "trace.jsonl")
    archs = {name: sorted(r["arch"] for r in read_trace(tmp_path / name / "trace.jsonl")) for name in ("off", "on")}
    assert archs["off"] == archs["on"]
    assert not off["enabled"] and off["placed_on_holder"] == off["reserved"] == 0
    assert on["enabled"] and on["placed_on_holder"] + on["reserved"] > 0
    assert on["local_byte_share"] > off["local_byte_share"]
    # each rank's cache reported its hits by tier; the memory tier served at least the wholly local ones
    assert summaries["on"]["cache"]["caches"] == 3
    assert summaries["on"]["cache"]["served_by_tier"]["memory"] >= on["local_hits"]


def test_process_workers_place_children_on_their_donors_holder(tmp_path):
    summary = run_search(SearchSettings(out=str(tmp_path), evaluator="tabular", table=TABLE, evals=24,
                                        population=6, sample=2, executor="process", workers=2, time_scale=5e-5,
                                        locality_wait=WAIT))
    loc = check_accounting(summary, tmp_path / "trace.jsonl")
    assert loc["enabled"] and loc["placed_on_holder"] + loc["reserved"] > 0 and loc["local_bytes"] > 0


def test_placement_over_real_workers_needs_a_shared_tier(tmp_path):
    with pytest.raises(ValueError, match="shared tier"):
        SearchSettings(out=str(tmp_path), evaluator="tabular", table=TABLE, executor="process", workers=2,
                       cache_config=CacheConfig(disk="none"), locality_wait=1.0).resolved()


def evaluator():
    """Each job sleeps about 1.2 s between its lookup and its put (table time x 2e-3)."""
    return make_evaluator("tabular", table=TABLE, space="nb201", dataset="cifar10", epochs=200, transfer="prefix",
                          namespace="near", seed=0, time_scale=2e-3)


def cache_config(folder) -> CacheConfig:
    return CacheConfig(memory="64MB", disk=os.path.join(folder, "cache.lmdb"), namespace="near")


def place_child_near_its_donor(executor: Executor) -> dict:
    """Run x on worker 0 and a on worker 1 at once (each looks up before the other puts, so neither is
    served the other's layers), then a child of a while both are idle: the lowest idle worker is 0, so the
    child lands on 1 only because worker 1's cache reported holding a."""
    executor.submit(Candidate(0, "x", (0, 1, 1, 1, 1, 1)))
    executor.submit(Candidate(1, "a", (1, 1, 1, 1, 1, 1)))
    first = {o.candidate.model_id: o.worker for o in (executor.next_outcome(), executor.next_outcome())}
    executor.submit(Candidate(2, "c", (1, 1, 1, 1, 1, 2), parent_id="a"))
    child = executor.next_outcome()
    return {"first": first, "worker": child.worker, "donor": child.result.donor_id,
            "tier_bytes": child.result.tier_bytes, "locality": executor.locality_summary()}


def check_placed_near(result: dict) -> None:
    assert result["first"] == {"x": 0, "a": 1}
    assert result["donor"] == "a" and result["worker"] == 1
    assert set(result["tier_bytes"]) == {"memory"}  # served from worker 1's own memory tier
    assert result["locality"]["placed_on_holder"] == 1 and result["locality"]["local_hits"] == 1


def test_a_process_child_is_placed_on_the_worker_that_reported_its_donor(tmp_path):
    executor = ProcessExecutor(evaluator(), cache_config(tmp_path), workers=2, job_timeout=60,
                               locality=Locality(max_wait=60.0))
    try:
        check_placed_near(place_child_near_its_donor(executor))
    finally:
        executor.close()


NEAR = textwrap.dedent('''
    import json
    import sys
    import traceback

    from mpi4py import MPI

    sys.path.insert(0, sys.argv[2])
    from test_remote import cache_config, evaluator, place_child_near_its_donor

    from nas_integration.executors import MPIExecutor, mpi_worker
    from nas_integration.executors import Locality

    comm = MPI.COMM_WORLD
    try:
        if comm.Get_rank():
            mpi_worker(comm, evaluator(), cache_config(sys.argv[1]))
        else:
            executor = MPIExecutor(comm, job_timeout=60, locality=Locality(max_wait=60.0),
                                   evaluator=evaluator(), cache_config=cache_config(sys.argv[1]))
            try:
                print("RESULT", json.dumps(place_child_near_its_donor(executor)), flush=True)
            finally:
                executor.close()
    except BaseException:
        traceback.print_exc()
        comm.Abort(1)  # never leave the other ranks waiting
''')


def test_an_mpi_child_is_placed_on_the_rank_that_reported_its_donor(tmp_path, mpi_env):
    (tmp_path / "near.py").write_text(NEAR)
    cmd = ["mpirun", "--oversubscribe", "-n", "3", sys.executable, str(tmp_path / "near.py"), str(tmp_path),
           os.path.dirname(os.path.abspath(__file__))]
    done = subprocess.run(cmd, check=False, env=mpi_env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    results = [json.loads(line.split(" ", 1)[1]) for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(results) == 1, done.stdout + done.stderr
    check_placed_near(results[0])
