"""End to end: the same search with and without transfer, several seeds, time to target with its spread.

    python bench/transfer_e2e.py [--scale cpu|gpu|auto] [--seeds 0,1,2] [--out DIR] [--quick]

For NB201 on CIFAR-10 and attn on MNIST and each seed, ``run_search`` (real training) runs once with the
cache off. Its evaluations are then replayed in the same order with the cache on: the same
architectures, the same parents, and for every child the same initial weights and batch order (the
train evaluator seeds both from the search seed and the child's index); each child is warm-started from
its parent's weights as trained in that replay (``compatible`` and ``prefix`` layer maps). So the arms
differ only in transfer. Reported per space, seed and arm: best validation accuracy, mean accuracy of the
mutated children (each trained the same epochs), and the evaluations and training seconds until the
best-so-far accuracy first reaches the target (default: the cache-off run's final best). Across seeds:
the median, minimum and maximum of cache-off / cache-on evaluations to target (seconds too, noisier on a
shared machine). How many epochs a warm start saves per child is ``bench/transfer_pairs.py``'s question.

Writes DIR/e2e_runs.csv, DIR/e2e.json (command, device, settings, curves) and DIR/anytime_<space>.png.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from common import data_path, exit_status, machine, seeds, write_results
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from nas_integration.search import SearchSettings, run_search
from nas_integration.spaces import NB201Space, register_space
from tensorcache import TensorCache
from tensorcache.cli import dashed_values, positive_int
from tensorcache.evolution import Candidate
from tensorcache.trace import read_trace


@dataclass(frozen=True)
class SearchSpec:
    """One search, run with the cache off and replayed with it on."""

    space: str
    dataset: str
    evals: int
    population: int
    sample: int
    epochs: int
    train_subset: int  # 0: the whole training set
    batch_size: int = 128


SCALES: dict[str, tuple[list[SearchSpec], tuple[str, ...]]] = {  # searches, transfer modes replayed
    "gpu": ([SearchSpec("nb201", "cifar10", evals=40, population=10, sample=3, epochs=3, train_subset=0),
             SearchSpec("attn", "mnist", evals=40, population=10, sample=3, epochs=2, train_subset=0)],
            ("compatible", "prefix")),
    "cpu": ([SearchSpec("nb201-C4-N1", "cifar10", evals=10, population=4, sample=2, epochs=1, train_subset=6000),
             SearchSpec("attn", "mnist", evals=24, population=6, sample=3, epochs=1, train_subset=3000)],
            ("compatible",)),
    "quick": ([SearchSpec("nb201-C4-N1", "cifar10", evals=3, population=2, sample=1, epochs=1, train_subset=300),
               SearchSpec("attn", "mnist", evals=3, population=2, sample=1, epochs=1, train_subset=300)],
              ("compatible",)),
}
register_space("nb201-C4-N1", lambda: NB201Space(C=4, N=1))


def search_off(spec: SearchSpec, seed: int, data_dir: str, workdir: str, device: str) -> tuple[SearchSettings,
                                                                                             list[dict[str, Any]]]:
    """The cache-off search; returns its settings and trace records in start order."""
    settings = SearchSettings(out=os.path.join(workdir, f"{spec.space}-s{seed}"), evaluator="train",
                              space=spec.space, dataset=spec.dataset, data_dir=data_dir, evals=spec.evals,
                              population=spec.population, sample=spec.sample, epochs=spec.epochs,
                              train_subset=spec.train_subset, batch_size=spec.batch_size, seed=seed, cache=False,
                              device=device)
    summary = run_search(settings)
    records = sorted(read_trace(summary["trace"]), key=lambda r: (r["t_start"], r["model_id"]))
    shutil.rmtree(settings.out, ignore_errors=True)
    return settings, records


def replay(settings: SearchSettings, records: Sequence[dict[str, Any]], mode: str) -> list[dict[str, Any]]:
    """The same evaluations with the cache on: each child warm-started under layer map ``mode``."""
    namespace = f"e2e-{mode}-{settings.seed}"
    evaluator = replace(settings, cache=True, transfer=mode,
                        cache_config=replace(settings.cache_config, namespace=namespace)).make_evaluator(
        threads=torch.get_num_threads())
    out = []
    with TensorCache(memory="4GB", namespace=namespace) as cache:
        for r in records:
            index = int(r["model_id"].rsplit("-", 1)[-1])  # run_search ids end in the issue index
            result = evaluator.evaluate(Candidate(index, r["model_id"], tuple(r["arch"]), r["parent_id"],
                                                  r["mutation_pos"]), cache)
            out.append({"model_id": r["model_id"], "parent_id": r["parent_id"], "score": result.score,
                        "seconds": result.train_s + result.cache_s, "bytes_served": result.bytes_served})
    return out


def arm_row(space: str, seed: int, arm: str, evals: Sequence[dict[str, Any]], target: float) -> dict[str, Any]:
    """Summary of one arm: best, children's mean, and evaluations/seconds until best-so-far >= target."""
    best, seconds, curve = float("-inf"), 0.0, []
    for n, e in enumerate(evals, 1):
        best, seconds = max(best, e["score"]), seconds + e["seconds"]
        curve.append((n, seconds, best))
    children = [e["score"] for e in evals if e["parent_id"] is not None]
    reach = next(((n, s) for n, s, b in curve if b >= target), (None, None))
    return {"space": space, "seed": seed, "arm": arm, "evaluations": len(evals), "best_val": best,
            "children_mean_val": statistics.mean(children) if children else None, "target": target,
            "evals_to_target": reach[0], "seconds_to_target": reach[1],
            "train_seconds": seconds, "bytes_served": sum(e.get("bytes_served", 0) for e in evals), "curve": curve}


