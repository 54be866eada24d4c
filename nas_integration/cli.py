"""``run_search``: a regularized-evolution NAS whose workers warm-start children from the tensorcache."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tensorcache import __version__
from tensorcache.cli import dashed_values
from tensorcache.config import CacheConfig, policy_options
from tensorcache.fidelity import describe
from tensorcache.sizes import format_size

from .search import DEFAULTS, SearchSettings, Tally, evaluator_datasets, run_search
from .spaces import known_spaces

CACHE = CacheConfig()  # the cache flags' defaults are the config's

DESCRIPTION = """\
Search neural architectures with regularized evolution and measure what a tensor cache saves.
Each child architecture is a one-position mutation of a tournament winner; before it trains, its worker
warm-starts it from the cached layers of the best matching earlier model (normally its parent), and
after training puts its own layers in the cache. Every evaluation is appended to DIR/trace.jsonl; the
totals (best model, hit ratio, bytes moved, time in cache vs training) go to DIR/summary.json.

Two evaluators:
  train    real torch training (default: attn space on the mnist-small set shipped with the package,
           24 children of 1 epoch on 5000 examples, a tenth of them held out to score). Full data sets
           (mnist, fashion-mnist, cifar10) are read from --data-dir, else $TENSORCACHE_DATA/<dataset>,
           else ~/.cache/tensorcache/data/<dataset>, and downloaded there (MD5-checked) when absent.
  tabular  NAS-Bench-201 accuracies and training times from the table shipped with the package (or
           --table CSV), no training. With the serial executor it simulates --workers workers on a
           simulated clock, so 10^4 evaluations on 1024 workers take seconds; the cache still stores
           synthetic tensors sized like the real layers (times --payload-scale; capacities are scaled the
           same way, trace bytes stay real).
