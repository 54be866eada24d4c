"""What the cache's bookkeeping costs a search: its share of a real training search's wall time, and the
wall time of a 10^4-evaluation tabular NB201 search with the cache on against the same search with
``--no-cache``.

    python bench/bookkeeping.py [--mnist DIR] [--table CSV] [--repeats 2] [--out DIR] [--quick]

(a) A small real search (``run_search --evaluator train --space attn --dataset mnist``): the summed
    ``cache_s`` of the trace (lookup + copy into the model + put) over the search's wall time.
(b) The tabular search (``--evaluator tabular``, NB201 table, 1024 simulated workers): nothing is trained,
    so the cache's work (synthetic tensors of 1/64 the real layer sizes, memory + LMDB tiers, default
    policy) is nearly all the work; runs with the cache off and on are interleaved (off, on, off, ...),
    and the ratio is the cache-on search's throughput over the cache-off one's. Target: cache on < 60 s.

Writes DIR/bookkeeping.csv and DIR/bookkeeping.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from common import data_path, exit_status, machine, write_results

from nas_integration.data import nb201_table
from nas_integration.search import SearchSettings, run_search
from tensorcache.cli import dashed_values, positive_int

TABULAR_TARGET_S = 60.0


def timed_search(settings: SearchSettings) -> tuple[dict[str, Any], float]:
    """The search's summary and the seconds the whole ``run_search`` call took (table/data loading included)."""
    t0 = time.perf_counter()
    summary = run_search(settings)
    return summary, time.perf_counter() - t0


def train_share(data_dir: str | None, workdir: str, quick: bool) -> dict[str, Any]:
    """(a): cache seconds over wall seconds of a small real-training search."""
    size = dict(evals=3, population=2, sample=1, train_subset=400) if quick else \
        dict(evals=24, population=8, sample=3, train_subset=5000)  # run_search's defaults for --evaluator train
    settings = SearchSettings(out=os.path.join(workdir, "train"), evaluator="train", space="attn",
                              dataset="mnist", data_dir=data_dir, epochs=1, seed=0, **size)
    summary, call_s = timed_search(settings)
    with open(summary["trace"]) as f:
        records = [json.loads(line) for line in f]
    cache_s = sum(r["cache_s"] for r in records)
    train_s = sum(r["train_s"] for r in records)
    seconds = (summary.get("cache") or {}).get("seconds", {})
    return {"part": "a", "search": "train attn/mnist", "evaluations": len(records), "wall_s": summary["wall_s"],
            "call_s": call_s, "cache_s": cache_s, "train_s": train_s, "cache_share": cache_s / summary["wall_s"],
            "cache_share_of_train": cache_s / train_s if train_s else None, "hit_ratio": summary["hit_ratio"],
            "bytes_served": summary["bytes_served"], "put_s": seconds.get("put"),
            "lookup_s": seconds.get("lookup"), "apply_s": seconds.get("apply"), "settings": size}


