"""The held-out grid: eviction policies on NB201 searches over P x S x workers x seeds x capacities.

    python bench/policy_grid.py --out DIR [--evals 1000] [--seeds 0,1] [--capacities 2,5,20]

Each cell's trace is recorded by ``run_search --evaluator tabular`` (NAS-Bench-201 table, simulated
workers) into DIR/traces/, then every policy is replayed on it at every capacity (prefix-aware evaluation
of bench/policy_compare.py, which also gives the proven bound and the Belady heuristic). Results are
appended to DIR/grid.jsonl one row per (cell, capacity, policy) as soon as they exist, and a rerun skips
what is there, so the grid can be stopped and resumed; ``--redo NAME`` drops NAME's rows first (after a
policy changed). DIR/grid.md gets the table: evolution-aware's transfer yield (revisits excluded) as a
fraction of the bound and of the Belady heuristic, and its margin over the best other policy.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from common import exit_status, numbers, seeds, write_markdown_table
from policy_compare import OURS, libcachesim_policies, prefix_aware

from nas_integration.data import nb201_table
from tensorcache.cli import dashed_values, positive_int
from tensorcache.replay import Workload
from tensorcache.trace import read_records

SUBJECT = "evolution-aware"
HEURISTIC = "belady"


# libCacheSim's policies in the grid (to fit a 2-core budget): SIEVE and GDSF, the two that were best
# other online policy in policy_compare rows; LRU equals our lru there, ARC equalled our lfu, and S3-FIFO,
# LIRS and TinyLFU trailed (their small queue never admits a large layer, see bench/README.md)
GRID_LCS = ("SIEVE", "GDSF")


def cells(populations: Sequence[int], samples: Sequence[int], workers: Sequence[int],
          seeds: Sequence[int]) -> Iterator[tuple[int, int, int, int]]:
    """(P, S, workers, seed) for every S < P, one seed of every cell before the next seed."""
    for seed in seeds:
        for P in populations:
            for S in samples:
                if S < P:
                    for w in workers:
                        yield P, S, w, seed


def evaluations(evals: int, workers: int) -> int:
    """A search long enough that about half its children are bred from finished models: at least 2 x workers."""
    return max(evals, 2 * workers)


def cell_name(P: int, S: int, workers: int, seed: int, mode: str) -> str:
    return f"P{P}_S{S}_w{workers}_s{seed}_{mode}"


def record_trace(out: str, table: str, evals: int, P: int, S: int, workers: int, seed: int, mode: str) -> str:
    """Run (or reuse) the cell's tabular search; returns its trace path."""
    from nas_integration.search import SearchSettings, run_search
    from tensorcache.config import CacheConfig

    folder = os.path.join(out, "traces", cell_name(P, S, workers, seed, mode))
    path = os.path.join(folder, "trace.jsonl")
    if not os.path.exists(os.path.join(folder, "summary.json")):
        run_search(SearchSettings(out=folder, evaluator="tabular", table=table, evals=evals, population=P, sample=S,
                                  workers=workers, seed=seed, transfer=mode, cache_config=CacheConfig(disk="none", policy="lru"),
                                  run_id=f"s{seed}", overwrite=True))
    return path