"""
EPILOG = """\
examples:
  run_search --out runs/demo                              # small real search on mnist-small (CPU ok)
  run_search --out runs/nb201 --evaluator tabular --evals 5000 --workers 256
  run_search --out runs/p4 --executor process --workers 4 --dataset mnist --data-dir ~/data/mnist
  mpirun -n 5 run_search --out runs/mpi --executor mpi --redis redis://head:6379/0 --redis-required
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run_search", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"run_search (tensorcache {__version__})")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder for trace.jsonl, summary.json "
                   "and the default disk cache")
    tab, train = DEFAULTS["tabular"], DEFAULTS["train"]

    g = p.add_argument_group("search")
    g.add_argument("--space", choices=known_spaces(),
                   help=f"search space (default: {train['space']} for train, {tab['space']} for tabular)")
    g.add_argument("--evals", type=int, metavar="N",
                   help=f"children to evaluate (default: {train['evals']} train, {tab['evals']} tabular)")
    g.add_argument("--population", type=int, metavar="P",
                   help=f"population size; the first P children are random (default: {train['population']} "
                        f"train, {tab['population']} tabular)")
    g.add_argument("--sample", type=int, metavar="S",
                   help=f"tournament size: the best of S random members is the parent (default: "
                        f"{train['sample']} train, {tab['sample']} tabular)")
    g.add_argument("--mode", choices=("async", "batch"), default="async",
                   help="async: a free worker gets a new child at once; batch: generations of --workers "
                        "children (default: async)")
    g.add_argument("--revisit", choices=("train", "reuse"), default="train",
                   help="a child repeating an architecture evaluated before: train it again (as the study did) or "
                        "reuse the earlier score without training; traces mark revisits either way (default: train)")
    g.add_argument("--inflight", action=argparse.BooleanOptionalAction, default=None,
                   help="describe each child to the cache when it is issued, so evolution-aware eviction counts "
                        "children in flight as parents; process and MPI workers hear of them with their next job "
                        "(default: on with the serial executor, off otherwise)")
    g.add_argument("--mutation-bias", type=float, default=0.0, metavar="B",
                   help="favour mutating later positions with weight (i+1)^B; 0 = uniform (default: 0)")
    g.add_argument("--seed", type=int, default=0, help="seed of the search and of training (default: 0)")
    g.add_argument("--control", type=float, default=0.0, metavar="F",
                   help="fidelity check: also train a random fraction F of warm-started children from scratch, "
                        "twice (own and another initialisation); reports the warm scores' bias and Kendall tau "
                        "against scratch with its noise ceiling; costs about 2F x the warm children's training "
                        "(default: 0 = off)")
    g.add_argument("--reeval-leaders", type=int, default=0, metavar="N",
                   help="every N children, retrain the population's leader from scratch if its score came from a "
                        "warm start and use that score in tournaments: keeps inherited training from deciding "
                        "selection; costs at most one training per N children (default: 0 = off)")

    g = p.add_argument_group("evaluator")
    g.add_argument("--evaluator", choices=("train", "tabular"), default="train",
                   help="train real models, or read NAS-Bench-201 results from --table (default: train)")
    g.add_argument("--dataset", help=f"train: {', '.join(evaluator_datasets('train'))} (default: {train['dataset']}, "
                                     f"shipped); tabular: {', '.join(evaluator_datasets('tabular'))} (default: "
                                     f"{tab['dataset']})")
    g.add_argument("--data-dir", metavar="PATH",
                   help="train, full data sets: the folder (or CIFAR-10 archive) to read, and to download into "
                        "when the files are absent (default: $TENSORCACHE_DATA/<dataset> if it holds them, "
                        "else ~/.cache/tensorcache/data/<dataset>); tabular reads --table instead")
    g.add_argument("--table", metavar="CSV", help="tabular: NAS-Bench-201 CSV (or .csv.gz) with arch_str and "
                                                  "per-dataset accuracy and train-time columns (default: the "
                                                  "table shipped with the package)")
    g.add_argument("--epochs", type=int, help=f"epochs per child (default: {train['epochs']} train; "
                                              f"{tab['epochs']} tabular, where it scales the table's time)")
    g.add_argument("--batch-size", type=int, default=128, help="train: batch size (default: 128)")
    g.add_argument("--lr", type=float, default=1e-3, help="train: Adam learning rate (default: 0.001)")
    g.add_argument("--amp", action="store_true", help="train: mixed precision (fp16 on CUDA, bf16 on CPU)")
    g.add_argument("--train-subset", type=int, metavar="N",
                   help=f"train: use N random training and N test examples; 0 = all (default: "
                        f"{train['train_subset']})")
    g.add_argument("--device", default="auto", help="train: auto (cuda if present), cpu, cuda, cuda:1 ... "
                                                    "(default: auto)")
    g.add_argument("--threads", type=int, metavar="N",
                   help="train: torch threads per worker (default: $OMP_NUM_THREADS if set, else the cores free "
                        "when the search starts divided among the workers, at least 1)")
    g.add_argument("--payload-scale", type=float, default=1 / 64, metavar="F",
                   help="tabular: synthetic tensors are F x the real layer sizes, cache capacities too "
                        "(default: 1/64)")
    g.add_argument("--time-scale", type=float, default=0.0, metavar="F",
                   help="tabular under process/mpi workers: sleep F x the simulated duration (default: 0)")

    g = p.add_argument_group("cache")
    g.add_argument("--cache", action=argparse.BooleanOptionalAction, default=True,
                   help="warm-start children from the cache (--no-cache: train from scratch; the trace still "
                        "records layer keys and sizes for replay)")
    g.add_argument("--policy",
                   help="eviction policy: fifo, lru, lfu, donor-window, evolution-aware "
                        f"(default: {CACHE.policy}); belady, "
                        "the offline bound, needs the future and runs only in `tensorcache replay`")
    g.add_argument("--memory", help=f"memory tier capacity, e.g. 512MB; 0 = none (default: {CACHE.memory})")
    g.add_argument("--device-memory", metavar="SIZE",
                   help="GPU-resident tier ahead of the memory tier, on the training device (--device), e.g. "
                        "1GB: hits copy device to device; for single-node GPU searches "
                        f"(default: {CACHE.device_memory} = none)")
    g.add_argument("--disk", metavar="PATH", help="LMDB tier path (default: DIR/cache.lmdb; 'none' = no disk tier)")
    g.add_argument("--disk-capacity", help=f"LMDB tier capacity (default: {CACHE.disk_capacity})")
    g.add_argument("--redis", metavar="URL", help="shared Redis tier, e.g. redis://host:6379/0 (default: none)")
    g.add_argument("--redis-required", action="store_true",
                   help="stop with an error when the --redis server cannot be reached, instead of searching "
                        "without the shared tier (default: warn and go on)")
    g.add_argument("--redis-capacity", help=f"Redis tier capacity (default: {CACHE.redis_capacity})")
    g.add_argument("--transfer", choices=("prefix", "compatible"),
                   help="prefix: a child takes the donor's layers up to the first difference; compatible: every "
                        "layer whose own positions match (default: compatible for nb201, prefix otherwise)")
    g.add_argument("--window", type=int, metavar="W",
                   help="donor-window/evolution-aware: count donations over the last W evaluations "
                        "(default: 4 x --population; see docs/results_policies.md for the sweep)")
    g.add_argument("--namespace", help="cache namespace; searches sharing one share tensors "
                                       "(default: <space>-<evaluator>-<dataset>)")

    g = p.add_argument_group("execution")
    g.add_argument("--executor", choices=("serial", "process", "mpi"), default="serial",
                   help="serial: in this process (tabular: simulated workers); process: --workers local "
                        "processes, one GPU each if several; mpi: under mpirun, rank 0 schedules (default: serial)")
    g.add_argument("--workers", type=int, default=1, help="parallel workers (mpi: mpirun's -n minus 1) (default: 1)")
    g.add_argument("--job-timeout", type=float, metavar="SECONDS",
                   help="process/mpi: a job running longer counts as a dead worker (default: no limit)")
    g.add_argument("--locality-wait", type=float, metavar="SECONDS",
                   help="tabular: send a child to the worker whose memory tier holds its donor, waiting up to "
                        "SECONDS for it to free up: simulated seconds (serial), wall seconds (process/mpi: a busy "
                        "worker's finish is estimated from the mean job duration) (default: off, place anywhere)")
    g.add_argument("--worker-memory", metavar="SIZE",
                   help="tabular: each worker's memory tier as placement models it; simulated workers are also "
                        "accounted by it (default: --memory)")
    g.add_argument("--retries", type=int, default=1,
                   help="times a failed job is re-queued before it is dropped (default: 1)")

    g = p.add_argument_group("output")
    g.add_argument("--run-id", help="prefix of model ids (default: random)")
    g.add_argument("--overwrite", action="store_true", help="replace an earlier run in DIR (and its default cache)")
    g.add_argument("--resume", action="store_true",
                   help="continue the interrupted search in DIR from its trace: give the same options (--evals may "
                        "grow); finished children are not run again (serial and process executors)")
    g.add_argument("--quiet", action="store_true", help="no progress bar or summary table")
    g.add_argument("-v", "--verbose", action="store_true", help="log what the cache and workers do")
    return p


