"""The ``tensorcache`` command: tools over recorded search traces (one subcommand per tool)."""
from __future__ import annotations

import argparse
import contextlib
import time
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence

from .sizes import parse_size


def capacity_bytes(text: str, total: int) -> int:
    """``"10%"`` of ``total`` bytes, or an absolute size such as ``"512MB"``."""
    text = text.strip()
    if text.endswith("%"):
        try:
            pct = float(text[:-1])
        except ValueError:
            raise ValueError(f"bad capacity {text!r}: expected e.g. 10% or 512MB") from None
        if pct < 0:
            raise ValueError(f"bad capacity {text!r}: negative")
        return int(total * pct / 100)
    return parse_size(text, what="capacity")


@contextlib.contextmanager
def replay_progress(label: str, after_s: float = 3.0) -> Iterator[Callable[[int, int], None]]:
    """A progress callback that shows a rich bar on stderr once a replay has run ``after_s`` seconds."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn(f"replay {label}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=Console(stderr=True), transient=True)
    task = bar.add_task("events", total=None)
    t0 = time.monotonic()

    def update(done: int, total: int) -> None:
        if not bar.live.is_started and time.monotonic() - t0 >= after_s:
            bar.start()
        bar.update(task, completed=done, total=total)

    try:
        yield update
    finally:
        bar.stop()


def cmd_analyze(args: argparse.Namespace) -> int:
    from .analyze import analyze
    from .replay import trace_settings
    from .trace import read_trace

    settings = trace_settings(args.trace)
    findings = analyze(read_trace(args.trace), args.out, population_size=args.population or settings.get("population"),
                       window=args.window, title=os.path.basename(os.path.dirname(os.path.abspath(args.trace))))
    print(f"wrote {os.path.join(args.out, 'report.md')} ({len(findings)} findings)")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from .replay import Workload, replay, trace_settings, write_requests_csv
    from .trace import read_trace

    settings = trace_settings(args.trace)
    work = Workload(read_trace(args.trace), args.mode or settings.get("transfer", "prefix"))
    if args.requests_csv:
        write_requests_csv(work.requests(), args.requests_csv)
    with replay_progress(args.policy) as progress:
        result = replay(work, args.policy, capacity_bytes(args.capacity, work.total_bytes),
                        population_size=args.population or settings.get("population"),
                        sample_size=args.sample or settings.get("sample"), progress=progress)
    print(json.dumps(result.metrics(), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tensorcache", description="Tools over tensorcache search traces "
                                "(TRACE = the trace.jsonl that run_search writes; P, S and the transfer mode "
                                "default to the summary.json beside it).")
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("analyze", help="answer the study's four questions on a trace: report.md + PNGs")
    a.add_argument("trace", metavar="TRACE.jsonl")
    a.add_argument("--out", required=True, metavar="DIR")
    a.add_argument("--population", type=int, metavar="P", help="population size (default: summary.json, "
                   "else inferred from the trace)")
    a.add_argument("--window", type=int, metavar="W", help="popularity window in evaluations (default: P)")
    a.set_defaults(func=cmd_analyze)
    r = sub.add_parser("replay", help="replay a trace under one policy and capacity; print the metrics as JSON")
    r.add_argument("trace", metavar="TRACE.jsonl")
    r.add_argument("--policy", default="donor-window", help="fifo, lru, lfu, donor-window, evolution-aware, belady")
    r.add_argument("--capacity", default="10%", help="bytes (512MB) or percent of all bytes stored (10%%)")
    r.add_argument("--mode", choices=("prefix", "compatible"), help="transfer mode (default: summary.json or prefix)")
    r.add_argument("--population", type=int, metavar="P")
    r.add_argument("--sample", type=int, metavar="S")
    r.add_argument("--requests-csv", metavar="PATH", help="also write the object request stream (libCacheSim csv)")
    r.set_defaults(func=cmd_replay)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (OSError, ValueError) as exc:
        print(f"tensorcache {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
