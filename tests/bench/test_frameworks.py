"""bench/frameworks.py runs end to end at its quick size (Optuna and DeepHyper, two seeds) and writes its rows,
the outcome of each search (its pick retrained from scratch) and the paired outcome table; the table itself
on rows made up for it."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_frameworks_bench_tiny(tmp_path: Path) -> None:
    pytest.importorskip("optuna", reason="optuna is not installed (pip install 'tensorcache[integrations]')")
    pytest.importorskip("deephyper", reason="deephyper is not installed (pip install 'tensorcache[integrations]')")
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "frameworks.py"), "--quick", "--seeds", "0,1",
                           "--frameworks", "optuna,deephyper", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(tmp_path / "frameworks.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["framework"], r["seed"], r["run"]) for r in rows] == [
        ("optuna", "0", "without"), ("optuna", "0", "with"), ("deephyper", "0", "without"), ("deephyper", "0", "with"),
        ("optuna", "1", "with"), ("optuna", "1", "without"), ("deephyper", "1", "with"), ("deephyper", "1", "without")]
    for row in rows:
        cached = row["run"] == "with"
        assert (int(row["warm"]) == 0 or cached) and (int(row["reference_disk"] or 0) > 0) != cached
        assert 0 < int(row["cache_payload"]) <= int(row["cache_disk"]) if cached else int(row["cache_disk"]) == 0
        assert 0 < float(row["pick_test"]) <= 100 and float(row["search_s"]) > 0
        assert len(row["pick_arch"].split("-")) == 6   # the pick is one of the search's architectures
    by = {(r["framework"], r["seed"], r["run"]): r for r in rows}
    for framework in ("optuna", "deephyper"):
        assert sum(int(by[framework, s, "with"]["warm"]) for s in "01") > 0
        diffs = [float(by[framework, s, "with"]["pick_test"]) - float(by[framework, s, "without"]["pick_test"])
                 for s in "01"]
        assert f"ratio frameworks.{framework}.with_vs_without.pick_test" in proc.stdout
        table = (tmp_path / "frameworks_outcome.md").read_text()
        assert f"| {framework} | 2 |" in table and f"{sum(diffs) / 2:+.2f} [" in table


def test_paired_outcome_table_pairs_by_seed_and_leaves_out_what_was_not_measured() -> None:
    sys.path.insert(0, str(ROOT))
    from bench.frameworks import paired

    def row(framework: str, seed: int, run: str, test: float, **more: float) -> dict:
        return {"framework": framework, "seed": seed, "run": run, "pick_test": test, "search_s": 1.0, **more}

    rows = [row("ray", 0, "without", 40.0), row("ray", 0, "with", 50.0), row("ray", 1, "with", 45.0),
            row("ray", 1, "without", 45.0), row("ray", 1, "without, num_to_keep=1", 99.0),
            {"framework": "ray", "seed": 2, "run": "with"},   # a run without an outcome is not paired
            row("optuna", 0, "without", 80.0, search_best_retrained_test=79.0),
            row("optuna", 0, "with", 78.0, search_best_retrained_test=70.0)]
    table = {r[0]: r for r in paired(rows)}
    assert table["ray"][1:7] == ["2", "42.50 [40.00, 45.00]", "47.50 [45.00, 50.00]", "+5.00 [+0.00, +10.00]",
                                 "1 / 1 / 0", "-"]
    assert table["optuna"][4:7] == ["-2.00 [-2.00, -2.00]", "0 / 0 / 1", "-9.00 [-9.00, -9.00]"]
