"""bench/outcome.py's table on figures made up for it (the bench itself runs in test_bench_smoke.py), and its
answer to bad options."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import outcome  # noqa: E402
from common import exit_status  # noqa: E402


def arm(reach: float) -> dict:
    ci = (80.0, 79.0, 81.0)
    return {"final_test": ci, "search_best_score": ci, "search_best_retrained_test": ci, "train_s": (1.0, 1.0, 1.0),
            "evaluations": 4.0, "distinct_archs": 4.0, "evictions": 0.0, "new_byte_share": 0.0,
            "reach_median_epochs": reach, "reached": 0}


def test_without_the_cache_off_arm_no_arm_is_said_never_to_reach_its_target(capsys):
    args = argparse.Namespace(population=2, sample=1, top_k=1, retrain_seeds=1, retrain_epochs=1)
    summary = {"checkpoints": [2.0, 4.0], "seeds": [0], "target": float("nan"),
               "arms": {"random": arm(float("inf")), "cache-on": arm(float("inf"))}}
    rows = outcome.report(summary, args)
    printed = capsys.readouterr().out
    assert [row[outcome.HEADER.index("epochs to reach cache-off's final")] for row in rows] == ["n/a", "n/a"]
    assert "never" not in printed and "nan" not in printed and "no cache-off arm" in printed


@pytest.mark.parametrize("option, value, message", [
    ("--arms", "bogus", "unknown arms ['bogus']"),
    ("--capacities", "5QB", "bad memory size: '5QB'"),
    ("--policies", "nope", "unknown policy 'nope'"),
])
def test_a_bad_option_exits_2_naming_it_as_the_other_benches_do(tmp_path, capsys, monkeypatch, option, value, message):
    monkeypatch.setattr(sys, "argv", ["outcome.py"])  # it exited 1 by SystemExit
    assert exit_status(lambda: outcome.main(["--out", str(tmp_path / "out"), option, value])) == 2
    err = capsys.readouterr().err
    assert err.startswith("outcome.py: error: ") and message in err and not (tmp_path / "out").exists()
