"""What ``tensorcache replay --recommend`` picks on the grid's traces: per cell and capacity, the pick of each
seed, its margin in training seconds over the runner-up (with the bootstrap interval over lookups), and the
pick's share of the value bound.

    python bench/policy_recommend.py --grid DIR [DIR ...] --out OUT [--capacities 2,5,20] [--resamples 1000]

DIR is a ``bench/policy_grid.py --out`` folder (its traces/ and their summary.json); every trace is replayed
as its search ran (P, S, mode and children in flight from summary.json). Each trace's verdicts are written
to OUT/verdicts/<cell>.json as ``replay --recommend --json`` prints them, and a rerun reuses them;
OUT/recommend.md gets the table.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any

from common import exit_status, numbers, write_markdown_table

from tensorcache.cli import dashed_values, positive_int
from tensorcache.replay import Workload, population_params, trace_settings
from tensorcache.replay.recommend import overall, recommend
from tensorcache.trace import read_records

CELL = re.compile(r"P(?P<P>\d+)_S(?P<S>\d+)_w(?P<workers>\d+)_s(?P<seed>\d+)_(?P<mode>\w+)$")


def verdicts_of(trace: str, capacities: Sequence[float], resamples: int) -> dict[str, Any]:
    """``replay --recommend --json``'s answer for one trace at ``capacities`` percent of its bytes."""
    settings = trace_settings(trace)
    work = Workload(read_records(trace), settings.get("transfer", "prefix"))
    P, S = population_params(work, settings.get("population"), settings.get("sample"))
    found = recommend(work, [int(work.total_bytes * pct / 100) for pct in capacities], P, S,
                      inflight=bool(settings.get("inflight")), resamples=resamples)
    return {"score": "all", "unit": "training seconds", "recommend": overall(found),
            "capacities": [{"capacity": f"{pct:g}%", **vars(v)} for pct, v in zip(capacities, found)]}


def table_rows(answers: dict[str, dict[str, Any]]) -> list[tuple]:
    """Per (mode, P, S, workers, capacity): each seed's pick, the mean margin and interval, the pick ÷ bound."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for cell, answer in answers.items():
        m = CELL.match(cell)
        if m is None:
            continue
        for c in answer["capacities"]:
            key = (m["mode"], int(m["P"]), int(m["S"]), int(m["workers"]), float(c["capacity"].rstrip("%")))
            groups.setdefault(key, []).append({"seed": int(m["seed"]), **c})
    rows = []
    for key in sorted(groups):
        seeds = sorted(groups[key], key=lambda c: c["seed"])
        picks = Counter(c["best"] for c in seeds)
        hours = [(c["margin"] / 3600, c["low"] / 3600, c["high"] / 3600) for c in seeds]
        rows.append((*key[:4], f"{key[4]:g}", len(seeds), ", ".join(f"{p} {n}/{len(seeds)}" for p, n in picks.most_common()),
                     "; ".join(f"{m:+.1f} [{lo:+.1f}, {hi:+.1f}]" for m, lo, hi in hours),
                     " / ".join(f"{c['scores'][c['best']] / c['bound']:.3f}" if c["bound"] else "n/a" for c in seeds)))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--grid", nargs="+", required=True, metavar="DIR")
    p.add_argument("--out", required=True, metavar="OUT")
    p.add_argument("--capacities", type=lambda t: numbers(t, float), default=[2, 5, 20])
    p.add_argument("--resamples", type=positive_int, default=1000)
    args = p.parse_args(dashed_values(argv))
    os.makedirs(os.path.join(args.out, "verdicts"), exist_ok=True)
    answers = {}
    traces = {d: glob.glob(os.path.join(d, "traces", "*", "trace.jsonl")) for d in args.grid}
    for d, found in traces.items():
        if not found:
            p.error(f"argument --grid: {d!r} holds no traces (DIR/traces/<cell>/trace.jsonl, as bench/policy_grid.py "
                    "writes them)")
    for trace in sorted(t for found in traces.values() for t in found):
        cell = os.path.basename(os.path.dirname(trace))
        path = os.path.join(args.out, "verdicts", f"{cell}.json")
        if not os.path.exists(path):
            answer = verdicts_of(trace, args.capacities, args.resamples)
            with open(path + ".tmp", "w", encoding="utf-8") as f:
                json.dump(answer, f, indent=2)
            os.replace(path + ".tmp", path)
        with open(path, encoding="utf-8") as f:
            answers[cell] = json.load(f)
        print(f"{cell}: recommend {answers[cell]['recommend']}", flush=True)
    header = ("mode", "P", "S", "workers", "cap %", "seeds", "pick (seeds)",
              "margin over the runner-up, training hours, per seed [95% interval over lookups]", "pick ÷ value bound")
    write_markdown_table(os.path.join(args.out, "recommend.md"), header, table_rows(answers))
    print(f"wrote {args.out}/recommend.md")
    return 0


if __name__ == "__main__":
    sys.exit(exit_status(main))
