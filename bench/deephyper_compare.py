"""DeepHyper's regularized evolution with and without tensorcache: same seed, same budget, real training.

    python bench/deephyper_compare.py [--evals 40] [--population 10] [--sample 3] [--seeds 0,1] [--out DIR] [--quick]

For each seed, two DeepHyper searches run back to back in this process, their order alternating by
seed (serial evaluator, CPU, one torch thread), on the attn space over the shipped mnist-small set,
each child trained the same epochs:
``without`` trains every model from scratch; ``with`` is the same search through
``tensorcache.integrations.deephyper`` (LineageEvolution, WarmStartRun, EvolutionFeed; memory tier).
Reported per run: best validation accuracy, mean validation accuracy of the mutated children (the
evaluations after the first population), evaluations (= epochs of training) and seconds until the
run first reaches the target (the lower of the two runs' best accuracies, so both reach it), share of
children warm-started, seconds spent in the cache. Ratio lines: without / with, for evaluations and
seconds to the target. Writes DIR/deephyper_compare.csv and .json (settings, machine, per-run rows).
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from typing import Any

import pandas as pd
import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench.common import exit_status, machine, seeds, write_results  # noqa: E402
from bench.training import fit  # noqa: E402
from nas_integration.data import FlatData, flat_mnist  # noqa: E402
from nas_integration.spaces import AttnSpace  # noqa: E402
from tensorcache.cli import dashed_values, positive_int  # noqa: E402

SPACE = AttnSpace()
NAMES = [f"x{i}" for i in range(SPACE.n_positions)]
_DATA: dict[str, FlatData] = {}


def setup_data(train: int, val: int) -> None:
    """``train`` training and ``val`` validation images of mnist-small (seeded subset), flat floats."""
    _DATA["all"] = flat_mnist(train, val)


def arch_of(params: dict[str, Any]) -> tuple[int, ...]:
    return tuple(int(params[n]) for n in NAMES)


def build(job: Any) -> nn.Module:
    """The job's model, initialised from a seed fixed by its architecture (same in both runs)."""
    arch = arch_of(job.parameters)
    torch.manual_seed(hash(arch) % (2**31))
    return SPACE.build(arch, 10, (784,))


def train(job: Any, model: nn.Module, epochs: int = 1) -> float:
    """``epochs`` of Adam, batch 128; validation accuracy in percent."""
    return fit(model, _DATA["all"], epochs)


async def scratch(job: Any, epochs: int = 1) -> dict[str, Any]:
    """The run function without the cache."""
    t0 = time.perf_counter()
    acc = train(job, build(job), epochs)
    return {"objective": acc, "metadata": {"train_s": time.perf_counter() - t0}}


def search(mode: str, seed: int, args: argparse.Namespace, log_dir: str) -> pd.DataFrame:
    """One DeepHyper RE search; returns its results table sorted by job id."""
    from deephyper.evaluator import Evaluator
    from deephyper.hpo import HpProblem

    from tensorcache.integrations.deephyper import EvolutionFeed, LineageEvolution, WarmStartRun

    problem = HpProblem()
    for name, n in zip(NAMES, SPACE.choices):
        problem.add_hyperparameter((0, n - 1), name)
    kwargs = {"run_function_kwargs": {"epochs": args.epochs}}
    if mode == "with":
        run = WarmStartRun(build, train, NAMES, cache={"memory": "1GB", "namespace": f"dh-compare-{seed}"},
                           layer_map=SPACE.layer_map)
        evaluator = Evaluator.create(run.for_evaluator("serial"), method="serial",
                                     method_kwargs=EvolutionFeed().method_kwargs(**kwargs))
    else:
        evaluator = Evaluator.create(scratch, method="serial", method_kwargs=kwargs)
    re = LineageEvolution(problem, random_state=seed, log_dir=log_dir, population_size=args.population,
                          sample_size=args.sample)
    df = re.search(evaluator, max_evals=args.evals)
    return df.sort_values("job_id").reset_index(drop=True)


def summarise(df: pd.DataFrame, target: float, population: int) -> dict[str, Any]:
    """Best, children's mean, evaluations and seconds to ``target``, warm-start share, cache seconds."""
    reached = df.index[df["objective"] >= target]
    first = int(reached[0]) if len(reached) else None
    children = df.iloc[population:]
    row = {"evals": len(df), "best": round(float(df["objective"].max()), 2),
           "child_mean": round(float(children["objective"].mean()), 2),
           "evals_to_target": None if first is None else first + 1,
           "seconds_to_target": None if first is None else round(float(df["m:timestamp_gather"][first]), 2),
           "total_s": round(float(df["m:timestamp_gather"].max()), 2)}
    if "m:tc_layers" in df:
        row["children_warm"] = round(float((children["m:tc_layers"] > 0).mean()), 3)
        row["cache_s"] = round(float(df["m:tc_cache_s"].sum()), 3)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--evals", type=positive_int, default=40)
    ap.add_argument("--population", type=positive_int, default=10)
    ap.add_argument("--sample", type=positive_int, default=3)
    ap.add_argument("--epochs", type=positive_int, default=1)
    ap.add_argument("--train", type=positive_int, default=3000, help="training images (of mnist-small's 6000)")
    ap.add_argument("--val", type=positive_int, default=1000)
    ap.add_argument("--seeds", type=seeds, default="0,1")
    ap.add_argument("--out", default="runs/deephyper_compare")
    ap.add_argument("--quick", action="store_true", help="tiny settings for a smoke test")
    args = ap.parse_args(dashed_values(argv))
    if args.quick:
        args.evals, args.population, args.sample, args.train, args.val, args.seeds = 8, 4, 2, 300, 100, [0]
    if args.sample >= args.population:  # DeepHyper's regularized evolution asserts it
        ap.error(f"--sample must be below --population, got sample {args.sample}, population {args.population}")
    torch.set_num_threads(1)
    setup_data(args.train, args.val)
    train(None, SPACE.build(SPACE.sample(random.Random(0)), 10, (784,)))  # warm torch up, untimed
    rows = []
    for n, seed in enumerate(args.seeds):
        tables = {}
        for mode in (("without", "with") if n % 2 == 0 else ("with", "without")):   # alternate who goes first
            with tempfile.TemporaryDirectory() as log_dir:
                tables[mode] = search(mode, seed, args, log_dir)
        target = min(float(t["objective"].max()) for t in tables.values())
        summary = {mode: summarise(t, target, args.population) for mode, t in tables.items()}
        for mode, row in summary.items():
            rows.append({"seed": seed, "mode": mode, "target": round(target, 2), **row})
            print(f"seed {seed} {mode:7s} " + " ".join(f"{k}={v}" for k, v in row.items()))
        w, c = summary["without"], summary["with"]
        print(f"ratio evals_to_target_seed{seed}  {w['evals_to_target'] / c['evals_to_target']:.3f}  "
              f"(without / with, target {target:.2f}%)")
        print(f"ratio seconds_to_target_seed{seed}  {w['seconds_to_target'] / c['seconds_to_target']:.3f}  "
              f"(without / with)")
    settings = {k: v for k, v in vars(args).items()}
    paths = write_results(args.out, "deephyper_compare", rows,
                          {"command": " ".join(sys.argv), "settings": settings, "machine": machine(),
                           "space": SPACE.name, "dataset": "mnist-small"})
    print("wrote", *paths)
    return 0


if __name__ == "__main__":
    sys.exit(exit_status(main))
