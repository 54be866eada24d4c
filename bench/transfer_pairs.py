"""Paired transfer study: how many epochs a warm-started NB201 child saves, with intervals and ranking fidelity.

    python bench/transfer_pairs.py [--scale cpu|gpu] [--pairs 24] [--seed 0] [--out DIR] [--quick]

Parents: ``--parents`` NAS-Bench-201 architectures from different regions of the table's CIFAR-10
accuracy (high, middle, low), each trained ``epochs`` epochs. Children: one-edge mutations of each
parent drawn by seed, stratified by mutation type (``adds`` parameters, ``removes`` parameters, ``swaps``
parameter-free ops). Each child is trained twice for the same epochs, through the public API only:
*scratch* from a fresh initialisation, and *warm* from the same initialisation with every tensor the
parent can give put in place by ``TensorCache.warm_start`` (``compatible`` layer map). Both arms use
the same batch order and are checked on the same held-out images (from the training split, never seen
in training) before training and every half epoch.

Targets: scratch's best accuracy over the checks, and scratch's plateau (its last three checks
averaged, reached when an arm's trailing three-check mean gets there; the epoch at which a curve reaches
a target is interpolated between the checks around it). Reported per stratum and overall, with
hierarchical bootstrap 95% intervals (parents resampled, then pairs within them: a parent's children share
its training): the median of scratch epochs / warm epochs to each target, and the final-accuracy
difference warm - scratch after the same epochs; plus the fraction of parameter bytes transferred and
Kendall tau between warm and scratch accuracies of the children, between each and the table's 200-epoch
accuracies, and its noise ceiling: tau between scratch and a second scratch training of each child
(another initialisation and batch order).

Resumable: each finished pair is appended to DIR/pairs.jsonl and skipped when the command is run again
(``--budget-min`` stops cleanly before a time limit), so a partial run is still reportable;
``--report-only`` summarises what is there. Writes DIR/transfer_pairs.json, DIR/transfer_pairs.csv and
DIR/transfer_pairs.png.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from itertools import zip_longest
from typing import Any

import numpy as np
import torch
from nas_integration.data import nb201_table
from common import data_path, exit_status, machine
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import nn

from nas_integration.data import load_dataset
from nas_integration.spaces import NB201Space
from nas_integration.spaces.nb201 import OPS, NB201Index
from tensorcache import TensorCache
from tensorcache.cli import dashed_values, positive_int
from tensorcache.metrics import json_safe
from tensorcache.tables import open_text

STRATA = ("adds", "removes", "swaps")
REGIONS = (("high", 0.90, 0.99), ("middle", 0.45, 0.55), ("low", 0.10, 0.20))  # table-accuracy quantile bands
MIN_TABLE_ACC = 30.0  # children below this table accuracy are broken graphs (no path to the output): not drawn
CHECKS_PER_EPOCH = 2
SMOOTH = 3  # checks in the trailing mean of the plateau target
BOOTSTRAP = 5000
TAU_PAIRS = 3  # the fewest pairs a Kendall tau is computed on


@dataclass(frozen=True)
class Scale:
    """Model width/depth, data sizes and training length of one scale."""

    C: int
    N: int
    epochs: int
    n_train: int
    n_val: int
    batch_size: int
    lr: float


SCALES = {
    "gpu": Scale(C=16, N=5, epochs=20, n_train=45000, n_val=5000, batch_size=256, lr=2e-3),
    "cpu": Scale(C=4, N=1, epochs=3, n_train=2000, n_val=5000, batch_size=128, lr=2e-3),
    "quick": Scale(C=2, N=1, epochs=1, n_train=256, n_val=128, batch_size=64, lr=2e-3),
}


# ------------------------------------------------------------------------------------------------ design
@dataclass(frozen=True)
class Pair:
    """One parent -> child pair: the child differs from the parent on one edge."""

    parent_region: str
    parent: tuple[int, ...]
    child: tuple[int, ...]
    edge: int
    stratum: str

    @property
    def key(self) -> str:
        return f"{''.join(map(str, self.parent))}->{''.join(map(str, self.child))}"

    @property
    def seed(self) -> int:
        return zlib.crc32(self.key.encode())


def param_count(space: NB201Space, arch: Sequence[int]) -> int:
    """Parameters (not buffers) of ``arch``'s model, counted on the meta device."""
    return sum(p.numel() for p in space.meta_model(arch).parameters())


