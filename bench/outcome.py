"""Outcome study: does the cache make a search pick a better model per unit of compute?

Whole ``run_search`` searches (real training: the ``attn`` space on the shipped ``mnist-small``) in several
arms on the same compute budget, over several seeds:

* ``cache-on``  regularized evolution, children warm-started from the cache;
* ``cache-off`` the same evolution, every child trained from scratch (same seeds, so the same first
  population and initialisations);
* ``random``    random search (every child a random architecture, trained from scratch);
* ``reeval``    cache-on with ``--reeval-leaders``: the population's leader is periodically retrained from
  scratch and that score used (its retraining counts as compute).

Ablations of the cache itself: ``--policies`` and ``--capacities`` turn the ``cache-on`` arm into one arm per
eviction policy and memory-tier size (their product), named ``cache-on[POLICY,SIZE]``; each is compared
with ``cache-off`` like any arm. A capacity smaller than what the search puts makes the policy decide which
donors are still there when a child asks; ``evictions`` and the share of new architectures' bytes served
(diagnostics, from each search's summary) show whether it did.

Compute is training epochs actually spent (own epochs of every evaluation, plus the scratch retrainings a
search does for itself), counted the same way in every arm; training seconds are reported beside it. Every
search runs the budget's number of children and is cut where its epochs reach the budget (a serial search's
decisions depend only on what finished before, so the cut is the search that stopped there).
The search score is validation accuracy after the child's own training (warm-started or not). At each
checkpoint of compute, a search's top-k architectures by its own scores are retrained from scratch
under one fixed protocol (``--retrain-epochs`` epochs, ``--retrain-seeds`` initialisations, the same
training and validation split as the search); the pick is the one with the best retrained validation
accuracy, and its retrained accuracy on the test split (never used by any search) is the outcome.
Retrainings are shared by architecture: the same architecture gets the same figures in every arm.

Reports, with 95% bootstrap intervals over seeds: the final pick's test accuracy per arm, the paired
difference of each arm against ``cache-off``, anytime curves (pick's test accuracy against compute, a plot
with bands), and the compute each arm needs to reach the cache-off arm's final mean quality.

    python bench/outcome.py --out runs/outcome                     # the documented CPU grid (one setting)
    python bench/outcome.py --quick --out /tmp/outcome             # CI size, under a minute on 2 cores
    python bench/outcome.py --arms cache-on,cache-off --seeds 3 --capacities 2GB,16MB \
        --policies lru,donor-window,evolution-aware --out runs/outcome-ablation   # policy x capacity
    python bench/outcome.py --device cuda --train-subset 0 ...     # the same script on a GPU
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import exit_status, machine, write_markdown_table  # noqa: E402

from nas_integration.evaluators.train import TrainEvaluator  # noqa: E402
from nas_integration.search import SearchSettings, run_search  # noqa: E402
from nas_integration.spaces import SearchSpace  # noqa: E402
from tensorcache.cli import dashed_values, positive_int  # noqa: E402
from tensorcache.config import CacheConfig  # noqa: E402
from tensorcache.evolution import Candidate  # noqa: E402
from tensorcache.trace import read_records  # noqa: E402

ARMS = ("cache-on", "cache-off", "random", "reeval")
BASELINE = "cache-off"
CACHE = CacheConfig(memory="2GB", disk="none")  # the cache of the cache-on and reeval arms: memory only, ample


@dataclass(frozen=True)
class Arm:
    """One arm as run: its label in the report, its kind (one of ARMS) and, where the cache is on, its cache."""

    label: str
    kind: str
    cache: CacheConfig | None

    @property
    def folder(self) -> str:
        """The label as a folder name (``cache-on[lru,16MB]`` -> ``cache-on_lru_16MB``)."""
        return self.label.replace("[", "_").replace(",", "_").replace("]", "")


def expand_arms(kinds: Sequence[str], policies: Sequence[str] | None, capacities: Sequence[str] | None) -> list[Arm]:
    """The arms to run: each kind once, except ``cache-on`` with ``policies`` or ``capacities`` given, which
    becomes one arm per (policy, memory size), the other taken from CACHE where not given."""
    arms = []
    for kind in kinds:
        if kind == "cache-on" and (policies or capacities):
            for policy in policies or [CACHE.policy]:
                for size in capacities or [CACHE.memory]:
                    arms.append(Arm(f"cache-on[{policy},{size}]", kind, replace(CACHE, policy=policy, memory=size)))
        else:
            arms.append(Arm(kind, kind, CACHE if kind in ("cache-on", "reeval") else None))
    return arms


@dataclass(frozen=True)
class Step:
    """One training a search paid for, in the order it finished: the compute it cost and, for an evaluation
    the search scored, the architecture and the score the search then believed."""

    t_end: float
    epochs: float
    seconds: float
    arch: tuple[int, ...]
    score: float
    model_id: str
    child: bool = True  # an evaluation of a child, not a scratch retraining


def search_steps(out: str) -> list[Step]:
    """Every training of the search in ``out`` (its trace, and its scratch retrainings if any), by finish time.

    A scratch retraining (``controls.jsonl``) carries ``scratch_of``: when the search used it as the model's
    score (``reeval``), it replaces that model's score from then on."""
    steps = [Step(r.t_end, r.epochs or 0.0, r.train_s, tuple(r.arch), r.score, r.model_id)
             for r in read_records(os.path.join(out, "trace.jsonl"))]
    controls = os.path.join(out, "controls.jsonl")
    if os.path.exists(controls):
        for r in read_records(controls):
            used = r.extra.get("used", False)
            steps.append(Step(r.t_end, r.epochs or 0.0, r.train_s, tuple(r.arch),
                              r.score if used else float("nan"), r.extra["scratch_of"] if used else "", False))
    return sorted(steps, key=lambda s: s.t_end)