# options only one evaluator reads, and what the other reads instead
EVALUATOR_OPTIONS = {"data_dir": ("train", "--data-dir", "it reads its scores from --table"),
                     "table": ("tabular", "--table", "it trains on --dataset")}


def unread_options(args: argparse.Namespace) -> list[str]:
    """A warning for each option given that the chosen evaluator does not read (a user would expect it to)."""
    return [f"{option} has no effect with the {args.evaluator} evaluator ({instead}); ignored"
            for name, (evaluator, option, instead) in EVALUATOR_OPTIONS.items()
            if getattr(args, name) is not None and args.evaluator != evaluator]


def settings_from_args(args: argparse.Namespace) -> SearchSettings:
    """The search the flags describe; the cache flags become its ``CacheConfig`` (``--window`` a policy option)."""
    policy = CACHE.policy if args.policy is None else args.policy
    if "next_uses" in policy_options(policy):
        raise ValueError(f"policy {policy!r} is offline-only: it evicts by each entry's next use, which a live "
                         f"search cannot know; search with another policy, then replay the trace under this one: "
                         f"tensorcache replay {os.path.join(args.out, 'trace.jsonl')} --policy {policy}")
    given = {k: v for k, v in vars(args).items() if v is not None}  # an unset cache flag: the config's default
    cache = CacheConfig(**{f.name: given[f.name] for f in fields(CacheConfig) if f.name in given})
    if args.window is not None and cache.takes("window"):
        cache = cache.with_options(window=args.window)
    names = {f.name for f in fields(SearchSettings)}
    return SearchSettings(**{k: v for k, v in vars(args).items() if k in names}, cache_config=cache)


