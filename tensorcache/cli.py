"""The ``tensorcache`` command: tools over recorded search traces (one subcommand per tool)."""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import Any

import numpy as np

from . import __version__, tables
from .metrics import json_safe
from .sizes import parse_size
from .trace import checked_setting, read_summary, summary_settings


def capacity_bytes(text: str, total: int) -> int:
    """``"10%"`` of ``total`` bytes, or an absolute size such as ``"512MB"``."""
    text = text.strip()
    if text.endswith("%"):
        try:
            pct = float(text[:-1])
        except ValueError:
            raise ValueError(f"bad capacity {text!r}: expected e.g. 10% or 512MB") from None
        if not 0 <= pct < math.inf:  # nan and inf included
            raise ValueError(f"bad capacity {text!r}: expected a percent >= 0")
        return int(total * pct / 100)
    return parse_size(text, what="capacity")


def capacities(text: str) -> str:
    """An argparse type for ``replay --capacity``: ``text`` unchanged once each comma-separated capacity in it
    reads, so that a bad one is named before the trace is read."""
    for part in text.split(","):
        if part.strip():
            try:
                capacity_bytes(part, 0)
            except ValueError as exc:
                raise argparse.ArgumentTypeError(str(exc)) from None
    return text


_MINUS_VALUE = re.compile(r"-\.?\d")  # "-5%", "-1GB", "-1,2", "-.5": a value, never one of our options


def dashed_values(argv: Sequence[str] | None = None) -> list[str]:
    """``argv`` (default: this process's arguments) with ``--opt -5%`` joined into ``--opt=-5%``: argparse takes a
    value that starts with a minus and is not a plain number for an option and answers "expected one argument";
    joined, the value reaches the option's own check, which names it."""
    out: list[str] = []
    for arg in sys.argv[1:] if argv is None else argv:
        last = out[-1] if out else ""
        if last.startswith("--") and "=" not in last and last != "--" and "--" not in out \
                and _MINUS_VALUE.match(arg):
            out[-1] = f"{last}={arg}"
        else:
            out.append(arg)
    return out


def positive_int(text: str) -> int:
    """An argparse type for counts that must be >= 1 (P, S, W): a bad one is named, not taken as "not given"."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def finite_float(text: str) -> float:
    """An argparse type for a score: a finite number (nan or inf would make every verdict on it empty or trivial)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def run_facts(args: argparse.Namespace, summary: dict[str, Any]) -> Any:
    """What ``analyze`` needs beyond the trace: options first, then the run's summary, then defaults."""
    from .analyze import RunFacts

    settings = summary_settings(summary)
    layers, layers_source = space_layers(settings.get("space"))
    low_cut, low_cut_source = args.low_cut, "given with --low-cut"
    if low_cut is None:
        low_cut, low_cut_source = table_cut(summary)
    from .fidelity import read_controls

    return RunFacts(population_size=args.population or settings.get("population"),
                    sample_size=args.sample or settings.get("sample"),
                    window=args.window or settings.get("window") or _policy_option(settings, "window"),
                    mutation_bias=float(settings.get("mutation_bias") or 0.0), low_cut=low_cut,
                    low_cut_source=low_cut_source, layers=layers, layers_source=layers_source,
                    transfer=settings.get("transfer") or "prefix", controls=read_controls(args.trace),
                    control=float(settings.get("control") or 0.0))


def _policy_option(settings: dict[str, Any], name: str) -> Any:
    """A policy option the run's cache config recorded (``settings.cache_config.policy_options``), or None (also,
    with a warning, when ``checked_setting`` refuses it)."""
    config = settings.get("cache_config")
    options = config.get("policy_options") if isinstance(config, dict) else None
    value = options.get(name) if isinstance(options, dict) else None
    return checked_setting(name, value, "settings.cache_config.policy_options")


SPACES = "tensorcache.spaces"  # entry-point group: a search space's name -> a factory of it (run_search's are there)


