"""How fast a replay is, and how much of it is the engine's own work (the rest is the policy's).

    python bench/replay_speed.py --out DIR [--evals 10000] [--capacity 5] [--repeats 1] [--trace TRACE]

Records a tabular NB201 search (P=100, S=25, 64 simulated workers: the trace bench/policy_cost.py replays)
unless ``--trace`` names one, then measures CPU seconds of this process (``time.process_time``):
preparing the trace once (reading it, building its Workload, the unbounded reference, the request stream
and the event schedule), and per policy one replay at ``--capacity`` percent of all bytes stored
(donor-window and evolution-aware at W = 4P, as a search runs them). A policy's own CPU is measured by
re-driving a fresh policy with the very calls the replay made to it (every event it heard and every victim
it named, logged in a second, untimed replay) and nothing else; the engine's CPU is the rest. Policies
are timed in turns, order rotating each repeat. Printed as ratio lines against lfu in the same run
(lfu CPU / subject CPU), then per policy the engine's share, and the end-to-end time of one replay
(preparing + replaying) against the 60 s target.
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from common import Comparison, machine, print_comparisons, write_comparisons

from tensorcache.events import PolicyEvent
from tensorcache.policies import Policy, make_policy
from tensorcache.replay import PolicyStore, Workload, run
from tensorcache.trace import read_trace

P, S = 100, 25
TARGET_S = 60.0


class Recorder:
    """Stands in for a policy in a PolicyStore: passes every call on and logs it (None: a victim query)."""

    def __init__(self, policy: Policy) -> None:
        self.policy, self.name = policy, policy.name
        self.log: list[PolicyEvent | None] = []

    def handle(self, event: PolicyEvent) -> None:
        self.log.append(event)
        self.policy.handle(event)

    def victim(self) -> Any:
        self.log.append(None)
        return self.policy.victim()


def redrive(policy: Policy, log: Sequence[PolicyEvent | None]) -> None:
    """Make ``policy`` hear ``log`` exactly as the replay made it."""
    handle, victim = policy.handle, policy.victim
    for event in log:
        if event is None:
            victim()
        else:
            handle(event)


def loop_only(log: Sequence[PolicyEvent | None]) -> None:
    """``redrive``'s loop without the policy: its cost is not the policy's."""
    for event in log:
        if event is None:
            pass


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    """(what ``call`` returns, its CPU seconds)."""
    t0 = time.process_time()
    out = call()
    return out, time.process_time() - t0


def cpu(call: Callable[[], Any]) -> float:
    return timed(call)[1]


def options(name: str) -> dict[str, Any]:
    """What a search gives the policy: W = 4P for the windowed ones."""
    return {"window": 4 * P} if name in ("donor-window", "evolution-aware") else {}


def record_trace(folder: str, evals: int) -> str:
    from nas_integration.data import nb201_table
    from nas_integration.search import SearchSettings, run_search
    from tensorcache.config import CacheConfig

    run_search(SearchSettings(out=folder, evaluator="tabular", table=str(nb201_table()), evals=evals,
                              population=P, sample=S, workers=64, cache_config=CacheConfig(disk="none", policy="lru"),
                              run_id="r"))
    return os.path.join(folder, "trace.jsonl")


def measure(work: Workload, name: str, capacity: int) -> tuple[float, float]:
    """(CPU of one replay, CPU of its policy alone); each timed from a collected heap, the recording
    policy gone before the fresh one is re-driven."""
    gc.collect()
    total = cpu(lambda: run(work, PolicyStore(make_policy(name, **options(name)), capacity), name, capacity, P, S))
    recorder = Recorder(make_policy(name, **options(name)))
    run(work, PolicyStore(recorder, capacity), name, capacity, P, S)  # type: ignore[arg-type]
    log = recorder.log
    del recorder
    fresh = make_policy(name, **options(name))
    gc.collect()
    policy = cpu(lambda: redrive(fresh, log)) - cpu(lambda: loop_only(log))
    return total, policy


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--evals", type=int, default=10_000)
    p.add_argument("--capacity", type=float, default=5.0, help="percent of all bytes stored (default 5)")
    p.add_argument("--policies", default="lfu,donor-window,evolution-aware")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--trace", metavar="TRACE.jsonl", help="replay this trace instead of recording one")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.policies.split(",") if n.strip()]
    if "lfu" not in names:
        names.insert(0, "lfu")
    with tempfile.TemporaryDirectory(prefix="replay_speed_") as tmp:
        path = args.trace or record_trace(os.path.join(tmp, "trace"), args.evals)
        prep: dict[str, float] = {}
        records, prep["read"] = timed(lambda: read_trace(path))
        work, prep["workload"] = timed(lambda: Workload(records, "prefix"))
        prep["reference"] = cpu(lambda: work.unbounded)
        prep["stream"] = cpu(lambda: work.clock)
        prep["schedule"] = cpu(lambda: work.steps(P, S))
    capacity = int(work.total_bytes * args.capacity / 100)
    totals: dict[str, list[float]] = {n: [] for n in names}
    policies: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            total, policy = measure(work, name, capacity)
            totals[name].append(total)
            policies[name].append(policy)
    prepared = sum(prep.values())
    label = f"replay CPU, {len(work.evaluations)} evals, {args.capacity:g}%"
    comparisons = [Comparison("replay_speed", label, name, "lfu", 0, totals[name], totals["lfu"],
                              extra={"policy_s": statistics.median(policies[name]),
                                     "engine_share": 1 - statistics.median(policies[name]) / statistics.median(totals[name]),
                                     "prepare_s": prepared})
                   for name in names if name != "lfu"]
    print("prepare (CPU s, once per trace): " + ", ".join(f"{k} {v:.2f}" for k, v in prep.items())
          + f"; total {prepared:.2f}")
    print_comparisons("replay CPU against lfu (same run)", comparisons)
    for name in names:
        total, policy = statistics.median(totals[name]), statistics.median(policies[name])
        end_to_end = prepared + total
        print(f"{name:<16} replay {total:6.2f} s = engine {total - policy:5.2f} s ({(total - policy) / total:4.0%}) "
              f"+ policy {policy:6.2f} s; with preparing {end_to_end:6.2f} s: target under {TARGET_S:.0f} s "
              f"{'met' if end_to_end < TARGET_S else 'SHORT'}")
    write_comparisons(args.out, "replay_speed", comparisons, {**machine(), "prepare_s": prep,
                                                              "totals_s": totals, "policy_s": policies})
    return 0


if __name__ == "__main__":
    sys.exit(main())
