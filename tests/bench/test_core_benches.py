"""The cache-core benches run end to end at a tiny size, print their ratio lines and end healthy.

Timings are printed by the benches, never asserted here: the machine is shared and noisy.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(script: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0, f"{script} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_catalog_bench_opens_files_of_every_history_with_their_live_models(tmp_path: Path) -> None:
    out = _run("catalog.py", "--live", "40", "--history", "20", "200", "--repeats", "1", "--batch", "7",
               "--out", str(tmp_path))
    assert "ratio catalog.open_h20_vs_h20 " in out and "ratio catalog.open_h200_vs_h40 " in out, out
    rows = json.loads((tmp_path / "catalog.json").read_text())["rows"]
    assert [(r["history"], r["live"]) for r in rows] == [(20, 20), (200, 40)]


def test_catalog_bench_opens_models_of_many_layers(tmp_path: Path) -> None:
    out = _run("catalog.py", "--live", "30", "--history", "60", "--repeats", "1", "--layers", "5", "--out", str(tmp_path))
    assert "at 30 live models of 5 layers" in out, out
    assert [(r["live"], r["layers"]) for r in json.loads((tmp_path / "catalog.json").read_text())["rows"]] == [(30, 5)]


def test_scale_bench_prints_windows_and_ends_with_healthy_tiers(tmp_path: Path) -> None:
    out = _run("scale.py", "--evals", "60", "240", "60", "--workers", "10", "--window", "40", "--out", str(tmp_path))
    # (60 given twice is searched once: it failed with "trace.jsonl already exists" in the bench's own folder)
    assert "ratio scale.per_eval_240_vs_60 " in out and "ratio scale.window_last_vs_first_serving " in out, out
    assert out.count("window to ") == 6, out
    last = next(line for line in out.splitlines() if "window_last_vs_first_serving" in line)
    assert "(to 240) vs" in last, out  # the search's last window counts, though no child starts in it
    rows = json.loads((tmp_path / "scale.json").read_text())["rows"]
    assert [r["healthy"] for r in rows] == [True, True] and all(r["dropped_puts"] == 0 for r in rows)
    windows = json.loads((tmp_path / "scale.json").read_text())["raw"]["240"]
    assert all(w["cache_ms_per_eval"] > 0 for w in windows), windows  # the cache's part of each window
    assert sum(w["young_gcs"] for w in windows) > 0 and "young collections" in out, out  # the collector probe
    kinds = [w["cache_ms_by_kind"] for w in windows]  # each window's evaluations by what the cache did, all counted
    assert [sum(n for n, _ in k.values()) for k in kinds] == [40] * 6 and "unserved" in kinds[0], kinds
    assert all(ms > 0 for k in kinds for _, ms in k.values()), kinds


def test_tracked_bench_counts_the_objects_a_put_leaves_the_collector(tmp_path: Path) -> None:
    out = _run("tracked.py", "--puts", "40", "--warmup", "20", "--repeats", "1", "--out", str(tmp_path))
    assert "tracked objects per put, as its next young collection first sees them" in out, out
    row = json.loads((tmp_path / "tracked.json").read_text())["rows"][0]
    assert row["first_seen"] >= row["after_young"] >= row["after_full"] >= row["layers_per_put"] > 10, row