def space_layers(name: Any) -> tuple[Any, str]:
    """The layer maps of the search space the run names, from the installed package that registers a space of
    that name under the ``tensorcache.spaces`` entry point (else None: generic). A space has
    ``layer_map(arch, mode)`` and ``layer_nbytes(arch, mode)``."""
    if not isinstance(name, str):
        return None, ""
    try:
        space = next(iter(entry_points(group=SPACES, name=name))).load()()
    except (StopIteration, ImportError, ValueError):
        return None, ""
    return (lambda arch, mode: (space.layer_map(arch, mode), space.layer_nbytes(arch, mode))), \
        f"the {name} space's layer maps, bytes of its float32 model"


def table_cut(summary: dict[str, Any]) -> tuple[float | None, str]:
    """For a tabular run: the 25th percentile of its score column over the whole table (every architecture)."""
    from .analyze import LOW_QUANTILE

    evaluator = summary.get("evaluator") if isinstance(summary.get("evaluator"), dict) else {}
    table, column = evaluator.get("table"), evaluator.get("score_column")
    if not (isinstance(table, str) and isinstance(column, str) and os.path.isfile(table)):
        return None, ""
    values = tables.column(table, column)
    if not values:
        return None, ""
    return float(np.percentile(values, LOW_QUANTILE)), (f"{LOW_QUANTILE}th percentile of {column} over all "
                                                        f"{len(values)} architectures of the table")


class LazyBar:
    """A rich progress bar on stderr that appears only once the work has run ``after_s`` seconds, so quick
    runs print nothing; ``step`` advances by one, ``update`` sets the count (replay's callback)."""

    def __init__(self, label: str, total: int | None = None, after_s: float = 2.0) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._bar = Progress(TextColumn(label), TextColumn("{task.description}"), BarColumn(),
                             MofNCompleteColumn(), TimeElapsedColumn(), console=Console(stderr=True),
                             transient=True)
        self._task = self._bar.add_task("", total=total)
        self._t0, self._after_s, self._done = time.monotonic(), after_s, 0

    def update(self, done: int, total: int | None = None, description: str = "") -> None:
        if not self.shown and time.monotonic() - self._t0 >= self._after_s:
            self._bar.start()
        self._done = done
        self._bar.update(self._task, completed=done, description=description,
                         **({"total": total} if total is not None else {}))

    @property
    def shown(self) -> bool:
        """Whether the bar has been drawn (the work ran past ``after_s``)."""
        return self._bar.live.is_started

    def step(self, description: str = "") -> None:
        self.update(self._done + 1, description=description)

    def __enter__(self) -> LazyBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.shown:
            self._bar.stop()


def cmd_analyze(args: argparse.Namespace) -> int:
    from .analyze import STEPS, analyze
    from .trace import read_records

    facts = run_facts(args, read_summary(args.trace))
    with LazyBar("analyze", STEPS) as bar:
        findings = analyze(read_records(args.trace), args.out, facts, progress=bar.step,
                           title=os.path.basename(os.path.dirname(os.path.abspath(args.trace))))
    verdicts = Counter(f.verdict for f in findings if f.verdict)
    print(f"wrote {os.path.join(args.out, 'report.md')} ({len(findings)} findings; study's findings: "
          + ", ".join(f"{n} {v}" for v, n in sorted(verdicts.items())) + ")")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from .replay import Workload, replay, trace_settings
    from .trace import read_records

    settings = trace_settings(args.trace)
    if args.recommend:
        return recommend_policy(args, settings)
    with LazyBar(f"replay {args.policy}", after_s=3.0) as bar:
        bar.update(0, description="reading the trace")
        work = Workload(read_records(args.trace), args.mode or settings.get("transfer", "prefix"))
        bar.update(0, description="reference and schedule")
        result = replay(work, args.policy, capacity_bytes(args.capacity or "10%", work.total_bytes),
                        population_size=args.population or settings.get("population"),
                        sample_size=args.sample or settings.get("sample"),
                        progress=lambda done, total: bar.update(done, total, "events"),
                        inflight=bool(settings.get("inflight")))  # as the search told its cache
    if args.json:
        print(json.dumps(json_safe(result.metrics()), indent=2, allow_nan=False))
    else:
        from rich.console import Console

        Console().print(replay_table(result.metrics(), work.total_bytes))
    return 0


