"""run_search's command line: help, a small real training search and a tabular search, with outputs."""
import json
import subprocess
import sys

import pytest

from nas_integration.cli import main
from tensorcache.trace import FIELDS, read_trace

TABLE = "/work/shared/data/nb201/nb201_combined.csv"
SUMMARY_KEYS = {"run_id", "settings", "evaluations", "workers", "wall_s", "best", "hit_ratio", "transfer_bytes",
                "cache_s", "train_s", "cache", "failures", "dropped", "clock"}


def test_help_explains_the_option_groups():
    done = subprocess.run([sys.executable, "-m", "nas_integration.cli", "--help"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0
    for text in ("search:", "evaluator:", "cache:", "execution:", "--table", "--no-cache", "TENSORCACHE_DATA"):
        assert text in done.stdout


def test_small_training_search_writes_trace_and_summary(tmp_path, capsys):
    out = tmp_path / "train"
    rc = main(["--out", str(out), "--data-dir", "/work/shared/data/mnist", "--train-subset", "400", "--evals", "6",
               "--population", "3", "--sample", "2", "--seed", "1", "--mutation-bias", "1.5", "--device", "cpu"])
    assert rc == 0
    trace = read_trace(out / "trace.jsonl")
    assert len(trace) == 6 and all(set(FIELDS) <= set(r) for r in trace)
    assert any(r["transfer_layers"] > 0 for r in trace[3:])  # children warm-started from the cache
    summary = json.loads((out / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary)
    assert summary["settings"]["seed"] == 1 and summary["settings"]["mutation_bias"] == 1.5
    assert summary["best"]["score"] == max(r["score"] for r in trace)
    assert summary["cache"]["puts"] == 6 and (out / "cache.lmdb").exists()
    assert "cache hit ratio" in capsys.readouterr().out


def test_tabular_search_and_refusing_to_overwrite(tmp_path, capsys):
    out = tmp_path / "tab"
    args = ["--out", str(out), "--evaluator", "tabular", "--table", TABLE, "--evals", "200", "--workers", "32",
            "--quiet"]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["evaluations"] == 200 and summary["workers"] == 32 and summary["clock"] == "simulated"
    assert summary["hit_ratio"] > 0 and summary["best"]["test"] > 0
    assert main(args) == 2 and "already exists" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0
    assert len(read_trace(out / "trace.jsonl")) == 200


@pytest.mark.parametrize("extra, message", [
    (["--evaluator", "tabular"], "--table"),
    (["--data-dir", "/nonexistent/mnist"], "/nonexistent/mnist"),
    (["--workers", "4"], "--executor process"),
])
def test_bad_settings_are_explained(tmp_path, capsys, extra, message):
    assert main(["--out", str(tmp_path / "x"), "--quiet", *extra]) == 2
    assert message in capsys.readouterr().err
