"""What evolution-aware eviction costs: CPU of a live tabular search and of a replay, against cheap policies.

    python bench/policy_cost.py --out DIR [--live-evals 1500] [--memory 48MB[,...]] [--replay-evals 10000]
                                [--repeats 2] [--same-as REV] [--before REV] [--streams] [--decisions]

Both measures are CPU seconds of this process (``time.process_time``), taken in turns with the baseline in
the same run, so other load on the machine shifts both alike; one untimed live search runs first, so that no
timed one pays for imports and first-use setup. Printed as ``ratio`` lines (baseline CPU /
subject CPU, so 1.0 is "as cheap"; the live-search target is >= 1/1.5, i.e. within 1.5x of donor-window):

* live: ``run_search --evaluator tabular`` (NB201, 64 simulated workers, P=100, S=25, memory tier only,
  small enough to evict) with ``--policy evolution-aware`` against ``--policy donor-window``, one ratio
  per memory size of ``--memory`` (a comma-separated list; each size's pair taken in turns);
* replay: one replay of a 10^4-evaluation trace at 5% capacity, evolution-aware against lfu (the replay
  target is under 60 s on the 2-core machine; its absolute seconds are printed beside the ratio);
  ``--replay-evals 0`` leaves it out.

``--before REV`` also runs the live search under evolution-aware as of git revision REV, in the same turns,
and prints the current code's CPU against it (ratio > 1: the current code is cheaper).

``--streams`` also records the calls each policy hears in one live search per memory size (its events and
its victim calls: the policy's own decisions shape them) and plays each policy's calls again, alone, in
turns: the policy's own CPU, apart from the search around it (the live ratio counts both). With ``--before``,
evolution-aware as of REV plays the current code's calls too and must name the same victims.

``--decisions`` also runs the live search, in the same turns, under a policy that names the victims evolution-aware
named in one recorded live search of that size and does nothing else: the search around evolution-aware's
decisions at almost no policy cost. Evolution-aware's CPU minus its CPU is what the policy costs inside the
search (printed as the ratio of the two searches; compare with the policy's own calls played alone, ``--streams``).

``--same-as REV`` also replays that trace at 2, 5 and 20% under evolution-aware as of git revision REV and
checks that both name the same victims in the same order (a cheaper policy must keep its decisions). Its
tier holds many entries, so a rebuild there waits for the churn share, not for ``refresh``: a change of
the re-rank interval alone does not show in this check (re-measure yields with bench/policy_grid.py).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from nas_integration.data import nb201_table
from common import Comparison, exit_status, interleaved, machine, print_comparisons, write_comparisons
from policy_grid import record_trace
from nas_integration.search import SearchSettings, run_search
from tensorcache.cli import dashed_values, positive_int
from tensorcache.config import CacheConfig
from tensorcache.policies import EvolutionAware, Policy, register_policy
from tensorcache.policies.registry import POLICIES
from tensorcache.replay import Workload, replay
from tensorcache.trace import read_records


def _cpu_turns(calls: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """CPU seconds of each call, ``repeats`` each, in turns, the collector left on (its cost is the policy's)."""
    return interleaved({name: (call, None) for name, call in calls.items()}, repeats, warmup=0,
                       clock=time.process_time, pause_gc=False)


def evolution_aware_at(rev: str) -> type[EvolutionAware]:
    """The EvolutionAware class as of git revision ``rev`` of this repository."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    shown = subprocess.run(["git", "show", f"{rev}:tensorcache/policies/evolution_aware.py"], cwd=root,
                           capture_output=True, text=True)
    if shown.returncode:
        raise ValueError(f"git revision {rev!r}: {shown.stderr.strip() or 'git show failed'}")
    source = shown.stdout
    name = "tensorcache.policies._evolution_aware_at_rev"
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader=None))
    module.__package__ = "tensorcache.policies"
    sys.modules[name] = module
    exec(compile(source, f"{rev}:tensorcache/policies/evolution_aware.py", "exec"), module.__dict__)
    return module.EvolutionAware


def victims(cls: type[EvolutionAware], work: Workload, capacity: int, P: int, S: int) -> list[Any]:
    """The victims, in order, that a replay under ``cls`` (W = 4P) evicts."""
    named: list[Any] = []

    class Recording(cls):  # type: ignore[misc, valid-type]
        def victim(self) -> Any:
            named.append(super().victim())
            return named[-1]

    replay(work, Recording(window=4 * P), capacity, population_size=P, sample_size=S)
    return named


def policy_calls(table: str, folder: str, cls: type[Policy], evals: int, memory: str) -> list[Any]:
    """The calls a policy of class ``cls`` hears in one live search: its events, and ``None`` for each victim call
    followed by the key it named."""
    calls: list[Any] = []

    class Recording(cls):  # type: ignore[misc, valid-type]
        def handle(self, event: Any) -> None:
            calls.append(event)
            super().handle(event)

        def victim(self) -> Any:
            calls.extend((None, super().victim()))
            return calls[-1]

    live_search(table, folder, Recording, evals, memory)()
    return calls


def play_calls(cls: type[Policy], calls: list[Any], window: int) -> Callable[[], Any]:
    """Make a ``cls`` policy hear ``calls`` again; a victim other than the one recorded is an error."""
    def call() -> None:
        policy = cls(window=window)
        handle, victim, named = policy.handle, policy.victim, iter(calls)
        for event in named:
            if event is not None:
                handle(event)
            elif victim() != next(named):
                raise RuntimeError(f"{cls.name} named another victim than the recorded search")
    return call


def deciding_as(calls: list[Any]) -> type[Policy]:
    """A policy that names the victims recorded in ``calls`` (``policy_calls``), in order, and keeps only the set of
    keys it holds: another policy's decisions at almost no cost (the search is deterministic, so they apply)."""
    named = [calls[i + 1] for i, call in enumerate(calls) if call is None]

    class Decided(Policy):
        name = "evolution-aware-victims"

        def __init__(self, window: int = 100) -> None:
            self._held: set[Any] = set()
            self._victims = iter(named)

        def on_insert(self, key: Any, size: int, model_id: str, deps: tuple[int, ...] = ()) -> None:
            self._held.add(key)

        def on_release(self, key: Any) -> None:
            self._held.discard(key)

        def victim(self) -> Any:
            return next(self._victims)

        def __len__(self) -> int:
            return len(self._held)

        def __contains__(self, key: object) -> bool:
            return key in self._held

    return Decided


def live_search(table: str, folder: str, policy: str | type[Policy], evals: int, memory: str) -> Callable[[], Any]:
    def call() -> Any:
        name = policy if isinstance(policy, str) else policy.name
        return run_search(SearchSettings(out=os.path.join(folder, name), evaluator="tabular", table=table,
                                         evals=evals, population=100, sample=25, workers=64,
                                         transfer="prefix",  # as its results were measured
                                         cache_config=CacheConfig(memory=memory, disk="none", policy=policy), run_id="c", overwrite=True))
    return call


def _replay_evals(text: str) -> int:
    """``--replay-evals``: evaluations of the replayed trace, a count >= 1, or 0 to leave the replay out."""
    return 0 if text.strip() == "0" else positive_int(text)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--table", default=str(nb201_table()), metavar="CSV")
    p.add_argument("--live-evals", type=positive_int, default=1500)
    p.add_argument("--memory", default="48MB", help="memory tier(s) of the live search, comma-separated (synthetic "
                   "payloads are 1/64 of the real bytes, so 48MB holds about 5%% of a 1500-evaluation search)")
    p.add_argument("--replay-evals", type=_replay_evals, default=10_000, help="evaluations of the replayed trace "
                   "(0: no replay)")
    p.add_argument("--repeats", type=positive_int, default=2)
    p.add_argument("--same-as", metavar="REV", help="check that evolution-aware as of git revision REV evicts "
                   "the same entries in the same order on the replay trace")
    p.add_argument("--before", metavar="REV", help="also run the live search under evolution-aware as of git revision "
                   "REV, in the same turns, and print the current code's CPU against it")
    p.add_argument("--streams", action="store_true", help="also measure each policy's own CPU on the calls it heard "
                   "in one live search per memory size")
    p.add_argument("--decisions", action="store_true", help="also run the live search under a policy that names "
                   "evolution-aware's recorded victims at almost no cost (the search around its decisions)")
    args = p.parse_args(dashed_values(argv))
    earlier = evolution_aware_at(args.same_as) if args.same_as else None  # a bad revision is named before any run
    work_dir = tempfile.mkdtemp(prefix="policy_cost_")
    memories = [m.strip() for m in args.memory.split(",") if m.strip()]
    comparisons, replays, same = [], {}, {}
    policies = ["donor-window", "evolution-aware"]
    if args.before:
        before = f"evolution-aware@{args.before}"
        register_policy(before, type("EvolutionAwareBefore", (evolution_aware_at(args.before),), {"name": before}))
        policies.append(before)
    window = 4 * 100  # what run_search sets for P = 100
    try:
        if memories:  # one untimed search first: the first timed one would pay for imports and first-use setup
            live_search(args.table, work_dir, "donor-window", args.live_evals, memories[0])()
        for memory in memories:
            searches = {pol: live_search(args.table, work_dir, pol, args.live_evals, memory) for pol in policies}
            recorded = ("donor-window", "evolution-aware") if args.streams else ("evolution-aware",) if args.decisions else ()
            heard = {pol: policy_calls(args.table, work_dir, POLICIES[pol], args.live_evals, memory) for pol in recorded}
            if args.decisions:
                decided = deciding_as(heard["evolution-aware"])
                searches[decided.name] = live_search(args.table, work_dir, decided, args.live_evals, memory)
            live = _cpu_turns(searches, args.repeats)
            comparisons.append(Comparison("policy_cost", f"live search CPU, {args.live_evals} evals, {memory}",
                                          "evolution-aware", "donor-window", 0, live["evolution-aware"],
                                          live["donor-window"], target=1 / 1.5))
            if args.before:
                comparisons.append(Comparison("policy_cost", f"live search CPU, {args.live_evals} evals, {memory}",
                                              "evolution-aware", before, 0, live["evolution-aware"], live[before]))
            if args.decisions:
                comparisons.append(Comparison("policy_cost", f"live search CPU, {args.live_evals} evals, {memory}",
                                              "evolution-aware", decided.name, 0, live["evolution-aware"],
                                              live[decided.name]))
                comparisons.append(Comparison("policy_cost", f"live search CPU, {args.live_evals} evals, {memory}",
                                              decided.name, "donor-window", 0, live[decided.name],
                                              live["donor-window"]))
            if args.streams:
                alone = _cpu_turns({pol: play_calls(POLICIES[pol], heard[pol.split("@")[0]], window)
                                    for pol in policies}, args.repeats)
                label = f"policy alone on its live calls, {args.live_evals} evals, {memory}"
                comparisons.append(Comparison("policy_cost", label, "evolution-aware", "donor-window", 0,
                                              alone["evolution-aware"], alone["donor-window"]))
                if args.before:
                    comparisons.append(Comparison("policy_cost", label, "evolution-aware", before, 0,
                                                  alone["evolution-aware"], alone[before], note="same victims"))
        if args.replay_evals:
            trace = record_trace(work_dir, args.table, args.replay_evals, 100, 25, 64, 0, "prefix")
            work = Workload(read_records(trace), "prefix")
            cap = int(work.total_bytes * 0.05)
            replays = _cpu_turns({pol: (lambda pol=pol: replay(work, pol, cap, population_size=100, sample_size=25,
                                                              policy_options={"window": 400} if pol != "lfu" else None))
                                  for pol in ("lfu", "evolution-aware")}, 1)
            comparisons.append(Comparison("policy_cost", f"replay CPU, {args.replay_evals} evals, 5%", "evolution-aware",
                                          "lfu", 0, replays["evolution-aware"], replays["lfu"],
                                          note="target: under 60 s"))
            if earlier is not None:
                for pct in (2, 5, 20):
                    c = int(work.total_bytes * pct / 100)
                    now, then = victims(EvolutionAware, work, c, 100, 25), victims(earlier, work, c, 100, 25)
                    same[pct] = (now == then, len(now), len(then))
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    print_comparisons("evolution-aware cost (CPU seconds, same run)", comparisons)
    if replays:
        print(f"replay of {args.replay_evals} evaluations under evolution-aware: {replays['evolution-aware'][0]:.1f} s "
              f"CPU (lfu {replays['lfu'][0]:.1f} s)")
    for pct, (equal, n_now, n_then) in same.items():
        print(f"victims at {pct}% against {args.same_as}: {'same' if equal else 'DIFFERENT'} "
              f"({n_now} now, {n_then} then)")
    write_comparisons(args.out, "policy_cost", comparisons, machine())
    return 0 if all(equal for equal, _, _ in same.values()) else 1


if __name__ == "__main__":
    sys.exit(exit_status(main))