def recommend_policy(args: argparse.Namespace, settings: dict[str, Any]) -> int:
    """``replay --recommend``: every candidate policy at every capacity, ranked by training seconds served."""
    from .replay import Workload, population_params
    from .replay.recommend import CANDIDATES, overall, recommend
    from .sizes import format_size
    from .trace import read_records

    work = Workload(read_records(args.trace), args.mode or settings.get("transfer", "prefix"))
    P, S = population_params(work, args.population or settings.get("population"),
                             args.sample or settings.get("sample"))
    texts = [c for c in (args.capacity or "2%,5%,20%").split(",") if c.strip()]
    if not texts:
        raise ValueError(f"--capacity {args.capacity!r} names no capacity; give e.g. 2%,5%,20% or 512MB")
    capacities = [capacity_bytes(c, work.total_bytes) for c in texts]
    policies = args.policies.split(",") if args.policies else list(CANDIDATES)
    verdicts = recommend(work, capacities, P, S, policies, args.score, bool(settings.get("inflight")),
                         args.resamples, args.seed)
    pick = overall(verdicts)
    if args.json:
        print(json.dumps({"score": args.score, "unit": "training seconds", "recommend": pick, "capacities": [
            json_safe({"capacity": text, **{k: v for k, v in vars(v).items()}}) for text, v in zip(texts, verdicts)]},
            indent=2, allow_nan=False))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for text, v in zip(texts, verdicts):
        t = Table(title=f"{text.strip()} = {format_size(v.capacity_bytes)}: training seconds served ({args.score} "
                        f"children), bound {v.bound:,.1f} s")
        for column in ("policy", "seconds served", "÷ bound", "behind the best", "replay CPU s"):
            t.add_column(column, justify="left" if column == "policy" else "right")
        for name, got in sorted(v.scores.items(), key=lambda kv: -kv[1]):
            t.add_row(name, f"{got:,.1f}", f"{got / v.bound:.3f}" if v.bound > 0 else "n/a",
                      "-" if name == v.best else f"{got - v.scores[v.best]:+,.1f}", f"{v.cpu_s[name]:.2f}")
        console.print(t)
        if v.scores[v.best] <= 0:
            console.print("best: none (no policy served a layer at this capacity)")
        elif v.runner_up is None:
            console.print(f"best: {v.best} (the only candidate)")
        elif v.margin <= 0:
            console.print(f"best: {v.best} and {v.runner_up} tie (95% interval over resampled lookups "
                          f"{v.low:+,.1f} to {v.high:+,.1f} s)")
        else:
            console.print(f"best: {v.best}, {v.margin:+,.1f} s over {v.runner_up} (95% interval over resampled "
                          f"lookups {v.low:+,.1f} to {v.high:+,.1f} s; best in {v.wins:.0%} of {args.resamples})")
    if pick is None:
        console.print("recommend: none (no policy served a layer on this trace at these capacities)")
    else:
        console.print(f"recommend: {pick} (best at {sum(v.best == pick for v in verdicts)} of {len(verdicts)} "
                      "capacities)")
    return 0