def stratum(space: NB201Space, parent: Sequence[int], child: Sequence[int]) -> str:
    """``adds``/``removes`` parameters, or ``swaps`` one parameter-free op for another."""
    diff = param_count(space, child) - param_count(space, parent)
    return "adds" if diff > 0 else "removes" if diff < 0 else "swaps"


def read_table(path: str) -> dict[tuple[int, ...], float]:
    """Architecture -> the table's CIFAR-10 200-epoch validation accuracy (mean over seeds)."""
    index = NB201Index.from_csv(path)
    with open_text(path) as f:
        return {index.arch(int(row["index"])): float(row["c10_valid_200ep_mean"]) for row in csv.DictReader(f)}


def choose_parents(table: dict[tuple[int, ...], float], n: int, rng: random.Random) -> list[tuple[str, tuple[int, ...]]]:
    """``n`` parents, one per region of the table's accuracy (cycling through high, middle, low)."""
    ranked = sorted(table, key=table.get)
    out: list[tuple[str, tuple[int, ...]]] = []
    for k in range(n):
        name, lo, hi = REGIONS[k % len(REGIONS)]
        band = [a for a in ranked[int(lo * len(ranked)):int(hi * len(ranked))] if a not in dict(out).values()]
        out.append((name, rng.choice(band)))
    return out


