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


def run_bench(script: str, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    """Run ``bench/<script> --quick ARGS`` from the repository root; return its stdout (fails on rc != 0)."""
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--quick", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})
    assert proc.returncode == 0, f"{script} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def ratios(stdout: str) -> dict[str, str]:
    return dict(RATIO.findall(stdout))


def needs(name: str, *parts: str) -> pytest.MarkDecorator:
    """Skip unless $TENSORCACHE_DATA holds data set ``name`` (and the file ``parts`` inside it)."""
    present = DATA is not None and DATA.joinpath(name, *parts).exists()
    return pytest.mark.skipif(not present, reason=f"needs the full {name} data set: set $TENSORCACHE_DATA to a "
                                                  f"folder holding {'/'.join((name, *parts))}")


def test_tiers_quick(tmp_path: Path, redis_url: str) -> None:
    out = run_bench("tiers.py", "--out", str(tmp_path), env={"TENSORCACHE_TEST_REDIS_URL": redis_url})
    found = ratios(out)
    for label in ("memory.get+copy@1MiB", "memory.put@1MiB", "lmdb.get@1MiB", "lmdb.put@1MiB", "redis.get@1MiB",
                  "redis.put@1MiB", "lookup.memory@1MiB", "lookup.lmdb@1MiB", "lookup.redis@1MiB",
                  "warm.compatible.memory.vs_load", "warm.prefix.redis.vs_load", "warm.compatible.device.vs_copy",
                  "warm.prefix.memory.vs_copy", "warm.prefix.lmdb.vs_read+copy", "warm.prefix.foreach_floor.vs_copy",
                  "served.layers.vs_copy@1MiB", "served.layers.vs_lookup@1MiB", "put.attn.memory.vs_copy+hash",
                  "put.attn.lmdb.vs_raw", "put.attn.lmdb.vs_raw.cpu", "put.attn.lmdb.full_memory.vs_raw.cpu",
                  "put.attn.full_lmdb.vs_raw",
                  "put.attn.lmdb_series.vs_raw.cpu", "put.attn.lmdb_series.vs_raw.thread"):
        assert label in found, f"no ratio line for {label}:\n{out}"
        assert float(found[label]) > 0
    saved = json.loads((tmp_path / "tiers.json").read_text())
    assert {row["label"] for row in saved["rows"]} >= set(found)
    assert (tmp_path / "tiers.csv").read_text().startswith("group,label,subject,baseline,nbytes")


def test_tiers_warm_start_runs_without_redis_server_and_leaves_its_redis_tier_out(tmp_path: Path) -> None:
    bare = tmp_path / "bin"  # a PATH with python and nothing else: no redis-server, as on many GPU nodes
    bare.mkdir()
    (bare / "python").symlink_to(sys.executable)
    env = {k: v for k, v in os.environ.items() if k != "TENSORCACHE_TEST_REDIS_URL"}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "tiers.py"), "--quick", "--parts", "warm_start",
                           "--out", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**env, "PATH": str(bare)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    found = ratios(proc.stdout)
    assert "redis: none" in proc.stdout and "warm.prefix.memory.vs_copy" in found, proc.stdout
    assert not [label for label in found if ".redis." in label], found
    assert "this process asked for" not in proc.stderr, proc.stderr  # the raw reader opens the store at its capacity
    needs_redis = subprocess.run([sys.executable, str(ROOT / "bench" / "tiers.py"), "--quick", "--parts", "round_trip",
                                  "--out", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True,
                                 timeout=300, env={**env, "PATH": str(bare)})
    assert needs_redis.returncode == 2 and "Traceback" not in needs_redis.stderr, needs_redis.stderr
    assert needs_redis.stderr.strip().endswith("tiers.py: error: redis-server is not installed; pass --redis URL or "
                                               "install it (apt-get install redis-server)"), needs_redis.stderr


def test_prefault_quick() -> None:
    assert float(ratios(run_bench("prefault.py"))["prefault.loop_rounds"]) > 0


@needs("mnist")
def test_bookkeeping_quick(tmp_path: Path) -> None:
    out = run_bench("bookkeeping.py", "--repeats", "1", "--mnist", str(DATA / "mnist"), "--out", str(tmp_path))
    assert float(ratios(out)["bookkeeping.tabular_on_vs_off"]) > 0
    share = re.search(r"^share bookkeeping.train_search cache_s/wall_s (\d+\.\d+)", out, re.MULTILINE)
    assert share and 0 < float(share.group(1)) < 1, out
    rows = json.loads((tmp_path / "bookkeeping.json").read_text())["rows"]
    assert [r["cache"] for r in rows if r["part"] == "b"] == [False, True, False]


@needs("mnist")
@needs("cifar10", "cifar10-jpg.tar.gz")
def test_transfer_e2e_quick(tmp_path: Path) -> None:
    tar = DATA / "cifar10" / "cifar10-jpg.tar.gz"  # --cifar takes the archive itself, as its help says
    out = run_bench("transfer_e2e.py", "--mnist", str(DATA / "mnist"), "--cifar", str(tar), "--out", str(tmp_path),
                    timeout=600)  # trains real models: slow when the machine is shared
    found = ratios(out)
    for space in ("nb201-C4-N1", "attn"):
        assert f"e2e.{space}.compatible.evals_to_target" in found, out
    assert "QUICK scale" in out
    for name in ("e2e_runs.csv", "e2e.json", "anytime_attn.png", "anytime_nb201-C4-N1.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    runs = json.loads((tmp_path / "e2e.json").read_text())["runs"]
    assert {(r["space"], r["arm"]) for r in runs} == {(s, a) for s in ("nb201-C4-N1", "attn")
                                                      for a in ("off", "compatible")}
    for space in ("nb201-C4-N1", "attn"):  # the replay evaluates exactly the cache-off search's architectures
        off, on = (next(r for r in runs if r["space"] == space and r["arm"] == a) for a in ("off", "compatible"))
        assert off["evaluations"] == on["evaluations"] == 3 and off["target"] == on["target"] == off["best_val"]
        assert off["bytes_served"] == 0


@needs("cifar10", "cifar10-jpg.tar.gz")
@needs("nb201", "nb201_combined.csv")
def test_transfer_pairs_quick_resumes(tmp_path: Path) -> None:
    args = ("--cifar", str(DATA / "cifar10" / "cifar10-jpg.tar.gz"), "--table",
            str(DATA / "nb201" / "nb201_combined.csv"), "--pairs", "4", "--out", str(tmp_path))
    first = run_bench("transfer_pairs.py", *args, "--shard", "0/2", timeout=600)
    assert "2 to run in shard 0/2" in first
    out = run_bench("transfer_pairs.py", *args, timeout=600)
    assert "2 already in" in out and "2 to run in shard 0/1" in out  # the first call's pairs are not run again
    found = ratios(out)
    assert {"pairs.all.median_epochs_best", "pairs.all.median_epochs_plateau"} <= set(found), out
    saved = json.loads((tmp_path / "transfer_pairs.json").read_text())
    pairs = saved["pairs"]
    assert len(pairs) == 4 and len({p["parent_native"] for p in pairs}) == 3
    assert {p["stratum"] for p in pairs} <= {"adds", "removes", "swaps"}
    for p in pairs:  # both arms checked on the same schedule; the warm arm got some of its parent's tensors
        assert [e for e, _ in p["scratch"]] == [e for e, _ in p["warm"]] == [0.0, 0.5, 1.0]
        assert 0 < p["transferred_fraction"] <= 1
        assert p["diff_final"] == p["warm"][-1][1] - p["scratch"][-1][1]
    assert set(saved["ranking"]) == {"warm_vs_scratch", "scratch_vs_table", "warm_vs_table", "scratch_vs_scratch2"}
    for p in pairs:  # the noise ceiling's second scratch training ran on the same schedule
        assert [e for e, _ in p["scratch2"]] == [0.0, 0.5, 1.0]
    assert (tmp_path / "transfer_pairs.png").read_bytes()[:4] == b"\x89PNG"

def test_outcome_quick(tmp_path: Path) -> None:
    out = run_bench("outcome.py", "--out", str(tmp_path), timeout=600)
    found = ratios(out)
    for arm in ("cache-on", "random", "reeval"):
        assert f"outcome.{arm}_vs_cache-off.final_test" in found and f"outcome.{arm}_vs_cache-off.epochs_to_target" in found
    saved = json.loads((tmp_path / "outcome.json").read_text())
    assert set(saved["arms"]) == {"cache-on", "cache-off", "random", "reeval"} and saved["seeds"] == [0, 1]
    for arm, a in saved["arms"].items():
        low, mean, high = a["final_test"][1], a["final_test"][0], a["final_test"][2]
        assert 0 < low <= mean <= high <= 100 and len(a["curve_mean"]) == len(saved["checkpoints"]) == 4
        for seed in ("0", "1"):  # every search spent the same budget in epochs, counted alike
            assert saved["runs"][arm][seed]["epochs"] == saved["checkpoints"][-1]
    assert saved["arms"]["cache-off"]["reached"] >= 1  # a seed at or above the mean reaches it at the end
    assert (tmp_path / "outcome.png").stat().st_size > 0 and "| arm |" in (tmp_path / "outcome.md").read_text()


def test_outcome_ablation_quick(tmp_path: Path) -> None:
    args = ("--arms", "cache-on,cache-off", "--policies", "lru,donor-window", "--capacities", "8MB", "--seeds", "1",
            "--out", str(tmp_path))
    out = run_bench("outcome.py", *args, timeout=600)
    arms = {"cache-on[lru,8MB]", "cache-on[donor-window,8MB]"}
    for arm in arms:
        assert f"outcome.{arm}_vs_cache-off.final_test" in ratios(out), out
    saved = json.loads((tmp_path / "outcome.json").read_text())
    assert set(saved["arms"]) == arms | {"cache-off"}
    for arm in arms:  # 8 MB holds about two of these models: the policy chose what to evict
        assert saved["arms"][arm]["evictions"] > 0 and 0 < saved["arms"][arm]["new_byte_share"] < 1
    assert saved["arms"]["cache-off"]["evictions"] == 0 == saved["arms"]["cache-off"]["new_byte_share"]
    traces = {p: p.stat().st_mtime_ns for p in tmp_path.glob("searches/*/trace.jsonl")}
    assert len(traces) == 3 and (tmp_path / "searches" / "cache-on_lru_8MB-0" / "trace.jsonl") in traces
    run_bench("outcome.py", *args, "--resume", timeout=600)  # finished searches (same policy and size) reused
    assert {p: p.stat().st_mtime_ns for p in traces} == traces
    resumed = json.loads((tmp_path / "outcome.json").read_text())["runs"]
    for arm, by_seed in saved["runs"].items():
        for seed, run in by_seed.items():
            assert {k: v for k, v in resumed[arm][seed].items() if k != "wall_s"} == \
                {k: v for k, v in run.items() if k != "wall_s"}