def beliefs_at(steps: Sequence[Step], budget: float) -> dict[str, tuple[tuple[int, ...], float]]:
    """model id -> (arch, score the search believed) after the trainings that fit in ``budget`` epochs."""
    spent, belief = 0.0, {}
    for s in steps:
        if spent + s.epochs > budget + 1e-9:
            break
        spent += s.epochs
        if s.model_id:
            belief[s.model_id] = (s.arch, s.score)
    return belief


def within(steps: Sequence[Step], budget: float) -> list[Step]:
    """The trainings that fit in ``budget`` epochs, in finish order (what ``beliefs_at`` counts)."""
    total, out = 0.0, []
    for s in steps:
        if total + s.epochs > budget + 1e-9:
            break
        total += s.epochs
        out.append(s)
    return out


def top_k(belief: dict[str, tuple[tuple[int, ...], float]], k: int) -> list[tuple[int, ...]]:
    """The search's k best distinct architectures by its own scores (ties: the earlier model)."""
    ranked = sorted(belief.items(), key=lambda kv: (-kv[1][1], kv[0]))
    out: list[tuple[int, ...]] = []
    for _, (arch, _) in ranked:
        if arch not in out:
            out.append(arch)
        if len(out) == k:
            break
    return out


class Retrainer:
    """Retrains architectures from scratch under the one fixed protocol, each architecture once; with ``path``,
    earlier retrainings of the same protocol are read from it and new ones appended (``--resume``). ``space``:
    the search space the architectures belong to (a registered name or a SearchSpace; bench/frameworks.py
    passes its own small attn space)."""

    def __init__(self, args: argparse.Namespace, path: str | None = None, space: str | SearchSpace = "attn") -> None:
        self.args = args
        self.path = path
        self.evaluators = [TrainEvaluator(space=space, dataset="mnist-small", epochs=args.retrain_epochs,
                                          train_subset=args.train_subset or None, device=args.device,
                                          seed=10_000 + r, threads=args.threads, namespace="retrain")
                           for r in range(args.retrain_seeds)]
        self.done: dict[tuple[int, ...], tuple[float, float]] = {}  # arch -> (mean val, mean test)
        self.seconds = 0.0
        self.protocol = {k: getattr(args, k) for k in ("retrain_epochs", "retrain_seeds", "train_subset", "device")}
        name = space if isinstance(space, str) else space.name
        if name != "attn":  # another space's retrainings never match the default's (whose key is left out,
            self.protocol["space"] = name  # so files written before the key existed still match)
        if path is not None and os.path.exists(path):
            with open(path) as f:
                for line in f:
                    row = json.loads(line)
                    if row["protocol"] == self.protocol:
                        self.done[tuple(row["arch"])] = (row["val"], row["test"])

    def __call__(self, arch: tuple[int, ...]) -> tuple[float, float]:
        if arch not in self.done:
            vals, tests = [], []
            for ev in self.evaluators:
                rec = ev.evaluate(Candidate(0, "retrain", arch), None)
                vals.append(rec.score)
                tests.append(rec.test)
                self.seconds += rec.train_s
            self.done[arch] = (float(np.mean(vals)), float(np.mean(tests)))
            if self.path is not None:
                with open(self.path, "a") as f:
                    f.write(json.dumps({"arch": list(arch), "val": self.done[arch][0], "test": self.done[arch][1],
                                        "protocol": self.protocol}) + "\n")
        return self.done[arch]

    def pick(self, archs: Sequence[tuple[int, ...]]) -> tuple[tuple[int, ...], float, float]:
        """Of ``archs``, the one with the best retrained validation accuracy: (arch, val, test)."""
        scored = [(arch, *self(arch)) for arch in archs]
        return max(scored, key=lambda t: t[1])