def draw_pairs(space: NB201Space, table: dict[tuple[int, ...], float], parents: int, pairs: int,
               seed: int) -> list[Pair]:
    """``pairs`` one-edge children spread over ``parents`` parents, each parent's drawn round-robin by stratum,
    listed parent by parent in turn (so that a run cut short still covers every parent)."""
    rng = random.Random(seed)
    per_parent = [pairs // parents + (k < pairs % parents) for k in range(parents)]
    lists: list[list[Pair]] = []
    for (region, parent), want in zip(choose_parents(table, parents, rng), per_parent):
        out: list[Pair] = []
        pool: dict[str, list[Pair]] = {s: [] for s in STRATA}
        for edge in range(len(parent)):
            for op in range(len(OPS)):
                child = parent[:edge] + (op,) + parent[edge + 1:]
                if op != parent[edge] and table.get(child, 0.0) >= MIN_TABLE_ACC:
                    kind = stratum(space, parent, child)
                    pool[kind].append(Pair(region, parent, child, edge, kind))
        for members in pool.values():
            rng.shuffle(members)
        while len(out) < want and any(pool.values()):
            out += [pool[s].pop() for s in STRATA if pool[s]][:want - len(out)]
        lists.append(out)
    return [pair for turn in zip_longest(*lists) for pair in turn if pair is not None]


# ---------------------------------------------------------------------------------------------- training
class Trainer:
    """Adam on in-memory tensors; validation accuracy before training and every 1/CHECKS_PER_EPOCH epoch."""

    def __init__(self, scale: Scale, cifar: str, device: torch.device, seed: int) -> None:
        n = scale.n_train + scale.n_val
        x_train, y_train, _, _ = load_dataset("cifar10", cifar, subset=(n, 1), seed=seed)
        if len(x_train) < n:
            raise ValueError(f"CIFAR-10 at {cifar} has {len(x_train)} training images; this scale needs {n}")
        x = torch.as_tensor(x_train).float().div_(255).permute(0, 3, 1, 2).contiguous()
        y = torch.as_tensor(y_train).long()
        self.x, self.y = x[:scale.n_train].to(device), y[:scale.n_train].to(device)
        self.xv, self.yv = x[scale.n_train:].to(device), y[scale.n_train:].to(device)
        self.scale, self.device = scale, device

    def train(self, model: nn.Module, seed: int, evaluate: bool = True) -> list[tuple[float, float]]:
        """Train ``scale.epochs`` epochs with batch order ``seed``; [(epochs done, val accuracy %)]."""
        model.to(self.device)
        opt = torch.optim.Adam(model.parameters(), lr=self.scale.lr)
        loss_fn = nn.CrossEntropyLoss()
        order = torch.Generator().manual_seed(seed)
        history = [(0.0, self.accuracy(model))] if evaluate else []
        for epoch in range(self.scale.epochs):
            batches = torch.randperm(len(self.x), generator=order).split(self.scale.batch_size)
            marks = {round(len(batches) * k / CHECKS_PER_EPOCH) - 1: k for k in range(1, CHECKS_PER_EPOCH + 1)}
            model.train()
            for i, batch in enumerate(batches):
                batch = batch.to(self.device)
                loss = loss_fn(model(self.x[batch]), self.y[batch])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if evaluate and i in marks:
                    history.append((epoch + marks[i] / CHECKS_PER_EPOCH, self.accuracy(model)))
                    model.train()
        return history

    @torch.no_grad()
    def accuracy(self, model: nn.Module) -> float:
        model.eval()
        correct = sum(int((model(self.xv[i:i + 1024]).argmax(1) == self.yv[i:i + 1024]).sum())
                      for i in range(0, len(self.xv), 1024))
        return 100.0 * correct / len(self.xv)


def train_parent(space: NB201Space, trainer: Trainer, arch: tuple[int, ...], seed: int, path: str) -> dict[str, Any]:
    """The parent's trained state dict, from ``path`` if an earlier run saved it, else trained and saved."""
    if os.path.exists(path):
        return torch.load(path, map_location="cpu", weights_only=True)
    torch.manual_seed(seed)
    model = space.build(arch)
    trainer.train(model, seed, evaluate=False)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save(state, path + ".tmp")
    os.replace(path + ".tmp", path)
    return state


def run_pair(space: NB201Space, trainer: Trainer, pair: Pair, parent_state: dict[str, Any],
             table: dict[tuple[int, ...], float]) -> dict[str, Any]:
    """Both arms of one pair; the record appended to pairs.jsonl."""
    torch.manual_seed(pair.seed)
    init = {k: v.clone() for k, v in space.build(pair.child).state_dict().items()}
    t0 = time.perf_counter()
    scratch = space.build(pair.child)
    scratch.load_state_dict(init)
    hist_scratch = trainer.train(scratch, pair.seed)
    t_scratch = time.perf_counter() - t0
    warm = space.build(pair.child)
    warm.load_state_dict(init)
    with TensorCache(memory="1GB", namespace=f"pairs-{pair.key}") as cache:
        cache.put("parent", pair.parent, parent_state, layer_map=space.layer_map(pair.parent, "compatible"))
        report = cache.warm_start(warm, pair.child, parent="parent", layer_map=space.layer_map(pair.child, "compatible"))
    total = sum(v.numel() * v.element_size() for v in init.values())
    t1 = time.perf_counter()
    hist_warm = trainer.train(warm, pair.seed)
    t2 = time.perf_counter()
    torch.manual_seed(pair.seed + 1)  # the noise ceiling: scratch again, another initialisation and batch order
    hist_scratch2 = trainer.train(space.build(pair.child), pair.seed + 1)
    return {**asdict(pair), "key": pair.key, "parent_native": space.decode(pair.parent),
            "child_native": space.decode(pair.child), "table_child": table[pair.child],
            "table_parent": table[pair.parent], "transferred_layers": report.layers,
            "transferred_fraction": report.nbytes / total, "scratch": hist_scratch, "warm": hist_warm,
            "scratch2": hist_scratch2,
            "seconds": {"scratch": t_scratch, "warm": t2 - t1, "scratch2": time.perf_counter() - t2}}


# -------------------------------------------------------------------------------------------- statistics
def smoothed(history: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Trailing mean over SMOOTH checks (fewer at the start), at each check's epoch."""
    acc = [a for _, a in history]
    return [(e, float(np.mean(acc[max(0, i - SMOOTH + 1):i + 1]))) for i, (e, _) in enumerate(history)]


def first_reach(history: Sequence[tuple[float, float]], target: float, skip: int = 0) -> float | None:
    """Epoch at which the curve first reaches ``target``, interpolated linearly between the check before and
    the first check at or above it (checks before ``skip`` do not count as reaching it); None if never."""
    for k in range(skip, len(history)):
        e, a = history[k]
        if a >= target:
            if k == 0:
                return e
            e0, a0 = history[k - 1]
            return e if a0 >= target or a == a0 else e0 + (target - a0) / (a - a0) * (e - e0)
    return None


def epoch_ratio(scratch: float | None, warm: float | None, last: float) -> tuple[float, str]:
    """scratch epochs / warm epochs (each interpolated between checks), and whether it is exact or a bound.

    Warm there before training counts as one check of training (ratio a lower bound, ">="); warm never
    there counts as one check past the end (an upper bound, "<=")."""
    step = 1.0 / CHECKS_PER_EPOCH
    if warm is None:
        return scratch / (last + step), "<="
    if warm == 0:
        return scratch / step, ">="
    return scratch / warm, "="


def pair_stats(rec: dict[str, Any]) -> dict[str, Any]:
    """Targets, epochs to each, ratios and the final difference of one pair record."""
    scratch, warm = rec["scratch"], rec["warm"]
    last = scratch[-1][0]
    best = max(a for e, a in scratch if e > 0)
    plateau = smoothed(scratch)[-1][1]
    out = {"final_scratch": scratch[-1][1], "final_warm": warm[-1][1], "diff_final": warm[-1][1] - scratch[-1][1],
           "target_best": best, "target_plateau": plateau}
    for name, target, curve in (("best", best, lambda h: h), ("plateau", plateau, smoothed)):
        e_s = first_reach(curve(scratch), target, skip=1)  # after training starts: the target is scratch's own
        e_w = first_reach(curve(warm), target)  # a warm child may be there before training
        out[f"epochs_scratch_{name}"], out[f"epochs_warm_{name}"] = e_s, e_w
        out[f"ratio_{name}"], out[f"bound_{name}"] = epoch_ratio(e_s, e_w, last)
    return out


def hierarchical(groups: Sequence[Any], rng: np.random.Generator) -> np.ndarray:
    """Indices of one hierarchical bootstrap draw: parents resampled with replacement, then each drawn
    parent's pairs resampled with replacement (pairs of one parent share its training, so are not independent)."""
    members: dict[Any, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    keys = list(members)
    out = []
    for k in rng.integers(0, len(keys), len(keys)):
        idx = members[keys[k]]
        out.extend(idx[j] for j in rng.integers(0, len(idx), len(idx)))
    return np.array(out, int)


def bootstrap(values: Sequence[float], stat: Callable[[np.ndarray], float], rng: np.random.Generator,
              groups: Sequence[Any] | None = None) -> tuple[float, float, float]:
    """``stat`` of the values and its percentile bootstrap 95% interval: resampling the ``groups`` (parents)
    and then the values within them when given, else the values."""
    v = np.asarray(values, float)
    if v.size == 0:
        return math.nan, math.nan, math.nan
    pick = (lambda: hierarchical(groups, rng)) if groups is not None else (lambda: rng.integers(0, v.size, v.size))
    draws = [stat(v[pick()]) for _ in range(BOOTSTRAP)]
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return float(stat(v)), float(lo), float(hi)


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b of two paired samples (ties counted as neither concordant nor discordant)."""
    x, y = np.asarray(a, float), np.asarray(b, float)
    i, j = np.triu_indices(x.size, 1)
    sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    denom = math.sqrt(np.count_nonzero(sx) * np.count_nonzero(sy))
    return float((sx * sy).sum() / denom) if denom else math.nan


def tau_interval(a: Sequence[float], b: Sequence[float], rng: np.random.Generator,
                 groups: Sequence[Any] | None = None) -> tuple[float, float, float]:
    """Kendall tau and its bootstrap 95% interval over resampled children (parents first, when ``groups``)."""
    x, y = np.asarray(a, float), np.asarray(b, float)
    if x.size < TAU_PAIRS:
        return math.nan, math.nan, math.nan
    draws = []
    for _ in range(BOOTSTRAP // 5):
        k = hierarchical(groups, rng) if groups is not None else rng.integers(0, x.size, x.size)
        draws.append(kendall_tau(x[k], y[k]))
    lo, hi = np.nanpercentile(draws, [2.5, 97.5])
    return kendall_tau(x, y), float(lo), float(hi)


def summarise(records: Sequence[dict[str, Any]], seed: int) -> dict[str, Any]:
    """Per stratum and overall: medians of the epoch ratios, mean final difference, intervals; ranking taus."""
    rng = np.random.default_rng(seed)
    stats = [{**r, **pair_stats(r)} for r in records]
    groups = {"all": stats, **{s: [r for r in stats if r["stratum"] == s] for s in STRATA}}
    rows = []
    for name, rs in groups.items():
        if not rs:
            continue
        row: dict[str, Any] = {"group": name, "pairs": len(rs),
                               "transferred_median": float(np.median([r["transferred_fraction"] for r in rs])),
                               "transferred_min": min(r["transferred_fraction"] for r in rs)}
        parents = [r["parent_native"] for r in rs]
        for t in ("best", "plateau"):
            row[f"ratio_{t}"] = bootstrap([r[f"ratio_{t}"] for r in rs], np.median, rng, parents)
            row[f"ge4_{t}"] = sum(r[f"ratio_{t}"] >= 4 for r in rs)
            row[f"bounds_{t}"] = {b: sum(r[f"bound_{t}"] == b for r in rs) for b in ("=", ">=", "<=")}
        row["diff_final"] = bootstrap([r["diff_final"] for r in rs], np.mean, rng, parents)
        row["warm_higher"] = sum(r["diff_final"] > 0 for r in rs)
        rows.append(row)
    final_s, final_w = [r["final_scratch"] for r in stats], [r["final_warm"] for r in stats]
    table = [r["table_child"] for r in stats]
    parents = [r["parent_native"] for r in stats]
    twice = [r for r in stats if r.get("scratch2")]  # pairs recorded before the second scratch lack it
    ranking = {"warm_vs_scratch": tau_interval(final_w, final_s, rng, parents),
               "scratch_vs_table": tau_interval(final_s, table, rng, parents),
               "warm_vs_table": tau_interval(final_w, table, rng, parents),
               # the noise ceiling: no single training's ranking can agree with scratch better than this
               "scratch_vs_scratch2": tau_interval([r["final_scratch"] for r in twice],
                                                   [r["scratch2"][-1][1] for r in twice], rng,
                                                   [r["parent_native"] for r in twice])}
    ranking_pairs = {key: len(twice) if key == "scratch_vs_scratch2" else len(stats) for key in ranking}
    by_parent = [[r for r in stats if r["parent_native"] == p] for p in sorted(set(parents))]
    within = {}
    for key in ("warm_vs_scratch",):
        taus = [kendall_tau([r["final_warm"] for r in rs], [r["final_scratch"] for r in rs])
                for rs in by_parent if len(rs) >= TAU_PAIRS]
        within[key] = float(np.nanmean(taus)) if taus else math.nan
    return {"groups": rows, "ranking": ranking, "ranking_pairs": ranking_pairs, "ranking_within_parent_mean": within,
            "most_pairs_of_a_parent": max(map(len, by_parent), default=0), "pairs": stats}


# ---------------------------------------------------------------------------------------------- reporting
def fmt_ci(v: tuple[float, float, float], f: str = "{:.2f}") -> str:
    return "n/a" if math.isnan(v[0]) else f"{f.format(v[0])} [{f.format(v[1])}, {f.format(v[2])}]"


def fmt_tau(v: tuple[float, ...], pairs: int) -> str:
    """A Kendall tau over ``pairs`` pairs (with its 95% CI when ``v`` holds one), or n/a saying why: NaN would
    not say that a tau needs three pairs."""
    if pairs < TAU_PAIRS:
        return f"n/a ({pairs} pair{'' if pairs == 1 else 's'}; tau needs >= {TAU_PAIRS})"
    return fmt_ci(v, "{:.3f}") if len(v) == 3 else "n/a" if math.isnan(v[0]) else f"{v[0]:.3f}"


def report(summary: dict[str, Any], tag: str) -> None:
    print(f"\n== paired transfer study ({tag} scale), {len(summary['pairs'])} pairs")
    print(f"{'pair':<32} {'stratum':<8} {'moved':>6} {'scratch':>7} {'warm':>6} {'diff':>6} {'ep best s/w':>12} "
          f"{'ratio':>7} {'ep plat s/w':>12} {'ratio':>7}")
    for r in summary["pairs"]:
        print(f"{r['key']:<32} {r['stratum']:<8} {r['transferred_fraction']:>6.0%} {r['final_scratch']:>7.2f} "
              f"{r['final_warm']:>6.2f} {r['diff_final']:>+6.2f} "
              f"{_ep(r['epochs_scratch_best'])}/{_ep(r['epochs_warm_best']):<6} {r['bound_best']}{r['ratio_best']:>5.2f} "
              f"{_ep(r['epochs_scratch_plateau'])}/{_ep(r['epochs_warm_plateau']):<6} "
              f"{r['bound_plateau']}{r['ratio_plateau']:>5.2f}")
    print(f"\n{'group':<8} {'n':>3} {'moved med':>9} {'median ratio, best [95% CI]':>30} {'>=4':>4} "
          f"{'median ratio, plateau [95% CI]':>31} {'>=4':>4} {'final diff, mean [95% CI]':>28} {'warm>':>5}")
    for g in summary["groups"]:
        print(f"{g['group']:<8} {g['pairs']:>3} {g['transferred_median']:>9.0%} {fmt_ci(g['ratio_best']):>30} "
              f"{g['ge4_best']:>4} {fmt_ci(g['ratio_plateau']):>31} {g['ge4_plateau']:>4} "
              f"{fmt_ci(g['diff_final'], '{:+.2f}'):>28} {g['warm_higher']:>5}")
    print("\nranking fidelity (Kendall tau over children [95% CI]):")
    for k, v in summary["ranking"].items():
        print(f"  {k:<18} {fmt_tau(v, summary['ranking_pairs'][k])}")
    within = summary["ranking_within_parent_mean"]["warm_vs_scratch"]
    print(f"  within a parent, warm vs scratch, mean tau: {fmt_tau((within,), summary['most_pairs_of_a_parent'])}")
    for g in summary["groups"]:
        for t in ("best", "plateau"):
            print(f"ratio pairs.{g['group']}.median_epochs_{t:<8} {g[f'ratio_{t}'][0]:7.3f}   scratch epochs / warm "
                  f"epochs, 95% CI [{g[f'ratio_{t}'][1]:.2f}, {g[f'ratio_{t}'][2]:.2f}], {g['pairs']} pairs [{tag}]")


def _ep(e: float | None) -> str:
    return "never" if e is None else f"{e:.2f}"


def plot(path: str, summary: dict[str, Any], tag: str) -> None:
    """Per-pair points and per-group estimates with 95% intervals: final difference and epoch ratio."""
    fig = Figure(figsize=(10, 4.2))
    FigureCanvasAgg(fig)
    groups = summary["groups"]
    names = [g["group"] for g in groups]
    panels = (("diff_final", "final accuracy, warm - scratch (points)", "diff_final", False),
              ("ratio_best", "epochs to scratch's best, scratch / warm", "ratio_best", True),
              ("ratio_plateau", "epochs to scratch's plateau, scratch / warm", "ratio_plateau", True))
    for k, (field, label, per_pair, log) in enumerate(panels):
        ax = fig.add_subplot(1, 3, k + 1)
        for x, name in enumerate(names):
            pts = [r[per_pair] for r in summary["pairs"] if name == "all" or r["stratum"] == name]
            jitter = np.linspace(-0.15, 0.15, len(pts)) if len(pts) > 1 else [0.0]
            ax.scatter(np.full(len(pts), x) + jitter, pts, s=10, color="tab:gray", alpha=0.7, zorder=1)
            est, lo, hi = groups[x][field]
            ax.errorbar([x], [est], yerr=[[est - lo], [hi - est]], fmt="o", color="tab:red", capsize=4, zorder=2)
        ax.axhline(0 if not log else 1, color="black", linewidth=0.8)
        if log:
            ax.axhline(4, color="tab:green", linestyle=":", label="4x")
            ax.set_yscale("log", base=2)
            ax.legend(fontsize=7)
        ax.set_xticks(range(len(names)), [f"{n}\n({g['pairs']})" for n, g in zip(names, groups)])
        ax.set_title(label, fontsize=8)
    fig.suptitle(f"Warm vs scratch, paired ({tag} scale): pairs (grey), estimate and 95% bootstrap CI (red; "
                 "median ratio, mean difference)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_outputs(out: str, summary: dict[str, Any], meta: dict[str, Any]) -> None:
    tag = meta["scale"].upper()
    report(summary, tag)
    plot(os.path.join(out, "transfer_pairs.png"), summary, tag)
    cols = ["key", "parent_region", "stratum", "edge", "parent_native", "child_native", "table_parent", "table_child",
            "transferred_fraction", "final_scratch", "final_warm", "diff_final", "target_best", "epochs_scratch_best",
            "epochs_warm_best", "ratio_best", "bound_best", "target_plateau", "epochs_scratch_plateau",
            "epochs_warm_plateau", "ratio_plateau", "bound_plateau"]
    with open(os.path.join(out, "transfer_pairs.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(summary["pairs"])
    with open(os.path.join(out, "transfer_pairs.json"), "w") as f:
        json.dump(json_safe({"meta": meta, **summary}), f, indent=2, default=str, allow_nan=False)
    print(f"\nwrote {out}/transfer_pairs.json, transfer_pairs.csv, transfer_pairs.png")


def read_done(path: str) -> dict[str, dict[str, Any]]:
    """Finished pair records by key (a torn last line from an interrupted run is ignored)."""
    done = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                done[rec["key"]] = rec
    return done


# ------------------------------------------------------------------------------------------------ main
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", choices=("cpu", "gpu"), default="cpu",
                   help="cpu: NB201 C=4 N=1, 2000 training images, 3 epochs; gpu: C=16 N=5, 45000, 20 epochs")
    p.add_argument("--pairs", type=positive_int, default=24, help="parent/child pairs (default: 24)")
    p.add_argument("--parents", type=positive_int, default=3, help="parents, from high/middle/low table accuracy (default: 3)")
    p.add_argument("--epochs", type=positive_int, help="override the scale's epochs")
    p.add_argument("--seed", type=int, default=0, help="seed of the draw, the data split and every model")
    p.add_argument("--cifar", default=data_path("cifar10"), metavar="PATH",
                   help="CIFAR-10 folder or tar.gz")
    p.add_argument("--table", default=str(nb201_table()), metavar="CSV",
                   help="NAS-Bench-201 table with index, arch_str and c10_valid_200ep_mean")
    p.add_argument("--device", default="auto", help="torch device (default: cuda if present)")
    p.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads (default: 1)")
    p.add_argument("--budget-min", type=float, help="start no new pair after this many minutes (rerun to go on)")
    p.add_argument("--shard", default="0/1", metavar="I/N", help="run only the pairs whose number is I mod N "
                   "(several processes may share one --out; default: 0/1)")
    p.add_argument("--reverse", action="store_true", help="take the pairs last first, so that a second process on "
                   "the same --out meets the first in the middle (pairs another process finished are skipped)")
    p.add_argument("--report-only", action="store_true", help="summarise DIR/pairs.jsonl without training")
    p.add_argument("--out", metavar="DIR", default="runs/transfer_pairs", help="results folder (resumed if present)")
    p.add_argument("--quick", action="store_true", help="CI smoke size (tiny models, few pairs)")
    args = p.parse_args(dashed_values(argv))
    for name, path in (("--cifar", args.cifar), ("--table", args.table)):
        if not os.path.exists(path):
            p.error(f"{name}: {path} does not exist")
    try:
        shard, shards = (int(v) for v in args.shard.split("/"))
        if not 0 <= shard < shards:
            raise ValueError
    except ValueError:
        p.error(f"--shard must read I/N with 0 <= I < N, got {args.shard!r}")
    scale_name = "quick" if args.quick else args.scale
    scale = SCALES[scale_name] if args.epochs is None else replace(SCALES[scale_name], epochs=args.epochs)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    space = NB201Space(C=scale.C, N=scale.N)
    table = read_table(args.table)
    plan = draw_pairs(space, table, args.parents, args.pairs, args.seed)
    jsonl = os.path.join(args.out, "pairs.jsonl")
    done = read_done(jsonl)
    meta = {**machine(), "scale": scale_name,
            "run_device": str(device), "torch_threads": torch.get_num_threads(), "seed": args.seed,
            "settings": asdict(scale), "planned_pairs": len(plan), "checks_per_epoch": CHECKS_PER_EPOCH}
    todo = [pair for k, pair in enumerate(plan) if pair.key not in done and k % shards == shard]
    todo = todo[::-1] if args.reverse else todo
    print(f"bench/transfer_pairs.py: {scale_name.upper()} scale on {device} ({meta['device']}), "
          f"{len(plan)} pairs planned, {len(done)} already in {jsonl}, {len(todo)} to run in shard {args.shard}",
          flush=True)
    t0 = time.perf_counter()
    if todo and not args.report_only:
        trainer = Trainer(scale, args.cifar, device, args.seed)
        states: dict[tuple[int, ...], dict[str, Any]] = {}
        for n, pair in enumerate(todo, 1):
            elapsed = (time.perf_counter() - t0) / 60
            if args.budget_min is not None and n > 1 and elapsed * n / (n - 1) > args.budget_min:
                print(f"  budget of {args.budget_min:g} min reached after {n - 1} pair(s); rerun to go on", flush=True)
                break
            if pair.key in read_done(jsonl):  # another process on this --out finished it meanwhile
                continue
            if pair.parent not in states:
                path = os.path.join(args.out, f"parent-{''.join(map(str, pair.parent))}.pt")
                seed = args.seed + zlib.crc32(space.decode(pair.parent).encode())
                states[pair.parent] = train_parent(space, trainer, pair.parent, seed, path)
            rec = run_pair(space, trainer, pair, states[pair.parent], table)
            with open(jsonl, "a") as f:
                f.write(json.dumps(rec) + "\n")
            done[pair.key] = rec
            print(f"  [{n}/{len(todo)}] {pair.key} {pair.stratum:<7} moved {rec['transferred_fraction']:.0%} "
                  f"scratch {rec['scratch'][-1][1]:.2f} warm {rec['warm'][-1][1]:.2f} "
                  f"({sum(rec['seconds'].values()):.0f} s)", flush=True)
    done = read_done(jsonl)  # with what other shards added meanwhile
    records = [done[pair.key] for pair in plan if pair.key in done]
    if not records:
        print("no finished pairs to report")
        return 1
    meta["pairs_reported"] = len(records)
    write_outputs(args.out, summarise(records, args.seed), meta)
    return 0


if __name__ == "__main__":
    sys.exit(exit_status(main))
