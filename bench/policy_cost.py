"""What evolution-aware eviction costs: CPU of a live tabular search and of a replay, against cheap policies.

    python bench/policy_cost.py --out DIR [--live-evals 1500] [--replay-evals 10000] [--repeats 2]

Both measures are CPU seconds of this process (``time.process_time``), taken in turns with the baseline in
the same run, so other load on the machine shifts both alike. Printed as ``ratio`` lines (baseline CPU /
subject CPU, so 1.0 is "as cheap"; the live-search target is >= 1/1.5, i.e. within 1.5x of donor-window):

* live: ``run_search --evaluator tabular`` (NB201, 64 simulated workers, P=100, S=25, memory tier only,
  small enough to evict) with ``--policy evolution-aware`` against ``--policy donor-window``;
* replay: one replay of a 10^4-evaluation trace at 5% capacity, evolution-aware against lfu (the replay
  target is under 60 s on the 2-core machine; its absolute seconds are printed beside the ratio).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from nas_integration.data import nb201_table
from common import Comparison, machine, print_comparisons, write_comparisons
from nas_integration.search import SearchSettings, run_search
from tensorcache.config import CacheConfig
from tensorcache.replay import Workload, replay
from tensorcache.trace import read_trace


def cpu_turns(cases: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """CPU seconds of each call, ``repeats`` each, in turns (order rotating every round)."""
    names = list(cases)
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            t0 = time.process_time()
            cases[name]()
            out[name].append(time.process_time() - t0)
    return out


def live_search(table: str, folder: str, policy: str, evals: int, memory: str) -> Callable[[], Any]:
    def call() -> Any:
        return run_search(SearchSettings(out=os.path.join(folder, policy), evaluator="tabular", table=table,
                                         evals=evals, population=100, sample=25, workers=64,
                                         cache_config=CacheConfig(memory=memory, disk="none", policy=policy), run_id="c", overwrite=True))
    return call


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--table", default=str(nb201_table()), metavar="CSV")
    p.add_argument("--live-evals", type=int, default=1500)
    p.add_argument("--memory", default="48MB", help="memory tier of the live search (synthetic payloads are "
                   "1/64 of the real bytes, so 48MB holds about 5%% of a 1500-evaluation search)")
    p.add_argument("--replay-evals", type=int, default=10_000)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    work_dir = tempfile.mkdtemp(prefix="policy_cost_")
    try:
        live = cpu_turns({pol: live_search(args.table, work_dir, pol, args.live_evals, args.memory)
                          for pol in ("donor-window", "evolution-aware")}, args.repeats)
        trace_dir = os.path.join(work_dir, "long")
        run_search(SearchSettings(out=trace_dir, evaluator="tabular", table=args.table, evals=args.replay_evals,
                                  population=100, sample=25, workers=64, cache_config=CacheConfig(disk="none", policy="lru"), run_id="l"))
        work = Workload(read_trace(os.path.join(trace_dir, "trace.jsonl")), "prefix")
        cap = int(work.total_bytes * 0.05)
        replays = cpu_turns({pol: (lambda pol=pol: replay(work, pol, cap, population_size=100, sample_size=25,
                                                         policy_kwargs={"window": 400} if pol != "lfu" else None))
                             for pol in ("lfu", "evolution-aware")}, 1)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    comparisons = [
        Comparison("policy_cost", f"live search CPU, {args.live_evals} evals", "evolution-aware", "donor-window",
                   0, live["evolution-aware"], live["donor-window"], target=1 / 1.5),
        Comparison("policy_cost", f"replay CPU, {args.replay_evals} evals, 5%", "evolution-aware", "lfu", 0,
                   replays["evolution-aware"], replays["lfu"], note="target: under 60 s"),
    ]
    print_comparisons("evolution-aware cost (CPU seconds, same run)", comparisons)
    print(f"replay of {args.replay_evals} evaluations under evolution-aware: {replays['evolution-aware'][0]:.1f} s CPU "
          f"(lfu {replays['lfu'][0]:.1f} s)")
    write_comparisons(args.out, "policy_cost", comparisons, machine())
    return 0


if __name__ == "__main__":
    sys.exit(main())