def run_arm(arm: Arm, seed: int, args: argparse.Namespace, out: str) -> tuple[list[Step], dict[str, Any]]:
    """One search of ``arm`` at ``seed`` with enough evaluations to spend the budget: its trainings and its
    summary (``--resume``: those of an earlier finished search in ``out`` with the same settings)."""
    evals = args.evals  # reeval's scratch retrainings cost epochs too: it stops early (``beliefs_at``)
    random_search = arm.kind == "random"
    settings = SearchSettings(
        out=out, evaluator="train", space="attn", dataset="mnist-small", evals=evals, seed=seed,
        population=evals if random_search else args.population, sample=1 if random_search else args.sample,
        epochs=args.epochs, train_subset=args.train_subset, device=args.device, cache=arm.cache is not None,
        cache_config=arm.cache or CACHE, run_id=f"{arm.folder}-{seed}", overwrite=True,
        **({"reeval_leaders": args.reeval_every} if arm.kind == "reeval" else {}))
    if not (args.resume and _finished_alike(out, settings)):
        run_search(settings)
    with open(os.path.join(out, "summary.json")) as f:
        return search_steps(out), json.load(f)


def _finished_alike(out: str, settings: SearchSettings) -> bool:
    """Whether ``out`` holds a finished search with the settings that decide its trainings (for the cache:
    its policy and memory size)."""
    try:
        with open(os.path.join(out, "summary.json")) as f:
            earlier = json.load(f)["settings"]
    except (OSError, ValueError, KeyError):
        return False
    now = settings.resolved()
    keys = ("evals", "seed", "population", "sample", "epochs", "train_subset", "cache", "reeval_leaders")
    cache_keys = ("policy", "memory")
    return (all(earlier.get(k) == getattr(now, k, None) for k in keys)
            and all((earlier.get("cache_config") or {}).get(k) == getattr(now.cache_config, k) for k in cache_keys))


