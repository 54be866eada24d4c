"""bench/frameworks.py runs end to end at a tiny size (Optuna and DeepHyper, one seed) and writes its rows."""
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
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "frameworks.py"), "--seeds", "0", "--trials", "5",
                           "--frameworks", "optuna,deephyper", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(tmp_path / "frameworks.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["framework"], r["run"]) for r in rows] == [("optuna", "without"), ("optuna", "with"),
                                                          ("deephyper", "without"), ("deephyper", "with")]
    for without, with_ in (rows[0:2], rows[2:4]):
        assert int(without["warm"]) == 0 and int(without["reference_disk"]) > 0 and int(without["cache_disk"]) == 0
        assert int(with_["warm"]) > 0 and 0 < int(with_["cache_payload"]) <= int(with_["cache_disk"])