def replay_table(m: dict[str, Any], total_bytes: int) -> Any:
    """A replay's metrics as a two-column table: the yields first (the headline), then the counters."""
    from rich.table import Table

    from .sizes import format_size

    def share(part: int, whole: int) -> str:
        return f"{format_size(part)} of {format_size(whole)}"

    t = Table(title=f"replay: {m['policy']} at {format_size(m['capacity_bytes'])} "
                    f"({m['capacity_bytes'] / max(total_bytes, 1):.1%} of all bytes stored)", show_header=False)
    t.add_column(style="bold")
    t.add_column(justify="right")
    t.add_column(style="dim")
    for name, value, detail in (
            ("transfer yield", m["transfer_yield"], "bytes served to new architectures / an unbounded cache's: "
             + share(m["transfer_bytes_served"], m["transfer_bytes_unbounded"])),
            ("revisit yield", m["revisit_yield"], "bytes served to revisits / an unbounded cache's: "
             + share(m["revisit_bytes_served"], m["revisit_bytes_unbounded"])),
            ("total yield", m["total_yield"], share(m["bytes_served"], m["bytes_unbounded"])),
            ("hit ratio", m["hit_ratio"], f"{m['hits']} of {m['lookups']} lookups served an arch-dependent layer"),
            ("byte hit ratio", m["byte_hit_ratio"], "bytes served / bytes of every child's full model")):
        t.add_row(name, f"{value:.3f}" if math.isfinite(value) else "n/a", detail)
    t.add_row("evictions", str(m["evictions"]), f"peak use {format_size(m['max_used_bytes'])}")
    return t


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tensorcache", description="Tools over tensorcache search traces "
                                "(TRACE = the trace.jsonl that run_search writes; P, S and the transfer mode "
                                "default to the summary.json beside it).")
    p.add_argument("--version", action="version", version=f"tensorcache {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("analyze", help="answer the study's four questions on a trace: report.md + PNGs")
    a.add_argument("trace", metavar="TRACE.jsonl")
    a.add_argument("--out", required=True, metavar="DIR")
    a.add_argument("--population", type=positive_int, metavar="P", help="population size (default: summary.json, "
                   "else inferred from the trace)")
    a.add_argument("--sample", type=positive_int, metavar="S", help="tournament size, the null of donor popularity "
                   "(default: summary.json, else a uniform pick from the population)")
    a.add_argument("--window", type=positive_int, metavar="W", help="popularity window in evaluations (default: the "
                   "run's --window from summary.json, else P)")
    a.add_argument("--low-cut", type=finite_float, metavar="SCORE", help="score below which a model counts as low "
                   "quality (default: a tabular run's table, 25th percentile over all architectures; else the "
                   "25th percentile of the run's random initial architectures)")
    a.set_defaults(func=cmd_analyze)
    r = sub.add_parser("replay", help="replay a trace under one policy and capacity; print its yields "
                       "and counters (--json: every metric as JSON)")
    r.add_argument("trace", metavar="TRACE.jsonl")
    r.add_argument("--policy", default="donor-window", help="fifo, lru, lfu, donor-window, evolution-aware, belady")
    r.add_argument("--capacity", type=capacities, help="bytes (512MB) or percent of all bytes stored (default 10%%; with "
                   "--recommend a comma-separated list, default 2%%,5%%,20%%)")
    r.add_argument("--mode", choices=("prefix", "compatible"), help="transfer mode (default: summary.json or prefix)")
    r.add_argument("--population", type=positive_int, metavar="P")
    r.add_argument("--sample", type=positive_int, metavar="S")
    r.add_argument("--json", action="store_true", help="print every metric as JSON instead of the table")
    r.add_argument("--recommend", action="store_true", help="replay every candidate policy at every capacity and "
                   "name the one that served the most training seconds, with its margin and a bootstrap interval")
    r.add_argument("--policies", help="--recommend's candidates, comma-separated (default: fifo, lru, lfu, "
                   "donor-window, evolution-aware)")
    r.add_argument("--score", choices=("all", "transfer", "revisit"), default="all",
                   help="--recommend: which children's served layers count (default all)")
    r.add_argument("--resamples", type=int, default=1000, help="--recommend: bootstrap resamples (default 1000)")
    r.add_argument("--seed", type=int, default=0, help="--recommend: seed of the resamples")
    r.set_defaults(func=cmd_replay)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(dashed_values(argv))
    try:
        return args.func(args)
    except (OSError, ValueError) as exc:
        print(f"tensorcache {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
