"""End to end: what warm-starting from the cache buys real searches, cache on against off, same seeds.

    python bench/transfer_e2e.py [--scale cpu|gpu|auto] [--seed 0] [--out DIR] [--quick]

Part 1, searches. For NB201 on CIFAR-10 and attn on MNIST, ``run_search`` (real training) runs three
times with the same seed: cache off, cache on with ``prefix`` transfer, cache on with ``compatible``
transfer. Reported per run: best validation accuracy over wall time (DIR/anytime_<space>.png), time to
reach the target accuracy (default: the cache-off run's final best), final best accuracy and the test
accuracy of that model, the mean validation accuracy of the mutated children (each trained the same
epochs, so this is what a warm start adds at equal cost), hit ratio, layers and bytes transferred,
cache time as a share of wall time.
Ratio lines: cache-off time to target / cache-on time to target.

Part 2, epochs to accuracy. A parent NB201 model is trained for K epochs and put in a TensorCache; a
one-edge mutation of it (the child) is trained K epochs from scratch, which sets the target A (its
final validation accuracy), and again warm-started from the parent (``compatible`` and ``prefix`` layer
maps), same initial seed and batch order. Validation accuracy is measured every 1/4 epoch (and before
training); reported: epochs each arm needs to first reach A (DIR/epochs_<pair>.png). Ratio lines:
scratch epochs / warm epochs, target >= 4 for ``compatible``.

Scales: ``gpu`` (NB201 C=16 N=5, about 10 minutes on one GPU), ``cpu`` (NB201 C=8 N=1, data subsets, few
children: a few minutes on 2 cores; results labelled CPU), ``auto`` = gpu when CUDA is present. Writes
DIR/e2e_runs.csv, DIR/e2e_epochs.csv, DIR/e2e.json (command, device, settings, curves) and the PNGs.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from common import data_path, machine, write_results
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import nn

from nas_integration.data import load_dataset
from nas_integration.search import SearchSettings, run_search
from nas_integration.spaces import NB201Space, get_space, register_space
from tensorcache import TensorCache

BEST_NB201 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
CONFIGS = (("off", None), ("prefix", "prefix"), ("compatible", "compatible"))  # label, transfer (None: no cache)
EPOCH_TARGET = 4.0
STEPS_PER_EPOCH_EVAL = 4


@dataclass(frozen=True)
class SearchSpec:
    """One search of part 1 (run three times: cache off, prefix, compatible)."""

    space: str
    dataset: str
    evals: int
    population: int
    sample: int
    epochs: int
    train_subset: int  # 0: the whole training set
    batch_size: int = 128


@dataclass(frozen=True)
class EpochSpec:
    """Part 2: parent/child pairs trained ``epochs`` epochs on ``n_train`` examples (``n_val`` held out)."""

    space: str
    epochs: int
    n_train: int
    n_val: int
    pairs: int
    batch_size: int = 128
    lr: float = 1e-3


SCALES: dict[str, tuple[list[SearchSpec], EpochSpec]] = {
    "gpu": ([SearchSpec("nb201", "cifar10", evals=24, population=8, sample=3, epochs=2, train_subset=10000),
             SearchSpec("attn", "mnist", evals=24, population=8, sample=3, epochs=2, train_subset=0)],
            EpochSpec("nb201", epochs=12, n_train=10000, n_val=2000, pairs=3)),
    "cpu": ([SearchSpec("nb201-C8-N1", "cifar10", evals=12, population=4, sample=2, epochs=1, train_subset=2000),
             SearchSpec("attn", "mnist", evals=30, population=6, sample=3, epochs=1, train_subset=2500)],
            EpochSpec("nb201-C8-N1", epochs=4, n_train=2500, n_val=500, pairs=1)),
    "quick": ([SearchSpec("nb201-C4-N1", "cifar10", evals=3, population=2, sample=1, epochs=1, train_subset=300),
               SearchSpec("attn", "mnist", evals=3, population=2, sample=1, epochs=1, train_subset=300)],
              EpochSpec("nb201-C4-N1", epochs=1, n_train=300, n_val=100, pairs=1)),
}
register_space("nb201-C8-N1", lambda: NB201Space(C=8, N=1))
register_space("nb201-C4-N1", lambda: NB201Space(C=4, N=1))


# -------------------------------------------------------------------------------------- part 1: searches
def run_one(spec: SearchSpec, label: str, transfer: str | None, data_dir: str | None, workdir: str, seed: int,
            device: str) -> dict[str, Any]:
    """One search; returns its summary figures and its anytime curve (seconds since it began, best so far)."""
    settings = SearchSettings(out=os.path.join(workdir, f"{spec.space}-{label}"), evaluator="train",
                              space=spec.space, dataset=spec.dataset, data_dir=data_dir, evals=spec.evals,
                              population=spec.population, sample=spec.sample, epochs=spec.epochs,
                              train_subset=spec.train_subset, batch_size=spec.batch_size, seed=seed,
                              cache=transfer is not None, transfer=transfer or "prefix", device=device)
    load_before = os.getloadavg()[0]
    t_call = time.time()
    summary = run_search(settings)
    with open(summary["trace"]) as f:
        records = sorted((json.loads(line) for line in f), key=lambda r: r["t_end"])
    children = [r["score"] for r in records if r["parent_id"] is not None]  # mutations, after the random start
    origin = t_call if records[0]["t_end"] > 1e9 else 0.0  # trace times: epoch seconds or since the search began
    best, curve = -math.inf, []
    for r in records:
        best = max(best, r["score"])
        curve.append((r["t_end"] - origin, best))
    shutil.rmtree(settings.out, ignore_errors=True)
    return {"space": spec.space, "dataset": spec.dataset, "config": label, "evaluations": len(records),
            "wall_s": time.time() - t_call, "best_val": summary["best"]["score"], "test_of_best": summary["best"]["test"],
            "best_arch": summary["best"]["native"], "hit_ratio": summary["hit_ratio"],
            "transfer_layers": summary["transfer_layers"], "transfer_bytes": summary["transfer_bytes"],
            "cache_s": summary["cache_s"], "train_s": summary["train_s"],
            "cache_share": summary["cache_s"] / summary["wall_s"],
            "mutated_children": len(children), "children_mean_val": sum(children) / len(children) if children else None,
            "load_before": load_before,
            "load_after": os.getloadavg()[0], "curve": curve}


def time_to(curve: Sequence[tuple[float, float]], target: float) -> float | None:
    """Seconds until the best-so-far accuracy first reaches ``target`` (None: never)."""
    return next((t for t, best in curve if best >= target), None)


def plot_anytime(path: str, space: str, runs: Sequence[dict[str, Any]], target: float, scale: str) -> None:
    fig = Figure(figsize=(6.4, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for run in runs:
        t, best = zip(*run["curve"])
        ax.step([0.0, *t], [best[0], *best], where="post", label=run["config"], marker="o", markersize=3)
    ax.axhline(target, color="grey", linestyle=":", label=f"target {target:.1f}%")
    ax.set_xlabel("wall time (s)")
    ax.set_ylabel("best validation accuracy so far (%)")
    ax.set_title(f"{space}: cache off vs on ({scale.upper()} scale)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# ------------------------------------------------------------------------------ part 2: epochs to accuracy
class Trainer:
    """Adam training on in-memory tensors with validation accuracy every 1/4 epoch."""

    def __init__(self, spec: EpochSpec, data_dir: str | None, device: torch.device, seed: int) -> None:
        x_train, y_train, _, _ = load_dataset("cifar10", data_dir, subset=(spec.n_train + spec.n_val, 1), seed=seed)
        x = torch.as_tensor(x_train).float().div_(255).permute(0, 3, 1, 2).contiguous()
        y = torch.as_tensor(y_train).long()
        self.x, self.y = x[:spec.n_train].to(device), y[:spec.n_train].to(device)
        self.xv, self.yv = x[spec.n_train:].to(device), y[spec.n_train:].to(device)
        self.spec, self.device, self.seed = spec, device, seed

    def train(self, model: nn.Module, epochs: int, evaluate: bool, stop_at: float | None = None) -> list[tuple[float, float]]:
        """Train ``epochs`` epochs; returns [(epochs done, val accuracy)] (every 1/4 epoch if ``evaluate``),
        stopping early once accuracy reaches ``stop_at``."""
        model.to(self.device)
        opt = torch.optim.Adam(model.parameters(), lr=self.spec.lr)
        loss_fn = nn.CrossEntropyLoss()
        order = torch.Generator().manual_seed(self.seed)
        history = [(0.0, self.accuracy(model))] if evaluate else []
        for epoch in range(epochs):
            batches = torch.randperm(len(self.x), generator=order).split(self.spec.batch_size)
            marks = {round(len(batches) * k / STEPS_PER_EPOCH_EVAL) - 1: k for k in range(1, STEPS_PER_EPOCH_EVAL + 1)}
            model.train()
            for i, batch in enumerate(batches):
                batch = batch.to(self.device)
                loss = loss_fn(model(self.x[batch]), self.y[batch])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if evaluate and i in marks:
                    history.append((epoch + marks[i] / STEPS_PER_EPOCH_EVAL, self.accuracy(model)))
                    model.train()
                    if stop_at is not None and history[-1][1] >= stop_at:
                        return history
        return history

    @torch.no_grad()
    def accuracy(self, model: nn.Module) -> float:
        model.eval()
        correct = sum(int((model(self.xv[i:i + 512]).argmax(1) == self.yv[i:i + 512]).sum())
                      for i in range(0, len(self.xv), 512))
        return 100.0 * correct / len(self.xv)


def first_reach(history: Sequence[tuple[float, float]], target: float) -> float | None:
    return next((e for e, acc in history if acc >= target), None)


def epochs_pairs(spec: EpochSpec, data_dir: str | None, device: torch.device, seed: int) -> list[dict[str, Any]]:
    """Part 2 for ``spec.pairs`` parent/child pairs; one row per (pair, arm)."""
    space = get_space(spec.space)
    trainer = Trainer(spec, data_dir, device, seed)
    rows = []
    for pair in range(spec.pairs):
        rng = random.Random(seed * 1000 + pair)
        parent = space.encode(BEST_NB201)
        child, pos = space.mutate(parent, rng)
        torch.manual_seed(seed * 1000 + pair)
        donor = space.build(parent, 10, (3, 32, 32))
        trainer.train(donor, spec.epochs, evaluate=False)
        parent_acc = trainer.accuracy(donor)
        torch.manual_seed(seed * 1000 + pair + 1)
        init = space.build(child, 10, (3, 32, 32)).state_dict()
        scratch = space.build(child, 10, (3, 32, 32))
        scratch.load_state_dict(init)
        hist_scratch = trainer.train(scratch, spec.epochs, evaluate=True)
        target = hist_scratch[-1][1]
        arms = {"scratch": (hist_scratch, None)}
        for mode in ("compatible", "prefix"):
            model = space.build(child, 10, (3, 32, 32))
            model.load_state_dict(init)
            with TensorCache(memory="1GB", namespace=f"e2e-{mode}") as cache:
                cache.put("parent", parent, donor.state_dict(), layer_map=space.layer_map(parent, mode))
                report = cache.warm_start(model, child, parent="parent", layer_map=space.layer_map(child, mode))
            arms[mode] = (trainer.train(model, spec.epochs, evaluate=True, stop_at=target), report)
        base = first_reach(hist_scratch, target)
        total = sum(v.numel() * v.element_size() for v in init.values())
        for arm, (history, report) in arms.items():
            reached = first_reach(history, target)
            rows.append({"pair": pair, "parent": space.decode(parent), "child": space.decode(child),
                         "mutated_position": pos, "parent_val": parent_acc, "target_val": target, "arm": arm,
                         "epochs_to_target": reached, "epochs_scratch": base,
                         "ratio": _ratio(base, reached), "final_val": history[-1][1],
                         "transfer_layers": report.layers if report else 0,
                         "transfer_fraction": (report.nbytes / total) if report else 0.0,
                         "history": history})
    return rows


def _ratio(base: float | None, reached: float | None) -> float | None:
    """scratch epochs / warm epochs; inf when the warm child is there before training; None if never."""
    if base is None or reached is None:
        return None
    if reached == 0:
        return 1.0 if base == 0 else math.inf
    return base / reached


def plot_epochs(path: str, rows: Sequence[dict[str, Any]], scale: str) -> None:
    fig = Figure(figsize=(6.4, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for row in rows:
        e, acc = zip(*row["history"])
        ax.plot(e, acc, marker="o", markersize=3, label=f"{row['arm']} ({_fmt_epochs(row['epochs_to_target'])})")
    ax.axhline(rows[0]["target_val"], color="grey", linestyle=":", label=f"target {rows[0]['target_val']:.1f}%")
    ax.set_xlabel("epochs")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(f"child {rows[0]['child']}\n({scale.upper()} scale, pair {rows[0]['pair']})", fontsize=8)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _fmt_epochs(e: float | None) -> str:
    return "never" if e is None else f"{e:g} ep"


# ------------------------------------------------------------------------------------------------ main
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", choices=("auto", "cpu", "gpu"), default="auto",
                   help="gpu: NB201 C=16 N=5; cpu: NB201 C=8 N=1 on subsets; auto: gpu if CUDA is present")
    p.add_argument("--seed", type=int, default=0, help="seed of every search and model (default: 0)")
    p.add_argument("--pairs", type=int, metavar="N", help="parent/child pairs of part 2 (default: the scale's, "
                   "cpu 1, gpu 3)")
    p.add_argument("--target", type=float, metavar="ACC",
                   help="accuracy (%%) for time-to-target (default: each space's cache-off final best)")
    p.add_argument("--cifar", default=data_path("cifar10"), metavar="PATH",
                   help="CIFAR-10 folder or tar.gz (default: $TENSORCACHE_DATA/cifar10, else found or downloaded)")
    p.add_argument("--mnist", default=data_path("mnist"), metavar="DIR",
                   help="MNIST IDX folder (default: $TENSORCACHE_DATA/mnist, else found or downloaded)")
    p.add_argument("--device", default="auto", help="torch device (default: cuda if present)")
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (default: 1 when training on the "
                   "CPU, where 2 threads stall whenever another process holds a core; else torch's default)")
    p.add_argument("--out", metavar="DIR", default="runs/bench", help="where results and PNGs go")
    p.add_argument("--quick", action="store_true", help="CI smoke size (tiny models, 3 children)")
    args = p.parse_args(argv)
    cuda = torch.cuda.is_available()
    scale = "quick" if args.quick else (args.scale if args.scale != "auto" else ("gpu" if cuda else "cpu"))
    device = torch.device(("cuda" if cuda else "cpu") if args.device == "auto" else args.device)
    searches, epoch_spec = SCALES[scale]
    if args.pairs is not None:
        if args.pairs < 1:
            p.error(f"--pairs must be >= 1, got {args.pairs}")
        epoch_spec = replace(epoch_spec, pairs=args.pairs)
    if args.threads is not None or device.type == "cpu":
        torch.set_num_threads(args.threads or 1)
    data = {"cifar10": args.cifar and os.path.abspath(args.cifar), "mnist": args.mnist and os.path.abspath(args.mnist)}
    meta = {**machine(), "command": " ".join([os.path.basename(sys.executable), *sys.argv]), "scale": scale,
            "run_device": str(device), "torch_threads": torch.get_num_threads(), "seed": args.seed,
            "searches": [asdict(s) for s in searches],
            "epochs": asdict(epoch_spec)}
    print(f"bench/transfer_e2e.py: {scale.upper()} scale on {device} ({meta['device']}), {meta['cpus']} CPUs, "
          f"{meta['torch_threads']} torch thread(s), {meta['date']}")
    load_dataset("cifar10", data["cifar10"], subset=1)  # decode CIFAR-10 once, outside every timing
    t0 = time.perf_counter()
    runs: list[dict[str, Any]] = []
    targets: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as workdir:
        for spec in searches:
            warmup = replace(spec, evals=1, population=1, sample=1)  # first-use costs of torch and the data
            run_one(warmup, "warmup", "prefix", data[spec.dataset], workdir, args.seed, str(device))
            group = []
            for label, transfer in CONFIGS:
                print(f"  search {spec.space} on {spec.dataset}, cache {label} ...", flush=True)
                group.append(run_one(spec, label, transfer, data[spec.dataset], workdir, args.seed, str(device)))
            targets[spec.space] = args.target if args.target is not None else group[0]["best_val"]
            base = time_to(group[0]["curve"], targets[spec.space])
            for run in group:
                run["target"] = targets[spec.space]
                run["time_to_target_s"] = time_to(run["curve"], targets[spec.space])
                run["speedup_vs_off"] = (base / run["time_to_target_s"]
                                         if base is not None and run["time_to_target_s"] else None)
            os.makedirs(args.out, exist_ok=True)
            plot_anytime(os.path.join(args.out, f"anytime_{spec.space}.png"), spec.space, group,
                         targets[spec.space], scale)
            runs += group
        print(f"  epochs to accuracy: {epoch_spec.pairs} pair(s), {epoch_spec.epochs} epochs ...", flush=True)
        pairs = epochs_pairs(epoch_spec, data["cifar10"], device, args.seed)
    for pair in sorted({r["pair"] for r in pairs}):
        plot_epochs(os.path.join(args.out, f"epochs_{pair}.png"), [r for r in pairs if r["pair"] == pair], scale)
    meta["seconds"] = time.perf_counter() - t0
    report(runs, pairs, scale)
    write_results(args.out, "e2e_runs", [{k: v for k, v in r.items() if k != "curve"} for r in runs], meta)
    write_results(args.out, "e2e_epochs", [{k: v for k, v in r.items() if k != "history"} for r in pairs], meta)
    with open(os.path.join(args.out, "e2e.json"), "w") as f:
        json.dump({"meta": meta, "runs": runs, "epochs": pairs}, f, indent=2, default=str)
    print(f"\n{scale.upper()} scale, {meta['seconds']:.0f} s; wrote {args.out}/e2e_runs.csv, e2e_epochs.csv, e2e.json "
          f"and PNGs")
    return 0


def report(runs: Sequence[dict[str, Any]], pairs: Sequence[dict[str, Any]], scale: str) -> None:
    tag = scale.upper()
    print(f"\n== searches ({tag} scale): same seed, cache off vs on")
    print(f"{'space':<12} {'config':<10} {'wall s':>7} {'best val':>8} {'test':>6} {'t->target':>9} {'child val':>9} "
          f"{'hit':>5} {'layers':>6} {'MB moved':>8} {'cache %':>7} {'load':>9}")
    for r in runs:
        tt = "-" if r["time_to_target_s"] is None else f"{r['time_to_target_s']:.1f}"
        print(f"{r['space']:<12} {r['config']:<10} {r['wall_s']:>7.1f} {r['best_val']:>8.2f} "
              f"{r['test_of_best'] or 0:>6.2f} {tt:>9} {r['children_mean_val'] or 0:>9.2f} {r['hit_ratio']:>5.0%} "
              f"{r['transfer_layers']:>6} "
              f"{r['transfer_bytes'] / 1e6:>8.1f} {r['cache_share']:>7.2%} "
              f"{r['load_before']:>4.1f}/{r['load_after']:<4.1f}")
    for r in runs:
        if r["config"] == "off":
            continue
        label = f"e2e.{r['space']}.{r['config']}.time_to_target"
        if r["speedup_vs_off"] is None:
            print(f"ratio {label:<44} n/a     ({r['config']} never reached {r['target']:.2f}%) [{tag}]")
        else:
            off = next(o for o in runs if o["space"] == r["space"] and o["config"] == "off")
            print(f"ratio {label:<44} {r['speedup_vs_off']:7.3f}   cache off {off['time_to_target_s']:.1f} s vs "
                  f"{r['config']} {r['time_to_target_s']:.1f} s to {r['target']:.2f}% [{tag}]")
    print(f"\n== epochs to the from-scratch child's final accuracy ({tag} scale)")
    for r in pairs:
        print(f"pair {r['pair']} {r['arm']:<10} target {r['target_val']:.2f}%  epochs {_fmt_epochs(r['epochs_to_target']):>8}"
              f"  final {r['final_val']:.2f}%  transferred {r['transfer_fraction']:.0%} of the bytes")
    for r in pairs:
        if r["arm"] == "scratch":
            continue
        label = f"e2e.epochs.pair{r['pair']}.{r['arm']}"
        target = f"  target >= {EPOCH_TARGET:.0f}: {'met' if (r['ratio'] or 0) >= EPOCH_TARGET else 'SHORT'}" \
            if r["arm"] == "compatible" else ""
        value = "n/a" if r["ratio"] is None else f"{r['ratio']:7.3f}"
        print(f"ratio {label:<44} {value}   scratch {_fmt_epochs(r['epochs_scratch'])} vs {r['arm']} "
              f"{_fmt_epochs(r['epochs_to_target'])}{target} [{tag}]")


if __name__ == "__main__":
    sys.exit(main())