def spread(values: Sequence[float | None]) -> str:
    """Median [min, max] of the ratios that exist, and how many seeds never reached the target."""
    have = [v for v in values if v is not None]
    never = len(values) - len(have)
    text = f"{statistics.median(have):.2f} [{min(have):.2f}, {max(have):.2f}]" if have else "n/a"
    return text + (f", {never} seed(s) never reached it" if never else "")


def _ratio(base: float | None, other: float | None) -> float | None:
    return base / other if base is not None and other else None


def plot_anytime(path: str, space: str, rows: Sequence[dict[str, Any]], scale: str) -> None:
    fig = Figure(figsize=(6.4, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colours = {}
    for row in rows:
        n, _, best = zip(*row["curve"])
        colour = colours.setdefault(row["arm"], f"C{len(colours)}")
        ax.step(n, best, where="post", color=colour, alpha=0.8, label=row["arm"] if row["seed"] == rows[0]["seed"]
                else None, marker="o", markersize=2)
    ax.set_xlabel("evaluations (same architectures in every arm)")
    ax.set_ylabel("best validation accuracy so far (%)")
    ax.set_title(f"{space}: cache off vs on, {len({r['seed'] for r in rows})} seeds ({scale.upper()} scale)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", choices=("auto", "cpu", "gpu"), default="auto",
                   help="gpu: NB201 C=16 N=5 on all of CIFAR-10; cpu: NB201 C=4 N=1 on subsets; auto: gpu if CUDA")
    p.add_argument("--seeds", type=seeds, default="0,1,2", help="comma-separated search seeds (default: 0,1,2)")
    p.add_argument("--target", type=float, metavar="ACC",
                   help="accuracy (%%) to reach (default: each seed's cache-off final best)")
    p.add_argument("--cifar", default=data_path("cifar10"), metavar="PATH",
                   help="CIFAR-10 folder or tar.gz (default: $TENSORCACHE_DATA/cifar10, else found or downloaded)")
    p.add_argument("--mnist", default=data_path("mnist"), metavar="DIR",
                   help="MNIST IDX folder (default: $TENSORCACHE_DATA/mnist, else found or downloaded)")
    p.add_argument("--device", default="auto", help="torch device (default: cuda if present)")
    p.add_argument("--threads", type=positive_int, metavar="N", help="torch CPU threads (default: 1 when training on the "
                   "CPU, where 2 threads stall whenever another process holds a core; else torch's default)")
    p.add_argument("--out", metavar="DIR", default="runs/bench", help="where results and PNGs go")
    p.add_argument("--quick", action="store_true", help="CI smoke size (tiny models, 3 evaluations, one seed)")
    args = p.parse_args(dashed_values(argv))
    if args.quick:
        args.seeds = args.seeds[:1]
    cuda = torch.cuda.is_available()
    scale = "quick" if args.quick else (args.scale if args.scale != "auto" else ("gpu" if cuda else "cpu"))
    device = torch.device(("cuda" if cuda else "cpu") if args.device == "auto" else args.device)
    searches, modes = SCALES[scale]
    if args.threads is not None or device.type == "cpu":
        torch.set_num_threads(args.threads or 1)
    meta = {**machine(), "scale": scale, "run_device": str(device), "torch_threads": torch.get_num_threads(),
            "seeds": args.seeds, "searches": [asdict(s) for s in searches], "modes": modes}
    print(f"bench/transfer_e2e.py: {scale.upper()} scale on {device} ({meta['device']}), {meta['cpus']} CPUs, "
          f"{meta['torch_threads']} torch thread(s), seeds {args.seeds}, {meta['date']}")
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as workdir:
        data = {"cifar10": args.cifar and cifar_folder(args.cifar, workdir),
                "mnist": args.mnist and os.path.abspath(args.mnist)}
        for spec in searches:
            group = []
            for seed in args.seeds:
                print(f"  {spec.space} on {spec.dataset}, seed {seed}: cache off ...", flush=True)
                settings, records = search_off(spec, seed, data[spec.dataset], workdir, str(device))
                off = [{"model_id": r["model_id"], "parent_id": r["parent_id"], "score": r["score"],
                        "seconds": r["train_s"] + r["cache_s"], "bytes_served": 0} for r in records]
                target = args.target if args.target is not None else max(e["score"] for e in off)
                group.append(arm_row(spec.space, seed, "off", off, target))
                for mode in modes:
                    print(f"  {spec.space} on {spec.dataset}, seed {seed}: replayed, {mode} transfer ...", flush=True)
                    group.append(arm_row(spec.space, seed, mode, replay(settings, records, mode), target))
            os.makedirs(args.out, exist_ok=True)
            plot_anytime(os.path.join(args.out, f"anytime_{spec.space}.png"), spec.space, group, scale)
            rows += group
    meta["seconds"] = time.perf_counter() - t0
    report(rows, modes, scale)
    write_results(args.out, "e2e_runs", [{k: v for k, v in r.items() if k != "curve"} for r in rows], meta)
    with open(os.path.join(args.out, "e2e.json"), "w") as f:
        json.dump({"meta": meta, "runs": rows}, f, indent=2, default=str)
    print(f"\n{scale.upper()} scale, {meta['seconds']:.0f} s; wrote {args.out}/e2e_runs.csv, e2e.json and PNGs")
    return 0


def cifar_folder(path: str, workdir: str) -> str:
    """A folder ``run_search`` accepts for ``path``: the folder itself, or one holding just the given tar.gz."""
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        return path
    folder = os.path.join(workdir, "cifar10")
    os.makedirs(folder, exist_ok=True)
    os.symlink(path, os.path.join(folder, os.path.basename(path)))
    return folder


def report(rows: Sequence[dict[str, Any]], modes: Sequence[str], scale: str) -> None:
    tag = scale.upper()
    print(f"\n== the same searches, cache off vs on ({tag} scale)")
    print(f"{'space':<12} {'seed':>4} {'arm':<10} {'best val':>8} {'child val':>9} {'target':>7} {'evals->t':>8} "
          f"{'s->t':>7} {'train s':>8} {'MB moved':>8}")
    for r in rows:
        ev = "never" if r["evals_to_target"] is None else str(r["evals_to_target"])
        st = "-" if r["seconds_to_target"] is None else f"{r['seconds_to_target']:.1f}"
        print(f"{r['space']:<12} {r['seed']:>4} {r['arm']:<10} {r['best_val']:>8.2f} {r['children_mean_val'] or 0:>9.2f} "
              f"{r['target']:>7.2f} {ev:>8} {st:>7} {r['train_seconds']:>8.1f} {r['bytes_served'] / 1e6:>8.2f}")
    for space in dict.fromkeys(r["space"] for r in rows):
        off = {r["seed"]: r for r in rows if r["space"] == space and r["arm"] == "off"}
        for mode in modes:
            on = [r for r in rows if r["space"] == space and r["arm"] == mode]
            evals = [_ratio(off[r["seed"]]["evals_to_target"], r["evals_to_target"]) for r in on]
            secs = [_ratio(off[r["seed"]]["seconds_to_target"], r["seconds_to_target"]) for r in on]
            gain = [r["children_mean_val"] - off[r["seed"]]["children_mean_val"] for r in on
                    if r["children_mean_val"] is not None and off[r["seed"]]["children_mean_val"] is not None]
            have = [v for v in evals if v is not None]
            label = f"e2e.{space}.{mode}.evals_to_target"
            value = f"{statistics.median(have):7.3f}" if have else "n/a    "
            print(f"ratio {label:<44} {value}   cache off / {mode}, median [min, max] over {len(on)} seeds: "
                  f"{spread(evals)}; seconds: {spread(secs)}; children's mean accuracy "
                  f"{statistics.mean(gain) if gain else float('nan'):+.2f} points [{tag}]")


if __name__ == "__main__":
    sys.exit(exit_status(main))