def load_rows(path: str) -> list[dict[str, Any]]:
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def summarize(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (P, S, workers, capacity), means over seeds: the subject's transfer yield, its fraction of the
    bound and of the heuristic, and its margin over the best other online policy."""
    groups: dict[tuple, dict[int, dict[str, dict[str, Any]]]] = {}
    for r in rows:
        key = (r["mode"], r["P"], r["S"], r["workers"], r["capacity_pct"])
        groups.setdefault(key, {}).setdefault(r["seed"], {})[f"{r['family']}:{r['policy']}"] = r
    out = []
    for key in sorted(groups):
        per_seed = [g for g in groups[key].values() if f"ours:{SUBJECT}" in g and "bound:bound" in g]
        if not per_seed:
            continue
        evo = [g[f"ours:{SUBJECT}"]["transfer_yield"] for g in per_seed]
        revisit = [g[f"ours:{SUBJECT}"]["revisit_yield"] for g in per_seed]
        others = [_best_other(g, "transfer_yield") for g in per_seed]
        others_r = [_best_other(g, "revisit_yield") for g in per_seed]
        mode, P, S, workers, pct = key
        out.append({"mode": mode, "P": P, "S": S, "workers": workers, "capacity_pct": pct, "seeds": len(per_seed),
                    "evo_transfer": defined_mean(evo),
                    "vs_bound": defined_mean([e / g["bound:bound"]["transfer_yield"] for e, g in zip(evo, per_seed)]),
                    "vs_belady": defined_mean([e / g[f"ours:{HEURISTIC}"]["transfer_yield"]
                                               for e, g in zip(evo, per_seed) if f"ours:{HEURISTIC}" in g]),
                    "margin": defined_mean([e - o for e, (_, o) in zip(evo, others)]),
                    "margin_ci": _half_width([e - o for e, (_, o) in zip(evo, others)]),
                    "margin_ahead": sum(e > o for e, (_, o) in zip(evo, others)),
                    "best_other": "/".join(sorted({n for n, _ in others})),
                    "evo_revisit": defined_mean(revisit),
                    "revisit_vs_bound": defined_mean([e / g["bound:bound"]["revisit_yield"]
                                                      for e, g in zip(revisit, per_seed)]),
                    "revisit_margin": defined_mean([e - o for e, (_, o) in zip(revisit, others_r)]),
                    "revisit_margin_ci": _half_width([e - o for e, (_, o) in zip(revisit, others_r)]),
                    "revisit_ahead": sum(e > o for e, (_, o) in zip(revisit, others_r)),
                    "best_other_revisit": "/".join(sorted({n for n, _ in others_r})),
                    "evo_seconds": defined_mean([g[f"ours:{SUBJECT}"]["seconds"] for g in per_seed])})
    return out


def _best_other(group: dict[str, dict[str, Any]], metric: str) -> tuple[str, float]:
    """(name, value) of the best online policy other than the subject, ours or libCacheSim's; ("none", NaN)
    when the grid ran no other (a run of the subject alone)."""
    rivals = {n: r[metric] for n, r in group.items()
              if r["family"] in ("ours", "libcachesim") and r["policy"] not in (SUBJECT, HEURISTIC, "Belady")
              and not math.isnan(r[metric])}
    if not rivals:
        return "none", math.nan
    best = max(rivals, key=rivals.get)
    return best, rivals[best]


def defined_mean(values: Sequence[float]) -> float:
    """The mean of the values that are defined (a yield is NaN where its denominator is 0), else NaN."""
    values = [v for v in values if not math.isnan(v)]
    return statistics.fmean(values) if values else math.nan


def _half_width(values: Sequence[float], confidence: float = 0.95) -> float:
    """Half width of the t interval of the mean over the seeds (NaN with fewer than two)."""
    values = [v for v in values if not math.isnan(v)]
    if len(values) < 2:
        return math.nan
    from scipy.stats import t

    return float(t.ppf((1 + confidence) / 2, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values)))


def cell(value: float, spec: str = ".3f") -> str:
    """A table cell: ``value`` formatted, or n/a where it is undefined (no revisit in the cell, no rival)."""
    return "n/a" if math.isnan(value) else format(value, spec)


def _with_ci(mean: float, half: float, ahead: int, seeds: int) -> str:
    """``+0.100 ± 0.030 (3/3)``: the mean margin, its 95% t half width and the seeds it is positive in."""
    if math.isnan(mean):
        return "n/a"
    ci = "" if math.isnan(half) else f" ± {half:.3f}"
    return f"{mean:+.3f}{ci} ({ahead}/{seeds})"


def write_table(path: str, summary: Sequence[dict[str, Any]]) -> None:
    header = ("mode", "P", "S", "workers", "cap %", "seeds", "evo transfer yield", "÷ bound", "÷ Belady heuristic",
              "margin over best other (95% CI, seeds ahead)", "best other", "evo revisit yield", "revisit ÷ bound",
              "revisit margin (95% CI, seeds ahead)",
              "best other (revisit)", "evo replay s")
    write_markdown_table(path, header, (
        (s["mode"], s["P"], s["S"], s["workers"], f"{s['capacity_pct']:g}", s["seeds"], cell(s["evo_transfer"]),
         cell(s["vs_bound"]), cell(s["vs_belady"]), _with_ci(s["margin"], s["margin_ci"], s["margin_ahead"],
                                                             s["seeds"]), s["best_other"],
         cell(s["evo_revisit"]), cell(s["revisit_vs_bound"]),
         _with_ci(s["revisit_margin"], s["revisit_margin_ci"], s["revisit_ahead"], s["seeds"]),
         s["best_other_revisit"], cell(s["evo_seconds"], ".1f")) for s in summary))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--table", default=str(nb201_table()), metavar="CSV")
    p.add_argument("--evals", type=positive_int, default=1000, help="evaluations per search, at least 2 x workers "
                   "(default 1000: 2048 with 1024 workers)")
    p.add_argument("--populations", type=lambda t: numbers(t, int), default=[50, 100, 200])
    p.add_argument("--samples", type=lambda t: numbers(t, int), default=[5, 10, 25])
    p.add_argument("--workers", type=lambda t: numbers(t, int), default=[1, 64, 1024])
    p.add_argument("--seeds", type=seeds, default=[0, 1])
    p.add_argument("--capacities", type=lambda t: numbers(t, float), default=[2, 5, 20])
    p.add_argument("--mode", choices=("prefix", "compatible"), default="prefix")
    p.add_argument("--policies", help="comma-separated subset of our policies (default: all)")
    p.add_argument("--no-libcachesim", action="store_true", help="our policies and the bound only")
    p.add_argument("--redo", action="append", default=[], metavar="NAME", help="drop NAME's rows and run it again")
    p.add_argument("--table-only", action="store_true", help="rewrite grid.md from grid.jsonl and stop")
    args = p.parse_args(dashed_values(argv))
    os.makedirs(args.out, exist_ok=True)
    results = os.path.join(args.out, "grid.jsonl")
    rows = [r for r in load_rows(results) if r["policy"] not in args.redo]
    if args.redo:
        with open(results, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    if not args.table_only:
        ours = tuple(args.policies.split(",")) if args.policies else OURS
        unknown = [n for n in ours if n not in OURS]
        if unknown:
            p.error(f"argument --policies: unknown {', '.join(map(repr, unknown))}; ours are {', '.join(OURS)}")
        lcs = {} if args.no_libcachesim else {n: m for n, m in libcachesim_policies().items() if n in GRID_LCS}
        done = {(r["mode"], r["P"], r["S"], r["workers"], r["seed"], r["capacity_pct"], r["family"], r["policy"])
                for r in rows}
        todo = list(cells(args.populations, args.samples, args.workers, args.seeds))
        if not todo:
            p.error(f"no cell: a cell needs S < P, and every --samples value ({', '.join(map(str, args.samples))}) "
                    f"is >= every --populations value ({', '.join(map(str, args.populations))})")
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns) as bar, open(results, "a", encoding="utf-8") as sink:
            task = bar.add_task("grid", total=len(todo) * len(args.capacities))
            for P, S, workers, seed in todo:
                name = cell_name(P, S, workers, seed, args.mode)
                cell = (args.mode, P, S, workers, seed)
                wanted = [("ours", n) for n in ours] + [("libcachesim", n) for n in lcs] + [("bound", "bound")]
                if all(cell + (pct,) + w in done for pct in args.capacities for w in wanted):
                    bar.advance(task, len(args.capacities))
                    continue
                bar.update(task, description=f"{name}: search")
                evals = evaluations(args.evals, workers)
                work = Workload(read_records(record_trace(args.out, args.table, evals, P, S, workers, seed,
                                                        args.mode)), args.mode)
                for pct in args.capacities:
                    bar.update(task, description=f"{name} {pct:g}%")
                    cap = int(work.total_bytes * pct / 100)
                    todo_ours = [n for n in ours if cell + (pct, "ours", n) not in done]
                    todo_lcs = {n: m for n, m in lcs.items() if cell + (pct, "libcachesim", n) not in done}
                    for family, policy, metrics in prefix_aware(work, cap, P, S, todo_ours, todo_lcs):
                        if cell + (pct, family, policy) in done:
                            continue
                        row = {"mode": args.mode, "P": P, "S": S, "workers": workers, "seed": seed, "evals": evals,
                               "capacity_pct": pct, "capacity_bytes": cap, "family": family, "policy": policy,
                               **{k: v for k, v in metrics.items() if not k.endswith(("_vs_bound", "_vs_belady"))}}
                        sink.write(json.dumps(row) + "\n")
                        sink.flush()
                        rows.append(row)
                    bar.advance(task)
    summary = summarize(rows)
    write_table(os.path.join(args.out, "grid.md"), summary)
    print(f"wrote {args.out}/grid.md ({len(summary)} rows) from {results}"
          + ("" if summary or not rows else f": it tabulates {SUBJECT} against the others, and {results} holds no "
             f"{SUBJECT} row (give it in --policies)"))
    return 0


if __name__ == "__main__":
    sys.exit(exit_status(main))
