"""A worker killed (SIGKILL, from outside) while it trains: the driver notices, logs it, re-queues the job,
the search completes, and the node's shared LMDB cache the worker was using stays consistent.

The driver's own tests cover the scheduling rules in detail (tests/nas_integration/test_executors.py:
a worker that exits on a given job, a hung job, rank loss under MPI); this row kills real worker
processes of a whole ``run_search`` at arbitrary moments."""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

from nas_integration.data import nb201_table
from nas_integration.search import SearchSettings, run_search
from nas_integration.spaces import get_space
from tensorcache import TensorCache
from tensorcache.trace import read_trace

TABLE = str(nb201_table())  # the table shipped with the package
EVALS = 24


def _worker_pids() -> list[int]:
    """Live processes spawned by this one to run jobs (multiprocessing's spawn entry point)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (proc / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == os.getpid() and b"spawn_main" in cmdline:
            pids.append(int(proc.name))
    return pids


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_workers_killed_mid_training_are_replaced_and_the_search_completes(tmp_path, caplog):
    out = tmp_path / "run"
    killed: list[int] = []

    def assassin() -> None:
        for after in (4, 12):  # kill a worker once this many evaluations are done
            deadline = time.monotonic() + 60
            while _lines(out / "trace.jsonl") < after and time.monotonic() < deadline:
                time.sleep(0.01)
            pids = _worker_pids()
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])

    thread = threading.Thread(target=assassin, daemon=True)
    settings = SearchSettings(out=str(out), evaluator="tabular", table=TABLE, evals=EVALS, population=6, sample=2,
                              epochs=1, time_scale=0.03, executor="process", workers=2, retries=2, run_id="death",
                              transfer="prefix")  # the prefix layer maps the whole-model check below looks up
    with caplog.at_level(logging.WARNING, logger="nas_integration"):
        thread.start()
        summary = run_search(settings)
        thread.join()
    assert len(killed) == 2
    failures = summary["failures"]
    assert failures and all("died" in f["error"] and f["action"] == "requeued" for f in failures)
    assert summary["evaluations"] == EVALS and summary["dropped"] == 0
    assert sum("died" in r.getMessage() for r in caplog.records) >= len(failures)
    trace = read_trace(out / "trace.jsonl")
    assert sorted(r["model_id"] for r in trace) == sorted({r["model_id"] for r in trace})  # each job once
    assert {f["model_id"] for f in failures} <= {r["model_id"] for r in trace}  # re-queued jobs finished
    # whatever the killed workers were doing to the shared LMDB file, every traced model is whole in it
    space = get_space("nb201")
    cache = TensorCache(memory=0, disk=out / "cache.lmdb", namespace=summary["settings"]["cache_config"]["namespace"])
    mode = summary["settings"]["transfer"]  # the layer map the search stored its models under
    for record in trace:
        lmap = space.layer_map(record["arch"], mode)
        hit = cache.lookup(record["arch"], layer_map=lmap)
        assert hit is not None and len(hit.indices) == len(lmap), record["model_id"]
    assert cache.stats()["corrupt"] == 0
    cache.close()