class ProgressBar:
    """A rich progress bar fed by ``run_search``'s ``on_record`` callback; shown from the first record on."""

    def __init__(self, total: int, console: Console) -> None:
        self.progress = Progress(TextColumn("[bold]search"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("best {task.fields[best]}  new archs {task.fields[new]}  "
                                            "revisits {task.fields[revisits]}{task.fields[controls]}"),
                                 TimeElapsedColumn(), console=console)
        self.task = self.progress.add_task("search", total=total, best="-", new="-", revisits="-",
                                           controls="")
        self.started = False

    def __call__(self, tally: Tally, dropped: int) -> None:
        if not self.started:
            self.progress.start()
            self.started = True
        self.progress.update(self.task, completed=tally.evaluations + dropped, best=f"{tally.best['score']:.2f}",
                             new=f"{tally.new} (hits {tally.new_hit_ratio:.0%}, {tally.new_byte_share:.0%} of bytes)",
                             revisits=str(tally.revisits), controls=f"  {tally.controls}" if tally.controls else "")

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.started:
            self.progress.stop()


def tier_holdings(cache: dict[str, Any]) -> str:
    """What each tier holds at the end (summed over the workers' caches), and the puts a shared tier dropped."""
    held: dict[str, list[int]] = {}
    for tiers in cache.get("tiers") or []:
        for name, stats in tiers.items():
            counts = held.setdefault(name, [0, 0])
            counts[0] += stats.get("entries", 0)
            counts[1] += stats.get("used_bytes", 0)
    text = ", ".join(f"{name} {entries} layers ({format_size(used)})" for name, (entries, used) in held.items())
    dropped = cache.get("dropped_puts", 0)
    if dropped:
        local = [name for name in held if name in ("device", "memory", "lmdb")]
        text += (f"; shared tier unreachable: {dropped} of {cache.get('puts', 0)} puts kept locally only "
                 f"({', '.join(local)})")
    return text


def _background(cache: dict[str, Any] | None) -> str:
    """The CPU the caches' own threads spent beside the training thread's time in cache calls ("" if none)."""
    seconds = (cache or {}).get("background_cpu_s", 0.0)
    return f" (+{seconds:.2f} s CPU on the LMDB page thread)" if seconds else ""


def summary_table(summary: dict[str, Any]) -> Table:
    """The final summary as a two-column table."""
    t = Table(title=f"run {summary['run_id']}", show_header=False)
    t.add_column(style="bold")
    t.add_column(overflow="fold")
    best = summary["best"] or {}
    sim = summary["clock"] == "simulated"
    rows = [
        ("evaluations", f"{summary['evaluations']} ({summary['dropped']} dropped, {len(summary['failures'])} failures)"
                        + (f"; {summary['resumed']} of them from the trace (--resume)" if summary.get("resumed") else "")
                        + ("; INTERRUPTED before the end" if summary.get("interrupted") else "")),
        ("workers", f"{summary['workers']} ({summary['executor']}, {summary['mode']})"),
        ("mutation bias", f"{summary['settings']['mutation_bias']:g}"),
        ("best score", f"{best.get('score', float('nan')):.2f}  (model {best.get('model_id')}; trained "
                       f"{best.get('epochs')} epochs, inherited {best.get('inherited_epochs')} more)"),
        ("test of best", "-" if best.get("test") is None else f"{best['test']:.2f}"),
        ("best architecture", str(best.get("native"))),
        ("new architectures", f"{summary['new_architectures']}: {summary['new_hit_ratio']:.1%} got a layer that "
                              f"depends on their arch; {format_size(summary['transfer_bytes_served'])} transferred "
                              f"= {summary['new_byte_share']:.1%} of their bytes"),
        ("revisits", f"{summary['revisits']}: {format_size(summary['revisit_bytes_served'])} served to architectures "
                     "evaluated before"),
        ("all children", f"hit ratio {summary['hit_ratio']:.1%}, {format_size(summary['bytes_served'])} served"),
        ("time in cache", f"{summary['cache_s']:.2f} s" + _background(summary.get("cache"))),
        ("time training", f"{summary['train_s']:.1f} s" + (" (simulated)" if sim else "")),
        ("search time", f"{summary['search_s']:.1f} s" + (" (simulated)" if sim else "")),
        ("wall time", f"{summary['wall_s']:.1f} s"),
    ]
    threads = summary.get("threads")
    if threads:
        rows.append(("torch threads", f"{threads['per_worker']} per worker ({threads['why']})"))
    scratch = summary.get("scratch") or {}
    if scratch.get("control") is not None:
        rows.append(("fidelity (control set)", describe(scratch["control"])))
    if scratch.get("reevaluated"):
        rows.append(("leaders re-evaluated", f"{scratch['reevaluated']} from scratch, {scratch['rescored']} scores "
                                             "replaced in the population"))
    if scratch.get("epochs"):
        rows.append(("scratch training", f"{scratch['epochs']:g} epochs, {scratch['train_s']:.1f} s (beside the "
                                         "children's)"))
    loc = summary.get("locality")
    if loc and (loc["local_hits"] or loc["remote_hits"]):
        rows.append(("locality", f"{loc['local_byte_share']:.1%} of transfer bytes from the worker's own memory"
                                 f" ({'placement on' if loc['enabled'] else 'placement off'}); "
                                 f"children waited {loc['wait_s']:.0f} s in all"))
    cache = summary.get("cache")
    if cache:
        evictions = sum(cache.get("evictions", {}).values())
        rows.append(("evictions", f"{evictions} {cache.get('evictions') or ''}"))
        rows.append(("tiers hold", tier_holdings(cache)))
        errors = cache.get("errors") or {}
        if sum(errors.values()):
            rows.append(("cache errors", f"{sum(errors.values())} ({', '.join(f'{k} {n}' for k, n in errors.items())}): "
                                         "each a miss or a skipped put, the evaluation went on; the log names the "
                                         "first of each kind"))
    for key, value in rows:
        t.add_row(key, value)
    return t


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(dashed_values(argv))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=Console(stderr=True), show_path=False)])
    rank = 0
    if args.executor == "mpi":
        from mpi4py import MPI

        rank = MPI.COMM_WORLD.Get_rank()
    try:
        settings = settings_from_args(args).resolved()
        for warning in unread_options(args) if rank == 0 else ():
            logging.getLogger("nas_integration").warning(warning)
        console = Console()
        if args.quiet or rank != 0:
            summary = run_search(settings)
        else:
            with ProgressBar(settings.evals, Console(stderr=True)) as bar:
                summary = run_search(settings, on_record=bar)
    except KeyboardInterrupt:  # before the search started (loading data, starting workers): nothing to summarise
        print("run_search: interrupted before the search started", file=sys.stderr)
        return 130
    except (ValueError, OSError) as exc:  # bad settings, missing files, unreachable servers: one line, no traceback
        if args.executor == "mpi":
            logging.getLogger("nas_integration").error("rank %d: %s", rank, exc)
            MPI.COMM_WORLD.Abort(2)
        print(f"run_search: error: {exc}", file=sys.stderr)
        return 2
    except BaseException:
        if args.executor == "mpi":  # never leave the other ranks waiting for rank 0
            logging.getLogger("nas_integration").exception("rank %d failed", rank)
            MPI.COMM_WORLD.Abort(1)
        raise
    if summary is not None and not args.quiet:
        console.print(summary_table(summary))
        console.print(f"trace: {summary['trace']}\nsummary: {os.path.join(settings.out, 'summary.json')}\n"
                      f"plots: tensorcache analyze {summary['trace']} --out {os.path.join(settings.out, 'report')}",
                      soft_wrap=True)
    if summary is not None and summary.get("interrupted"):
        print(f"run_search: interrupted after {summary['evaluations']} of {settings.evals} evaluations; to continue, "
              "run the same command with --resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
