"""Locality-aware placement over real workers: MPI ranks and processes, each with its own memory tier."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from nas_integration.data import nb201_table
from nas_integration.search import SearchSettings, run_search
from tensorcache.trace import read_trace

TABLE = str(nb201_table())  # the table shipped with the package
MPI_ENV = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
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
    assert loc["local_bytes"] + loc["remote_bytes"] == sum(r["transfer_bytes"] for r in trace)
    assert all(set(r["tier_bytes"]) <= {"memory", "lmdb"} for r in trace)
    return loc


def test_mpi_ranks_serve_more_bytes_from_their_own_memory_with_locality_on(tmp_path):
    (tmp_path / "both.py").write_text(BOTH)
    cmd = ["mpirun", "--oversubscribe", "-n", "4", sys.executable, str(tmp_path / "both.py"), str(tmp_path),
           TABLE, str(WAIT)]
    done = subprocess.run(cmd, check=False, env=MPI_ENV, capture_output=True, text=True, timeout=120)
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
                       disk="none", locality_wait=1.0).resolved()