def tabular_runs(table: str, workdir: str, repeats: int, quick: bool) -> list[dict[str, Any]]:
    """(b): interleaved cache-off / cache-on tabular searches, starting and ending with cache off."""
    size = dict(evals=500, workers=64) if quick else dict(evals=10_000, workers=1024)
    order = [False] + [flag for _ in range(repeats) for flag in (True, False)]
    rows = []
    for i, cache in enumerate(order):
        out = os.path.join(workdir, f"tabular-{i}")
        settings = SearchSettings(out=out, evaluator="tabular", table=table, space="nb201", dataset="cifar10",
                                  cache=cache, seed=0, transfer="prefix", **size)  # as its results were measured
        summary, call_s = timed_search(settings)
        stats = summary.get("cache") or {}
        rows.append({"part": "b", "search": "tabular nb201/cifar10", "cache": cache, "run": i,
                     "evaluations": summary["evaluations"], "workers": summary["workers"],
                     "wall_s": summary["wall_s"], "call_s": call_s, "cache_s": summary["cache_s"],
                     "hit_ratio": summary["hit_ratio"], "put_s": stats.get("seconds", {}).get("put"),
                     "lookup_s": stats.get("seconds", {}).get("lookup"),
                     "evictions": sum(stats.get("evictions", {}).values()) if stats else 0,
                     "best_score": (summary["best"] or {}).get("score")})
        print(f"  tabular run {i}: cache {'on ' if cache else 'off'} {call_s:6.1f} s "
              f"(search loop {summary['wall_s']:.1f} s, cache {summary['cache_s']:.1f} s)", flush=True)
        shutil.rmtree(out, ignore_errors=True)  # the LMDB file of a 10^4 search is ~0.5 GB
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mnist", default=data_path("mnist"), metavar="DIR",
                   help="MNIST IDX folder (default: $TENSORCACHE_DATA/mnist, else found or downloaded as "
                        "run_search --dataset mnist does)")
    p.add_argument("--table", default=str(nb201_table()), metavar="CSV",
                   help="NAS-Bench-201 table (default: the one shipped with the package)")
    p.add_argument("--repeats", type=positive_int, default=2, help="cache-on tabular runs (one more cache-off run "
                                                         "brackets them) (default: 2)")
    p.add_argument("--out", metavar="DIR", default="runs/bench", help="where bookkeeping.csv/json go")
    p.add_argument("--quick", action="store_true", help="CI smoke size: 3 children; 500 tabular evaluations")
    args = p.parse_args(dashed_values(argv))
    meta = {**machine(), "quick": args.quick}
    print(f"bench/bookkeeping.py on {meta['device']}, {meta['cpus']} CPUs, {meta['date']}")
    with tempfile.TemporaryDirectory(prefix="bench-bookkeeping-") as workdir:
        print("(a) small real-training search ...", flush=True)
        a = train_share(args.mnist and os.path.abspath(args.mnist), workdir, args.quick)
        print("(b) tabular search, cache off/on interleaved ...", flush=True)
        b = tabular_runs(os.path.abspath(args.table), workdir, args.repeats, args.quick)
    on = [r["call_s"] for r in b if r["cache"]]
    off = [r["call_s"] for r in b if not r["cache"]]
    on_s, off_s = statistics.median(on), statistics.median(off)
    evals = b[0]["evaluations"]
    verdict = "met" if on_s < TABULAR_TARGET_S else "SHORT"
    print(f"\n(a) {a['search']}: {a['evaluations']} evaluations, wall {a['wall_s']:.1f} s, cache {a['cache_s']:.2f} s "
          f"(put {a['put_s'] or 0:.2f}, lookup {a['lookup_s'] or 0:.2f}, copy {a['apply_s'] or 0:.2f}), "
          f"train {a['train_s']:.1f} s, hit ratio {a['hit_ratio']:.0%}")
    print(f"share bookkeeping.train_search cache_s/wall_s {a['cache_share']:.4f} ({a['cache_share']:.2%})")
    print(f"(b) {evals} tabular evaluations on {b[0]['workers']} simulated workers: cache on {on_s:.1f} s "
          f"(median of {len(on)}), cache off {off_s:.1f} s (median of {len(off)}); hit ratio {b[1]['hit_ratio']:.1%}")
    print(f"ratio bookkeeping.tabular_on_vs_off {off_s / on_s:7.3f}   cache on {evals / on_s:.0f} evals/s vs "
          f"cache off {evals / off_s:.0f} evals/s")
    if not args.quick:
        print(f"target: cache-on tabular search < {TABULAR_TARGET_S:.0f} s: {on_s:.1f} s, {verdict}")
    summary = {"train_cache_share": a["cache_share"], "tabular_on_s": on_s, "tabular_off_s": off_s,
               "tabular_ratio": off_s / on_s, "tabular_target_s": TABULAR_TARGET_S,
               "tabular_target_met": on_s < TABULAR_TARGET_S}
    rows = [{k: v for k, v in a.items() if k != "settings"}] + b
    csv_path, _ = write_results(args.out, "bookkeeping", rows, {**meta, "train_settings": a["settings"]},
                                summary)
    print(f"wrote {csv_path} and bookkeeping.json")
    return 0


if __name__ == "__main__":
    sys.exit(exit_status(main))
