"""Torch threads per worker: --threads, then OMP_NUM_THREADS, then the free cores split among the workers."""
import json
import os

import pytest
import torch

from nas_integration.cli import main
from nas_integration.threads import free_cores, idle_share, worker_threads


def test_idle_share_sums_each_cpus_idle_fraction():
    before = {0: (100, 200), 1: (100, 200), 2: (0, 0)}
    after = {0: (100, 300), 1: (200, 300), 2: (50, 100)}  # cpu 0 busy, cpu 1 idle, cpu 2 half idle
    assert idle_share(before, after, [0, 1, 2]) == pytest.approx(1.5)
    assert idle_share(before, after, [0]) == 0.0
    assert idle_share(before, before, [0, 7]) == 2.0  # no ticks, unknown CPU: counted free


def test_free_cores_lies_between_zero_and_the_usable_cores():
    assert 0.0 <= free_cores(0.05) <= len(os.sched_getaffinity(0)) + 1e-9
    assert free_cores(0.0, stat_path="/nonexistent/stat") == len(os.sched_getaffinity(0))


def test_given_threads_then_the_environment_then_the_free_cores(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert worker_threads(2, 4) == (2, "--threads")
    assert worker_threads(None, 4) == (3, "OMP_NUM_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "many")
    with pytest.raises(ValueError, match="OMP_NUM_THREADS='many'"):
        worker_threads(None, 1)
    with pytest.raises(ValueError, match="threads must be >= 1, got 0"):
        worker_threads(0, 1)
    monkeypatch.delenv("OMP_NUM_THREADS")
    threads, why = worker_threads(None, 1000)
    assert threads == 1 and "cores free" in why and "1000 workers" in why  # never below one thread


def test_a_training_search_uses_the_threads_it_reports(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        assert main(["--out", str(tmp_path / "t"), "--train-subset", "200", "--evals", "2", "--population", "2",
                     "--sample", "1", "--device", "cpu", "--threads", "1", "--quiet"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    summary = json.loads((tmp_path / "t" / "summary.json").read_text())
    assert summary["threads"] == {"per_worker": 1, "why": "--threads"}
    assert summary["settings"]["threads"] == 1