def bootstrap_mean(values: Sequence[float], rng: np.random.Generator, reps: int = 4000) -> tuple[float, float, float]:
    """Mean and 95% percentile interval of the mean, resampling the values (here: seeds) with replacement."""
    v = np.asarray(values, dtype=float)
    if len(v) == 0 or np.isnan(v).all():
        return (float("nan"),) * 3
    means = v[rng.integers(0, len(v), size=(reps, len(v)))].mean(axis=1)
    return float(v.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def compute_to_reach(curve: Sequence[tuple[float, float]], target: float) -> float:
    """The first checkpoint's compute at which the curve reaches ``target`` (inf if it never does)."""
    return next((c for c, acc in curve if acc >= target - 1e-9), float("inf"))


def study(args: argparse.Namespace) -> dict[str, Any]:
    """Run every arm at every seed, retrain the picks, and summarise (see the module doc)."""
    budget = args.evals * args.epochs
    checkpoints = [budget * (i + 1) / args.checkpoints for i in range(args.checkpoints)]
    retrain = Retrainer(args, os.path.join(args.out, "retrained.jsonl"))
    runs: dict[str, dict[int, dict[str, Any]]] = {a.label: {} for a in args.arms}
    for seed in range(args.seed0, args.seed0 + args.seeds):
        for a in args.arms:
            arm = a.label
            t0 = time.time()
            steps, done = run_arm(a, seed, args, os.path.join(args.out, "searches", f"{a.folder}-{seed}"))
            search_wall = time.time() - t0
            curve = []
            for c in checkpoints:
                picks = top_k(beliefs_at(steps, c), args.top_k)
                curve.append((c, retrain.pick(picks)[2] if picks else float("nan")))
            belief = beliefs_at(steps, budget)
            best_id = max(belief, key=lambda m: (belief[m][1], m))
            arch, val, test = retrain.pick(top_k(belief, args.top_k))
            runs[arm][seed] = {
                "final_test": test, "final_val": val, "final_arch": list(arch), "curve": curve,
                "search_best_score": belief[best_id][1], "search_best_retrained_test": retrain(belief[best_id][0])[1],
                "epochs": sum(s.epochs for s in within(steps, budget)), "epochs_run": sum(s.epochs for s in steps),
                "train_s": sum(s.seconds for s in steps),
                "evaluations": sum(s.child for s in within(steps, budget)),
                "distinct_archs": len({s.arch for s in within(steps, budget) if s.child}), "wall_s": search_wall,
                "evictions": sum((done.get("cache") or {}).get("evictions", {}).values()),
                "new_byte_share": done.get("new_byte_share") or 0.0}
            print(f"{arm:9s} seed {seed}: pick test {test:.2f} (search's best scored {belief[best_id][1]:.2f}, "
                  f"retrained {runs[arm][seed]['search_best_retrained_test']:.2f}); "
                  f"{runs[arm][seed]['train_s']:.1f} s training, {search_wall:.1f} s wall", flush=True)
    return summarise(runs, checkpoints, retrain, args)


def summarise(runs: dict[str, dict[int, dict[str, Any]]], checkpoints: list[float], retrain: Retrainer,
              args: argparse.Namespace) -> dict[str, Any]:
    """Per-arm figures with intervals over seeds, paired differences against the baseline, compute to target."""
    rng = np.random.default_rng(0)
    seeds = sorted(next(iter(runs.values())))
    arms: dict[str, Any] = {}
    base = runs.get(BASELINE)
    target = float(np.mean([base[s]["final_test"] for s in seeds])) if base else float("nan")
    for arm, by_seed in runs.items():
        finals = [by_seed[s]["final_test"] for s in seeds]
        curves = np.array([[acc for _, acc in by_seed[s]["curve"]] for s in seeds])
        reach = [compute_to_reach(by_seed[s]["curve"], target) for s in seeds]
        row: dict[str, Any] = {
            "final_test": bootstrap_mean(finals, rng),
            "search_best_score": bootstrap_mean([by_seed[s]["search_best_score"] for s in seeds], rng),
            "search_best_retrained_test": bootstrap_mean(
                [by_seed[s]["search_best_retrained_test"] for s in seeds], rng),
            "train_s": bootstrap_mean([by_seed[s]["train_s"] for s in seeds], rng),
            "evaluations": float(np.mean([by_seed[s]["evaluations"] for s in seeds])),
            "distinct_archs": float(np.mean([by_seed[s]["distinct_archs"] for s in seeds])),
            "evictions": float(np.mean([by_seed[s].get("evictions", 0) for s in seeds])),
            "new_byte_share": float(np.mean([by_seed[s].get("new_byte_share", 0.0) for s in seeds])),
            "curve_mean": curves.mean(axis=0).tolist(),
            "curve_band": [list(bootstrap_mean(curves[:, i], rng)[1:]) for i in range(len(checkpoints))],
            "reach_epochs": reach, "reached": sum(np.isfinite(reach)),
            "reach_median_epochs": float(np.median(reach)),
        }
        if base and arm != BASELINE:
            row["diff_vs_baseline"] = bootstrap_mean([by_seed[s]["final_test"] - base[s]["final_test"] for s in seeds],
                                                     rng)
        arms[arm] = row
    return {"arms": arms, "seeds": seeds, "checkpoints": checkpoints, "target": target,
            "retrained_archs": len(retrain.done), "retrain_s": retrain.seconds, "runs": runs}


def fmt_ci(v: Sequence[float], f: str = "{:.2f}") -> str:
    return f"{f.format(v[0])} [{f.format(v[1])}, {f.format(v[2])}]"


def fmt_epochs(e: float) -> str:
    return "never" if not np.isfinite(e) else f"{e:g}"


def report(summary: dict[str, Any], args: argparse.Namespace) -> list[list[str]]:
    """Print the table (and ratio lines against the baseline); return its rows for outcome.md."""
    budget = summary["checkpoints"][-1]
    print(f"\noutcome: {len(summary['seeds'])} seeds, budget {budget:g} epochs per search, P {args.population} "
          f"S {args.sample}, top-{args.top_k} retrained {args.retrain_seeds}x{args.retrain_epochs} epochs; "
          + (f"target = {BASELINE} mean final {summary['target']:.2f}" if BASELINE in summary["arms"] else
             f"no {BASELINE} arm: no target, no paired difference"))
    rows = []
    for arm, a in summary["arms"].items():
        reach = f"{fmt_epochs(a['reach_median_epochs'])} ({a['reached']}/{len(summary['seeds'])} seeds)" \
            if BASELINE in summary["arms"] else "n/a"
        diff = fmt_ci(a["diff_vs_baseline"], "{:+.2f}") if "diff_vs_baseline" in a else "-"
        row = [arm, fmt_ci(a["final_test"]), diff, fmt_ci(a["search_best_score"]),
               fmt_ci(a["search_best_retrained_test"]), reach, f"{a['evaluations']:.1f}",
               f"{a['distinct_archs']:.1f}", f"{a['new_byte_share']:.0%}", f"{a['evictions']:.1f}",
               f"{a['train_s'][0]:.1f}"]
        rows.append(row)
        print("  ".join(row))
    for arm, a in summary["arms"].items():
        if arm != BASELINE and BASELINE in summary["arms"]:
            base = summary["arms"][BASELINE]
            ratio = a["reach_median_epochs"] / base["reach_median_epochs"] if np.isfinite(
                a["reach_median_epochs"]) and np.isfinite(base["reach_median_epochs"]) else float("nan")
            print(f"ratio outcome.{arm}_vs_{BASELINE}.epochs_to_target {ratio:.3f}" if np.isfinite(ratio)
                  else f"ratio outcome.{arm}_vs_{BASELINE}.epochs_to_target n/a")
            print(f"ratio outcome.{arm}_vs_{BASELINE}.final_test {a['final_test'][0] / base['final_test'][0]:.4f}")
    return rows


HEADER = ["arm", "final pick: test acc (95% CI over seeds)", f"minus {BASELINE} (paired)",
          "search's best: search score", "search's best: retrained test", f"epochs to reach {BASELINE}'s final",
          "evaluations", "distinct archs", "new archs' bytes from cache", "evictions", "training s"]


def plot(path: str, summary: dict[str, Any], title: str) -> None:
    """Anytime curves: the pick's retrained test accuracy against compute, mean over seeds with a 95% band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    x = summary["checkpoints"]
    for arm, a in summary["arms"].items():
        lo, hi = zip(*a["curve_band"])
        (line,) = ax.plot(x, a["curve_mean"], marker="o", ms=3, label=arm)
        ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.15)
    ax.axhline(summary["target"], color="grey", lw=0.8, ls="--", label=f"{BASELINE} final (mean)")
    ax.set_xlabel("compute spent (training epochs, all arms counted alike)")
    ax.set_ylabel("pick's test accuracy, retrained from scratch (%)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/outcome", help="output folder (default: runs/outcome)")
    p.add_argument("--quick", action="store_true", help="CI size: 2 seeds, 8 evaluations, 1000 examples")
    p.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated arms (default: {','.join(ARMS)})")
    p.add_argument("--seeds", type=positive_int, help="seeds per arm (default: 5; --quick: 2)")
    p.add_argument("--seed0", type=int, default=0, help="first seed (default: 0)")
    p.add_argument("--evals", type=positive_int, default=24, help="budget: this many evaluations' epochs (default: 24)")
    p.add_argument("--population", type=positive_int, default=8, help="P (default: 8)")
    p.add_argument("--sample", type=positive_int, default=3, help="S (default: 3)")
    p.add_argument("--epochs", type=positive_int, default=1, help="epochs per child in the search (default: 1)")
    p.add_argument("--policies", help="ablation: comma-separated eviction policies, one cache-on arm each "
                                      f"(default: {CACHE.policy})")
    p.add_argument("--capacities", help="ablation: comma-separated memory-tier sizes, one cache-on arm each "
                                        f"(e.g. 2GB,16MB; default: {CACHE.memory})")
    p.add_argument("--reeval-every", type=positive_int, default=4, help="reeval arm: retrain the leader every N (default: 4)")
    p.add_argument("--train-subset", type=int, default=2000,
                   help="examples: N for training and validation (a tenth of them), up to N for the test split "
                        "(mnist-small has 6,000 + 1,000); 0 = all (default: 2000)")
    p.add_argument("--top-k", type=positive_int, default=3, help="picks retrained per search and checkpoint (default: 3)")
    p.add_argument("--retrain-epochs", type=positive_int, default=2, help="final protocol: epochs (default: 2)")
    p.add_argument("--retrain-seeds", type=positive_int, default=2, help="final protocol: initialisations (default: 2)")
    p.add_argument("--checkpoints", type=positive_int, default=6, help="points of the anytime curves (default: 6)")
    p.add_argument("--device", default="cpu", help="training device (default: cpu)")
    p.add_argument("--threads", type=positive_int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--resume", action="store_true",
                   help="reuse finished searches and retrainings in --out made with the same settings")
    return p


def _listed(value: str | None) -> list[str] | None:
    """A comma-separated option as a list (None when not given)."""
    return [v for v in value.split(",") if v] if value else None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(dashed_values(argv))
    if args.quick:
        args.seeds, args.evals, args.population, args.sample = 2 if args.seeds is None else args.seeds, 8, 4, 2
        args.train_subset, args.top_k, args.retrain_epochs, args.retrain_seeds, args.checkpoints = 1000, 2, 1, 1, 4
        args.reeval_every = 2
    args.seeds = 5 if args.seeds is None else args.seeds
    kinds = [a for a in args.arms.split(",") if a]
    unknown = set(kinds) - set(ARMS)
    if unknown:
        raise ValueError(f"unknown arms {sorted(unknown)}; expected some of {','.join(ARMS)}")
    args.arms = expand_arms(kinds, _listed(args.policies), _listed(args.capacities))  # names a bad policy or size
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    summary = study(args)
    summary["wall_s"] = time.time() - t0
    rows = report(summary, args)
    meta = {"command": " ".join(["python", "bench/outcome.py", *(argv if argv is not None else sys.argv[1:])]),
            "settings": {**vars(args), "arms": [a.label for a in args.arms]}, "machine": machine()}
    with open(os.path.join(args.out, "outcome.json"), "w") as f:
        json.dump({**meta, **summary}, f, indent=1, default=float)
    write_markdown_table(os.path.join(args.out, "outcome.md"), HEADER, rows)
    plot(os.path.join(args.out, "outcome.png"), summary,
         f"attn on mnist-small, P {args.population} S {args.sample}, budget {args.evals * args.epochs} epochs, "
         f"{len(summary['seeds'])} seeds (band: 95% bootstrap over seeds)")
    print(f"wrote {args.out}/outcome.json, outcome.md, outcome.png ({summary['wall_s']:.1f} s; "
          f"{summary['retrained_archs']} architectures retrained, {summary['retrain_s']:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(exit_status(main))
