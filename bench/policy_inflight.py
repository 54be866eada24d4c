"""Does telling the cache about children in flight (``run_search --inflight``) help evolution-aware eviction?

    python bench/policy_inflight.py --out DIR [--seeds 0,1] [--cells 50x5,100x25] [--workers 64,1024]
                                    [--capacities 2,5,20] [--evals 1000]

Each cell's trace is recorded by ``run_search --evaluator tabular`` as bench/policy_grid.py records it (into
DIR/traces/, reused when there), then replayed under evolution-aware (W = 4P, as a search sets it) with and
without each child described at its lookup, which is what a live search with ``--inflight`` tells its cache
(tests/tensorcache/test_replay.py checks live against replay both ways). The tabular search itself does not
depend on the cache, so one trace serves both. Rows go to DIR/inflight.jsonl; DIR/inflight.md gets the
means over the seeds: transfer and revisit yield without and with, and the change.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from common import exit_status, numbers, seeds, write_markdown_table
from policy_grid import cell, defined_mean, evaluations, record_trace

from nas_integration.data import nb201_table
from tensorcache.cli import dashed_values, positive_int
from tensorcache.replay import Workload, replay
from tensorcache.trace import read_records


def cell_pairs(text: str) -> list[tuple[int, int]]:
    """"50x5,100x25" -> [(50, 5), (100, 25)]."""
    try:
        pairs = [(int(p), int(s)) for p, s in (part.split("x") for part in text.split(","))]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected cells as PxS,PxS..., got {text!r}") from None
    bad = [f"{p}x{s}" for p, s in pairs if not 1 <= s <= p]
    if bad:
        raise argparse.ArgumentTypeError(f"a cell needs 1 <= S <= P, got {', '.join(bad)}")
    return pairs


def measure(work: Workload, P: int, S: int, pct: float) -> dict[str, float]:
    """Transfer and revisit yield of evolution-aware at ``pct``% capacity, without and with children in flight."""
    out: dict[str, float] = {}
    for inflight in (False, True):
        r = replay(work, "evolution-aware", int(work.total_bytes * pct / 100), population_size=P, sample_size=S,
                   policy_options={"window": 4 * P}, inflight=inflight)
        tag = "with" if inflight else "without"
        out[f"transfer_{tag}"], out[f"revisit_{tag}"] = r.transfer_yield, r.revisit_yield
    return out


def write_table(path: str, rows: Sequence[dict[str, Any]]) -> None:
    """Means over the seeds per (P, S, workers, capacity)."""
    groups: dict[tuple[int, int, int, float], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["P"], r["S"], r["workers"], r["capacity_pct"]), []).append(r)
    table = []
    for (P, S, w, pct), group in sorted(groups.items()):
        m = {k: defined_mean([r[k] for r in group]) for k in ("transfer_without", "transfer_with",
                                                               "revisit_without", "revisit_with")}
        table.append((P, S, w, f"{pct:g}", len(group), *(
            cell(v, spec) for v, spec in (
                (m["transfer_without"], ".3f"), (m["transfer_with"], ".3f"),
                (m["transfer_with"] - m["transfer_without"], "+.3f"),
                (m["revisit_without"], ".3f"), (m["revisit_with"], ".3f"),
                (m["revisit_with"] - m["revisit_without"], "+.3f")))))
    write_markdown_table(path, ("P", "S", "workers", "cap %", "seeds", "transfer without", "transfer with", "change",
                                "revisit without", "revisit with", "change"), table)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--table", default=str(nb201_table()), metavar="CSV")
    p.add_argument("--evals", type=positive_int, default=1000, help="evaluations per search, at least 2 x workers")
    p.add_argument("--cells", type=cell_pairs, default=[(50, 5), (100, 25)], metavar="PxS,...")
    p.add_argument("--workers", type=lambda t: numbers(t, int), default=[64, 1024])
    p.add_argument("--seeds", type=seeds, default=[0, 1])
    p.add_argument("--capacities", type=lambda t: numbers(t, float), default=[2, 5, 20])
    args = p.parse_args(dashed_values(argv))
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "inflight.jsonl")
    rows = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
    done = {(r["P"], r["S"], r["workers"], r["seed"], r["capacity_pct"]) for r in rows}
    with open(path, "a", encoding="utf-8") as sink:
        for seed in args.seeds:
            for P, S in args.cells:
                for workers in args.workers:
                    todo = [pct for pct in args.capacities if (P, S, workers, seed, pct) not in done]
                    if not todo:
                        continue
                    evals = evaluations(args.evals, workers)
                    trace = record_trace(args.out, args.table, evals, P, S, workers, seed, "prefix")
                    work = Workload(read_records(trace), "prefix")
                    for pct in todo:
                        row = {"P": P, "S": S, "workers": workers, "seed": seed, "evals": evals,
                               "capacity_pct": pct, **measure(work, P, S, pct)}
                        sink.write(json.dumps(row) + "\n")
                        sink.flush()
                        rows.append(row)
                        print(json.dumps(row), flush=True)
    write_table(os.path.join(args.out, "inflight.md"), rows)
    print(f"wrote {args.out}/inflight.md from {path}")
    return 0


if __name__ == "__main__":
    sys.exit(exit_status(main))
