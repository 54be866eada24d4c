"""How fast a replay is, and how much of it is the engine's own work (the rest is the policy's).

    python bench/replay_speed.py --out DIR [--evals 10000] [--capacity 5] [--repeats 1] [--trace TRACE]

Records a tabular NB201 search (P=100, S=25, 64 simulated workers: the trace bench/policy_cost.py replays)
unless ``--trace`` names one (replayed with its own P, S and mode, from the summary.json beside it, else
inferred from the trace), then measures CPU seconds of this process (``time.process_time``):
preparing the trace once (reading it, building its Workload, the unbounded reference, the request stream
and the event schedule), and per policy one replay at ``--capacity`` percent of all bytes stored
(donor-window and evolution-aware at W = 4P, as a search runs them). The engine's own CPU is that of the
same replay with the policy replaced by a script of the victims it named (logged in a second, untimed
replay) that ignores every event: the same decisions, next to no policy work; the policy's CPU is the
rest. Policies are timed in turns, order rotating each repeat. Printed as ratio lines against lfu in the
same run (lfu CPU / subject CPU), then per policy the engine's share, and the end-to-end time of one
replay (preparing + replaying) against the 60 s target.
"""
from __future__ import annotations

import argparse
import gc
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from common import Comparison, exit_status, in_turns, machine, print_comparisons, write_comparisons
from policy_grid import record_trace

from nas_integration.data import nb201_table
from tensorcache.cli import dashed_values, positive_int
from tensorcache.events import PolicyEvent
from tensorcache.policies import Policy, make_policy
from tensorcache.policies.registry import POLICIES
from tensorcache.replay import PolicyStore, Workload, population_params, run, trace_settings
from tensorcache.trace import read_records

P, S = 100, 25  # of the search recorded without --trace; a trace's own come from its summary.json
TARGET_S = 60.0


class Recorder:
    """Stands in for a policy in a PolicyStore: passes every call on and logs the victims it names."""

    def __init__(self, policy: Policy) -> None:
        self.policy, self.name = policy, policy.name
        self.victims: list[Any] = []

    def handle(self, event: PolicyEvent) -> None:
        self.policy.handle(event)

    def victim(self) -> Any:
        key = self.policy.victim()
        self.victims.append(key)
        return key


class Scripted:
    """Names recorded victims in order and ignores every event: a replay through it makes the same
    decisions with next to no policy work, so its CPU is the engine's."""

    def __init__(self, name: str, victims: Sequence[Any]) -> None:
        self.name = name
        self._next = iter(victims).__next__

    def handle(self, event: PolicyEvent) -> None:
        pass

    def victim(self) -> Any:
        return self._next()


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    """(what ``call`` returns, its CPU seconds)."""
    t0 = time.process_time()
    out = call()
    return out, time.process_time() - t0


def cpu(call: Callable[[], Any]) -> float:
    return timed(call)[1]


def options(name: str, population: int) -> dict[str, Any]:
    """What a search gives the policy: W = 4P for the windowed ones."""
    return {"window": 4 * population} if name in ("donor-window", "evolution-aware") else {}


def measure(work: Workload, name: str, capacity: int, population: int, sample: int) -> tuple[float, float]:
    """(CPU of one replay, CPU of the same replay with the policy's decisions scripted: the engine's)."""
    P, S = population, sample
    gc.collect()
    total = cpu(lambda: run(work, PolicyStore(make_policy(name, **options(name, P)), capacity), name, capacity, P, S))
    recorder = Recorder(make_policy(name, **options(name, P)))
    run(work, PolicyStore(recorder, capacity), name, capacity, P, S)  # type: ignore[arg-type]
    scripted = Scripted(name, recorder.victims)
    del recorder
    gc.collect()
    engine = cpu(lambda: run(work, PolicyStore(scripted, capacity), name, capacity, P, S))  # type: ignore[arg-type]
    return total, engine


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--evals", type=positive_int, default=10_000)
    p.add_argument("--capacity", type=float, default=5.0, help="percent of all bytes stored (default 5)")
    p.add_argument("--policies", default="lfu,donor-window,evolution-aware")
    p.add_argument("--repeats", type=positive_int, default=1)
    p.add_argument("--trace", metavar="TRACE.jsonl", help="replay this trace instead of recording one")
    args = p.parse_args(dashed_values(argv))
    if not 0 <= args.capacity < math.inf:
        p.error(f"argument --capacity: expected a percent >= 0, got {args.capacity:g}")
    names = [n.strip() for n in args.policies.split(",") if n.strip()]
    bad = [n for n in names if n not in POLICIES or n == "belady"]
    if bad:
        p.error(f"argument --policies: {', '.join(map(repr, bad))} cannot be timed here; give online policies of "
                f"{', '.join(sorted(set(POLICIES) - {'belady'}))}")
    if "lfu" not in names:
        names.insert(0, "lfu")
    settings = trace_settings(args.trace) if args.trace else {"population": P, "sample": S}
    with tempfile.TemporaryDirectory(prefix="replay_speed_") as tmp:
        path = args.trace or record_trace(tmp, str(nb201_table()), args.evals, P, S, 64, 0, "prefix")
        prep: dict[str, float] = {}
        records, prep["read"] = timed(lambda: read_records(path))
        work, prep["workload"] = timed(lambda: Workload(records, settings.get("transfer", "prefix")))
        population, sample = population_params(work, settings.get("population"), settings.get("sample"))
        prep["reference"] = cpu(lambda: work.unbounded)
        prep["stream"] = cpu(lambda: work.clock)
        prep["schedule"] = cpu(lambda: work.steps(population, sample))
    capacity = int(work.total_bytes * args.capacity / 100)
    totals: dict[str, list[float]] = {n: [] for n in names}
    engines: dict[str, list[float]] = {n: [] for n in names}
    for _, name in in_turns(names, args.repeats):
        total, engine = measure(work, name, capacity, population, sample)
        totals[name].append(total)
        engines[name].append(engine)
    prepared = sum(prep.values())
    label = f"replay CPU, {len(work.evaluations)} evals, {args.capacity:g}%"
    comparisons = [Comparison("replay_speed", label, name, "lfu", 0, totals[name], totals["lfu"],
                              extra={"engine_s": statistics.median(engines[name]),
                                     "engine_share": statistics.median(engines[name]) / statistics.median(totals[name]),
                                     "prepare_s": prepared})
                   for name in names if name != "lfu"]
    print("prepare (CPU s, once per trace): " + ", ".join(f"{k} {v:.2f}" for k, v in prep.items())
          + f"; total {prepared:.2f}")
    print_comparisons("replay CPU against lfu (same run)", comparisons)
    for name in names:
        total, engine = statistics.median(totals[name]), statistics.median(engines[name])
        end_to_end = prepared + total
        print(f"{name:<16} replay {total:6.2f} s = engine {engine:5.2f} s ({engine / total:4.0%}) "
              f"+ policy {total - engine:6.2f} s; with preparing {end_to_end:6.2f} s: target under {TARGET_S:.0f} s "
              f"{'met' if end_to_end < TARGET_S else 'SHORT'}")
    write_comparisons(args.out, "replay_speed", comparisons, {**machine(), "prepare_s": prep,
                                                              "totals_s": totals, "engine_s": engines})
    return 0


if __name__ == "__main__":
    sys.exit(exit_status(main))
