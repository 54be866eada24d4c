"""Each bench runs end to end at --quick size, prints its ratio lines and writes its result files.

Timings are printed by the benches, never asserted here: the machine is shared and noisy.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ["TENSORCACHE_DATA"]) if os.environ.get("TENSORCACHE_DATA") else None  # full data sets
RATIO = re.compile(r"^ratio (\S+)\s+(\d+\.\d+|inf|n/a)\b", re.MULTILINE)


def run_bench(script: str, *args: str, env: dict[str, str] | None = None) -> str:
    """Run ``bench/<script> --quick ARGS`` from the repository root; return its stdout (fails on rc != 0)."""
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--quick", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})
    assert proc.returncode == 0, f"{script} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def ratios(stdout: str) -> dict[str, str]:
    return dict(RATIO.findall(stdout))


def needs(name: str) -> pytest.MarkDecorator:
    present = DATA is not None and (DATA / name).exists()
    return pytest.mark.skipif(not present, reason=f"needs the full {name} data set: set $TENSORCACHE_DATA to a "
                                                  f"folder holding {name}/")


def test_tiers_quick(tmp_path: Path, redis_url: str) -> None:
    out = run_bench("tiers.py", "--out", str(tmp_path), env={"TENSORCACHE_TEST_REDIS_URL": redis_url})
    found = ratios(out)
    for label in ("memory.get+copy@1MiB", "memory.put@1MiB", "lmdb.get@1MiB", "lmdb.put@1MiB", "redis.get@1MiB",
                  "redis.put@1MiB", "lookup.memory@1MiB", "lookup.lmdb@1MiB", "lookup.redis@1MiB",
                  "warm.compatible.memory.vs_load", "warm.prefix.redis.vs_load", "warm.compatible.device.vs_copy",
                  "warm.prefix.memory.vs_copy", "warm.prefix.lmdb.vs_read+copy", "warm.prefix.foreach_floor.vs_copy"):
        assert label in found, f"no ratio line for {label}:\n{out}"
        assert float(found[label]) > 0
    saved = json.loads((tmp_path / "tiers.json").read_text())
    assert {row["label"] for row in saved["rows"]} >= set(found)
    assert (tmp_path / "tiers.csv").read_text().startswith("group,label,subject,baseline,nbytes")


@needs("mnist")
def test_bookkeeping_quick(tmp_path: Path) -> None:
    out = run_bench("bookkeeping.py", "--repeats", "1", "--mnist", str(DATA / "mnist"), "--out", str(tmp_path))
    assert float(ratios(out)["bookkeeping.tabular_on_vs_off"]) > 0
    share = re.search(r"^share bookkeeping.train_search cache_s/wall_s (\d+\.\d+)", out, re.MULTILINE)
    assert share and 0 < float(share.group(1)) < 1, out
    rows = json.loads((tmp_path / "bookkeeping.json").read_text())["rows"]
    assert [r["cache"] for r in rows if r["part"] == "b"] == [False, True, False]


@needs("mnist")
@needs("cifar10")
def test_transfer_e2e_quick(tmp_path: Path) -> None:
    out = run_bench("transfer_e2e.py", "--mnist", str(DATA / "mnist"), "--cifar", str(DATA / "cifar10"),
                    "--out", str(tmp_path))
    found = ratios(out)
    for space in ("nb201-C4-N1", "attn"):
        for mode in ("prefix", "compatible"):
            assert f"e2e.{space}.{mode}.time_to_target" in found, out
    assert "e2e.epochs.pair0.compatible" in found, out
    assert "QUICK scale" in out
    for name in ("e2e_runs.csv", "e2e_epochs.csv", "e2e.json", "anytime_attn.png", "anytime_nb201-C4-N1.png",
                 "epochs_0.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    runs = json.loads((tmp_path / "e2e.json").read_text())["runs"]
    assert {(r["space"], r["config"]) for r in runs} == {(s, c) for s in ("nb201-C4-N1", "attn")
                                                          for c in ("off", "prefix", "compatible")}
    assert all(r["hit_ratio"] == 0 and r["transfer_bytes"] == 0 for r in runs if r["config"] == "off")
