"""bench/deephyper_compare.py runs end to end at --quick size and writes one row per seed and mode."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_deephyper_compare_quick(tmp_path: Path) -> None:
    pytest.importorskip("deephyper", reason="deephyper is not installed (pip install 'tensorcache[integrations]')")
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "deephyper_compare.py"), "--quick", "--out",
                           str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "ratio evals_to_target_seed0" in proc.stdout
    with open(tmp_path / "deephyper_compare.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["mode"] for r in rows] == ["without", "with"]
    assert float(rows[1]["children_warm"]) > 0 and not rows[0].get("children_warm")
