"""Ray Tune, Optuna and DeepHyper with and without tensorcache: warm-started share, disk used and the outcome.

    python bench/frameworks.py [--seeds 0,1,2] [--trials 8] [--frameworks ray,ray-evolution,optuna,deephyper]
                               [--quick] [--out DIR]

Small CPU sizes: 480 training and 120 validation images of the shipped mnist-small, one torch thread.
Each seed runs each framework twice in this process, ``without`` and ``with`` the cache, their order
alternating by seed:

* ray: Population Based Training, 4 trials x 4 steps, exploiting every step, mutating the hidden width of
  an MLP (784 -> 32 -> 16 or 32 -> 10) and the learning rate. ``without`` checkpoints the model with
  ``torch.save`` in Tune's checkpoints and, on an exploit, loads it (a width change does not load: the
  trial keeps its fresh model); ``with`` reports pointer checkpoints through ``TuneCache`` over an LMDB
  tier of 1 MB (the run puts about 1.7 MB); ``without, num_to_keep=1`` is ``without`` keeping one
  checkpoint per trial, as users bound Tune's disk. Warm share: trial starts from a checkpoint (exploits
  and PBT's synchronous pauses) that received the donor's tensors (all, or with ``with`` the layers that
  fit: ``partial``), over all starts from a checkpoint; ``errors``: trials that failed; ``finished``:
  trials that ran all 4 steps (a run stops when a trial fails: synchronous PBT would wait on it for ever).
* ray-evolution: ``EvolutionSearcher`` (regularized evolution, population 4, sample 2) over the attn space
  (3 nodes), ``--trials`` trials one at a time, one epoch each; ``with`` starts each child from its parent
  through ``TuneCache``.
* optuna: ``--trials`` trials of a random-sampler study over the attn space (3 nodes), one epoch each,
  ask-and-tell; ``with`` warm-starts each trial from the nearest held trial (``OptunaWarmStart``).
* deephyper: regularized evolution (population 4, sample 2), ``--trials`` evaluations, serial evaluator;
  ``with`` wraps the same run function with ``warm_started`` under ``LineageEvolution``.

Disk: bytes allocated under the run's Tune storage and the cache's LMDB file (``du``), and the cache's
payload bytes (its books). For Optuna and DeepHyper ``without`` keeps no model at all; its disk column
is what keeping every model as a ``torch.save`` file takes. Accuracy columns ``mean_acc``, ``best_acc`` and
``search_best_score`` are validation accuracies of the runs' own models (warm-started scores carry
inherited training): a diagnostic.

The outcome (ray-evolution, optuna, deephyper): each search's top ``--top-k`` architectures by its own
scores are retrained from scratch under bench/outcome.py's protocol (its ``Retrainer``: ``--retrain-epochs``
epochs, ``--retrain-seeds`` initialisations, ``--train-subset`` images of mnist-small), the pick is the one
with the best retrained validation accuracy, and its retrained accuracy on mnist-small's test split (which
no search here reads: they train and validate on training images) is ``pick_test``. Both runs of a seed
spend the same compute: ``--trials`` children of one epoch on the same images (``search_s``: the run's
seconds, cache included). The table after the rows gives, per framework, ``with`` minus ``without`` of
``pick_test`` paired by seed, with a 95% bootstrap interval over seeds. PBT (``ray``) produces a trained model and
its schedule, not an architecture to retrain: its outcome is the model it hands back (the trial that
finished its 4 steps with the best validation accuracy) scored on the same test split, after the same
steps in every run (no top-1 column).
``--quick``: 5 trials, top-2 retrained once for one epoch on 1,000 images (a CI smoke size).
DeepHyper's regularized evolution follows Python's string hashing: set ``PYTHONHASHSEED`` for DeepHyper
rows that repeat (Ray Tune's evolution and Optuna repeat without it; PBT's trials are seeded by Tune's
random trial ids and do not).
Writes DIR/frameworks.csv, .json and frameworks_outcome.md.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench.common import exit_status, machine, seeds, write_markdown_table, write_results  # noqa: E402
from bench.outcome import Retrainer, bootstrap_mean, fmt_ci, top_k  # noqa: E402
from bench.outcome import build_parser as outcome_parser  # noqa: E402
from bench.training import fit  # noqa: E402
from nas_integration.data import flat_mnist, load_dataset  # noqa: E402
from nas_integration.spaces import AttnSpace  # noqa: E402
from tensorcache import TensorCache  # noqa: E402
from tensorcache.cli import dashed_values, positive_int  # noqa: E402

Belief = dict[str, tuple[tuple[int, ...], float]]   # model id -> (architecture, the search's own score)

FRAMEWORKS = ("ray", "ray-evolution", "optuna", "deephyper")


def framework_names(text: str) -> list[str]:
    """``--frameworks``: comma-separated names from FRAMEWORKS; argparse's error naming any other."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in FRAMEWORKS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown {', '.join(map(repr, unknown)) or 'empty list'}; choose from "
                                         f"{', '.join(FRAMEWORKS)}")
    return names


SPACE = AttnSpace(nodes=3, units=(16, 32), activations=("relu", "tanh"), max_skip=1)
DATA: list[Any] = []


def data() -> Any:
    if not DATA:
        DATA.append(flat_mnist(480, 120))
    return DATA[0]


def test_split() -> tuple[torch.Tensor, torch.Tensor]:
    """mnist-small's 1,000 test images, flat, with their labels: the split the outcome is scored on (the
    searches train and validate on training images only)."""
    if len(DATA) < 2:
        data()
        _, _, x, y = load_dataset("mnist-small", download_missing=False)
        DATA.append((torch.as_tensor(x).float().div_(255).flatten(1), torch.as_tensor(y).long()))
    return DATA[1]


@torch.no_grad()
def test_accuracy(model: nn.Module) -> float:
    """``model``'s accuracy in percent on the test split."""
    x, y = test_split()
    model.eval()
    return 100.0 * float((model(x).argmax(1) == y).float().mean())


def allocated(path: Path) -> int:
    """Bytes allocated on disk under ``path`` (a file or a folder), as ``du`` counts them."""
    if not path.exists():
        return 0
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_blocks * 512 for p in files)


def saved_bytes(model: nn.Module) -> int:
    """Size of ``model``'s state dict saved with ``torch.save``."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()


def cache_bytes(disk: Path, namespace: str, capacity: str) -> int:
    """Payload bytes the LMDB tier at ``disk`` (of ``capacity``) holds (its books)."""
    if not disk.exists():
        return 0
    with TensorCache(memory=0, disk=str(disk), disk_capacity=capacity, namespace=namespace) as cache:
        return cache.stats()["tiers"]["lmdb"]["used_bytes"]


# ------------------------------------------------------------------ ray tune
def mlp(width: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, width), nn.ReLU(), nn.Linear(width, 10))


def steps(model: nn.Module, lr: float, start: int, batches: int = 4) -> float:
    """``batches`` Adam steps on 32-image batches from batch ``start``; validation accuracy in percent."""
    torch.set_num_threads(1)
    x, y, xv, yv = data()
    rows = torch.arange(start * 32, (start + batches) * 32) % len(x)
    return fit(model, (x[rows], y[rows], xv, yv), epochs=1, batch_size=32, lr=lr)


def log_start(config: dict[str, Any], restored: bool, warm: bool, partial: bool) -> None:
    """One file per trial start in the config's ``log`` folder (Tune rewrites a restored trial's results)."""
    if restored:
        path = Path(config["log"]) / f"{uuid.uuid4().hex}.json"
        path.write_text(json.dumps({"warm": warm, "partial": partial}))


def tune_plain(config: dict[str, Any]) -> None:
    """Tune's own checkpointing: torch.save in the checkpoint, load_state_dict on a restore."""
    from ray import tune

    model = mlp(int(config["width"]), seed=hash(tune.get_context().get_trial_id()) % 2**31)
    start, warm, restored = 0, False, False
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        restored = True
        with checkpoint.as_directory() as folder:
            saved = torch.load(os.path.join(folder, "model.pt"))
        try:
            model.load_state_dict(saved["model"])
            warm = True
        except RuntimeError:   # the mutated width does not load: the trial trains its fresh model
            pass
        start = saved["step"]
    log_start(config, restored, warm, False)
    for step in range(start, 4):
        acc = steps(model, float(config["lr"]), step * 4)
        folder = tempfile.mkdtemp()
        torch.save({"model": model.state_dict(), "step": step + 1}, os.path.join(folder, "model.pt"))
        tune.report({"acc": acc, "test": test_accuracy(model)}, checkpoint=tune.Checkpoint.from_directory(folder))


def tune_cached(config: dict[str, Any], helper: Any) -> None:
    """The same trainable through TuneCache."""
    from ray import tune

    model = mlp(int(config["width"]), seed=hash(tune.get_context().get_trial_id()) % 2**31)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # partial starts warn; the bench counts them
        trial = helper.start(model, config)
    report = trial.transfer.report
    log_start(config, trial.resumed, report.layers > 0, bool(report.skipped) or report.donor != trial.transfer.parent)
    for step in range(int(trial.state.get("step", 0)), 4):
        acc = steps(model, float(config["lr"]), step * 4)
        tune.report({"acc": acc, "test": test_accuracy(model)},
                    checkpoint=trial.checkpoint(model, score=acc, step=step + 1))


def stop_on_error() -> Any:
    """A Tune stopper and callback in one: trials stop after 4 steps, and the whole run when a trial fails
    (a synchronous PBT would wait on the failed trial for ever)."""
    from ray import tune

    class StopOnError(tune.Stopper, tune.Callback):
        failed = False

        def __call__(self, trial_id: str, result: dict) -> bool:
            return result["training_iteration"] >= 4

        def stop_all(self) -> bool:
            return self.failed

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.failed = True

    return StopOnError()


def run_ray(seed: int, cached: bool, folder: Path, keep: int | None = None) -> dict[str, Any]:
    from ray import tune
    from ray.tune.schedulers import PopulationBasedTraining

    from tensorcache.integrations.ray_tune import TuneCache

    random.seed(seed)
    namespace = f"bench-ray-{seed}"
    trainable = tune_plain
    if cached:
        helper = TuneCache({"memory": "16MB", "disk": str(folder / "cache.lmdb"), "disk_capacity": "1MB",
                            "namespace": namespace})
        trainable = tune.with_parameters(tune_cached, helper=helper)
    pbt = PopulationBasedTraining(time_attr="training_iteration", perturbation_interval=1, quantile_fraction=0.25,
                                  hyperparam_mutations={"width": [16, 32], "lr": [1e-3, 3e-3]},
                                  resample_probability=0.5, synch=True, metric="acc", mode="max")
    (folder / "log").mkdir()
    stopper = stop_on_error()
    t0 = time.perf_counter()
    grid = tune.Tuner(trainable, param_space={"width": tune.grid_search([16, 32, 16, 32]), "lr": 3e-3,
                                              "log": str(folder / "log")},
                      tune_config=tune.TuneConfig(scheduler=pbt, reuse_actors=True),
                      run_config=tune.RunConfig(storage_path=str(folder / "tune"), name="pbt", verbose=0,
                                                stop=stopper, callbacks=[stopper],
                                                checkpoint_config=tune.CheckpointConfig(num_to_keep=keep),
                                                failure_config=tune.FailureConfig(fail_fast=False))).fit()
    seconds = time.perf_counter() - t0
    starts = [json.loads(p.read_text()) for p in (folder / "log").glob("*.json")]
    final = [result.metrics["acc"] for result in grid if result.metrics and "acc" in result.metrics] or [0.0]
    done = [r for r in grid if r.metrics and r.metrics.get("training_iteration") == 4]
    best = max(done, key=lambda r: r.metrics["acc"]) if done else None
    handed_back = {"pick_arch": f"width {best.config['width']}", "pick_val": best.metrics["acc"],
                   "pick_test": best.metrics["test"]} if best is not None else {}
    return {"starts_from_checkpoint": len(starts), "warm": sum(s["warm"] for s in starts),
            "partial": sum(s["warm"] and s["partial"] for s in starts), "errors": len(grid.errors),
            "finished": sum(bool(r.metrics) and r.metrics.get("training_iteration") == 4 for r in grid),
            "mean_acc": statistics.fmean(final), "best_acc": max(final),
            "tune_disk": allocated(folder / "tune"), "cache_disk": allocated(folder / "cache.lmdb"),
            "cache_payload": cache_bytes(folder / "cache.lmdb", namespace, "1MB"), "reference_disk": "",
            "search_s": seconds, **handed_back}


# ------------------------------------------------------------------ ray tune, evolution
def tune_nas(config: dict[str, Any], helper: Any = None) -> None:
    """An evolution searcher's trainable: build the config's architecture, warm-start it through ``helper``
    (when given) from its parent, train one epoch, put it."""
    from ray import tune

    arch = tuple(int(config[f"arch{i}"]) for i in range(SPACE.n_positions))
    torch.manual_seed(hash(arch) % 2**31)
    model = SPACE.build(arch, 10, (784,))
    trial = helper.start(model, config) if helper is not None else None
    torch.set_num_threads(1)
    acc = fit(model, data(), epochs=1, batch_size=32, lr=3e-3)
    if trial is not None:
        trial.put(model, score=acc)
    tune.report({"acc": acc, **(trial.metrics() if trial is not None else {})})


def run_ray_evolution(seed: int, cached: bool, folder: Path, trials: int) -> dict[str, Any]:
    from ray import tune

    from tensorcache.integrations.ray_tune import EvolutionSearcher, TuneCache

    namespace = f"bench-ray-re-{seed}"
    searcher = EvolutionSearcher(SPACE, population_size=4, sample_size=2, metric="acc", seed=seed)
    trainable: Any = tune_nas
    if cached:
        helper = TuneCache({"memory": "64MB", "disk": str(folder / "cache.lmdb"), "disk_capacity": "64MB",
                            "namespace": namespace}, arch=searcher.keys, layer_map=SPACE.layer_map)
        trainable = tune.with_parameters(tune_nas, helper=helper)
    t0 = time.perf_counter()
    grid = tune.Tuner(trainable, tune_config=tune.TuneConfig(search_alg=searcher, num_samples=trials,
                                                             max_concurrent_trials=1, reuse_actors=True),
                      run_config=tune.RunConfig(storage_path=str(folder / "tune"), name="re", verbose=0)).fit()
    seconds = time.perf_counter() - t0
    done = [r for r in grid if r.metrics and "acc" in r.metrics]
    values = [r.metrics["acc"] for r in done]
    belief = {r.config["tc_id"]: (tuple(int(r.config[k]) for k in searcher.keys), r.metrics["acc"]) for r in done}
    return {"starts_from_checkpoint": len(done), "warm": sum(r.metrics.get("tc_layers", 0) > 0 for r in done),
            "errors": len(grid.errors), "mean_acc": statistics.fmean(values), "best_acc": max(values),
            "tune_disk": allocated(folder / "tune"), "cache_disk": allocated(folder / "cache.lmdb"),
            "cache_payload": cache_bytes(folder / "cache.lmdb", namespace, "64MB"), "reference_disk": "",
            "search_s": seconds, "belief": belief}


# ------------------------------------------------------------------ optuna
def run_optuna(seed: int, cached: bool, folder: Path, trials: int) -> dict[str, Any]:
    import optuna

    from tensorcache.integrations.optuna import OptunaWarmStart

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    namespace = f"bench-optuna-{seed}"
    helper = OptunaWarmStart({"memory": "64MB", "disk": str(folder / "cache.lmdb"), "disk_capacity": "64MB",
                              "namespace": namespace}, layer_map=SPACE.layer_map)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed))
    warm = kept = 0
    values = []
    belief: Belief = {}
    t0 = time.perf_counter()
    for _ in range(trials):
        trial = study.ask()
        arch = helper.suggest_arch(trial, SPACE.choices)
        torch.manual_seed(hash(arch) % 2**31)
        model = SPACE.build(arch, 10, (784,))
        if cached:
            warm += helper.warm_start(trial, model).layers > 0
        torch.set_num_threads(1)
        value = fit(model, data(), epochs=1, batch_size=32, lr=3e-3)
        values.append(value)
        belief[f"{trial.number:04d}"] = (tuple(arch), value)
        if cached:
            helper.tell(study, trial, value)
        else:
            kept += saved_bytes(model)
            study.tell(trial, value)
    seconds = time.perf_counter() - t0
    return {"starts_from_checkpoint": trials, "warm": warm, "errors": 0, "mean_acc": statistics.fmean(values),
            "best_acc": max(values), "tune_disk": "", "cache_disk": allocated(folder / "cache.lmdb"),
            "cache_payload": cache_bytes(folder / "cache.lmdb", namespace, "64MB"), "reference_disk": kept or "",
            "search_s": seconds, "belief": belief}


# ------------------------------------------------------------------ deephyper
def _dh_model(job: Any) -> nn.Module:
    arch = tuple(int(job.parameters[f"x{i}"]) for i in range(SPACE.n_positions))
    torch.manual_seed(hash(arch) % 2**31)
    return SPACE.build(arch, 10, (784,))


KEPT: list[int] = []


async def dh_run(job: Any) -> float:
    """A user's run function: build, train one epoch, return the validation accuracy."""
    model = _dh_model(job)
    torch.set_num_threads(1)
    value = fit(model, data(), epochs=1, batch_size=32, lr=3e-3)
    KEPT.append(saved_bytes(model))
    return value


def run_deephyper(seed: int, cached: bool, folder: Path, trials: int) -> dict[str, Any]:
    from deephyper.evaluator import Evaluator
    from deephyper.hpo import HpProblem

    from tensorcache.integrations.deephyper import EvolutionFeed, LineageEvolution, warm_started

    problem = HpProblem()
    for i, n in enumerate(SPACE.choices):
        problem.add_hyperparameter((0, n - 1), f"x{i}")
    namespace = f"bench-dh-{seed}"
    run = dh_run
    if cached:
        run = warm_started(dh_run, {"memory": "64MB", "disk": str(folder / "cache.lmdb"), "disk_capacity": "64MB",
                                    "namespace": namespace}, SPACE.layer_map, arch="x", problem=problem)
    KEPT.clear()
    evaluator = Evaluator.create(run, method="serial", method_kwargs=EvolutionFeed().method_kwargs() if cached else {})
    search = LineageEvolution(problem, random_state=seed, log_dir=str(folder / "dh"), population_size=4,
                              sample_size=2)
    t0 = time.perf_counter()
    df = search.search(evaluator, max_evals=trials)
    seconds = time.perf_counter() - t0
    warm = int((df["m:tc_layers"] > 0).sum()) if cached else 0
    belief = {f"{int(r['job_id']):04d}": (tuple(int(r[f"p:x{i}"]) for i in range(SPACE.n_positions)),
                                          float(r["objective"])) for _, r in df.iterrows()}
    return {"starts_from_checkpoint": len(df), "warm": warm, "errors": 0, "mean_acc": float(df["objective"].mean()),
            "best_acc": float(df["objective"].max()), "tune_disk": "", "cache_disk": allocated(folder / "cache.lmdb"),
            "cache_payload": cache_bytes(folder / "cache.lmdb", namespace, "64MB"),
            "reference_disk": "" if cached else sum(KEPT), "search_s": seconds, "belief": belief}


# ------------------------------------------------------------------ the outcome
def outcome(belief: Belief, retrain: Retrainer, k: int) -> dict[str, Any]:
    """A search's final pick retrained from scratch (see the module doc), and beside it the architecture the
    search itself scored best, retrained."""
    arch, val, test = retrain.pick(top_k(belief, k))
    best = max(belief, key=lambda m: (belief[m][1], m))
    return {"pick_arch": "-".join(map(str, arch)), "pick_val": val, "pick_test": test,
            "search_best_score": belief[best][1], "search_best_retrained_test": retrain(belief[best][0])[1]}


def paired(rows: list[dict[str, Any]]) -> list[list[str]]:
    """Per framework with an outcome: both runs' pick test accuracy and ``with`` minus ``without``, paired by
    seed, each with a 95% bootstrap interval over seeds; beside it the same difference for the top-1 (the
    architecture the search scored best, retrained; not for PBT). Printed too, with the ratio line."""
    table = []
    for framework in dict.fromkeys(r["framework"] for r in rows if "pick_test" in r):
        rng = np.random.default_rng(0)   # a framework's intervals do not depend on which others ran
        by = {(r["seed"], r["run"]): r for r in rows if r["framework"] == framework}
        seeds = sorted({seed for seed, run in by if "pick_test" in by.get((seed, "with"), {})
                        and "pick_test" in by.get((seed, "without"), {})})
        if not seeds:
            continue

        def of(run: str, key: str = "pick_test") -> list[float]:
            return [by[s, run][key] for s in seeds]

        on, off = of("with"), of("without")
        diff = bootstrap_mean([a - b for a, b in zip(on, off)], rng)
        top1 = bootstrap_mean([a - b for a, b in zip(of("with", "search_best_retrained_test"),
                                                     of("without", "search_best_retrained_test"))], rng) \
            if "search_best_retrained_test" in by[seeds[0], "with"] else None
        wins = sum(a > b for a, b in zip(on, off))
        ties = sum(a == b for a, b in zip(on, off))
        table.append([framework, str(len(seeds)), fmt_ci(bootstrap_mean(off, rng)), fmt_ci(bootstrap_mean(on, rng)),
                      fmt_ci(diff, "{:+.2f}"), f"{wins} / {ties} / {len(seeds) - wins - ties}",
                      fmt_ci(top1, "{:+.2f}") if top1 else "-", f"{statistics.fmean(of('without', 'search_s')):.1f}",
                      f"{statistics.fmean(of('with', 'search_s')):.1f}"])
        print(f"outcome {framework}: " + "  ".join(table[-1][1:]), flush=True)
        print(f"ratio frameworks.{framework}.with_vs_without.pick_test {statistics.fmean(on) / statistics.fmean(off):.4f}")
    return table


OUTCOME_HEADER = ["framework", "seeds", "without: pick's test acc % (95% CI)", "with: pick's test acc %",
                  "with minus without (paired)", "seeds with ahead / tied / behind",
                  "top-1 only: with minus without", "without: search s", "with: search s"]


def main(argv: list[str] | None = None) -> None:
    protocol = outcome_parser()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=seeds, default="0,1,2")
    parser.add_argument("--trials", type=positive_int, default=8, help="Ray evolution, Optuna trials, DeepHyper evaluations")
    parser.add_argument("--frameworks", type=framework_names, default=",".join(FRAMEWORKS))
    parser.add_argument("--top-k", type=positive_int, default=protocol.get_default("top_k"),
                        help="architectures of each search retrained from scratch")
    for option in ("--retrain-epochs", "--retrain-seeds", "--train-subset"):
        parser.add_argument(option, type=int, default=protocol.get_default(option[2:].replace("-", "_")),
                            help="the final protocol, as bench/outcome.py's option of that name")
    parser.add_argument("--quick", action="store_true", help="CI size: 5 trials, top-2 retrained 1x1 epoch on 1,000")
    parser.add_argument("--out", default="runs/frameworks")
    args = parser.parse_args(dashed_values(argv))
    if args.quick:
        args.trials, args.top_k, args.retrain_epochs, args.retrain_seeds, args.train_subset = 5, 2, 1, 1, 1000
    frameworks = args.frameworks
    retrain = Retrainer(argparse.Namespace(**vars(args), device="cpu", threads=1), space=SPACE)
    data()   # read once before any run is timed
    if any(f.startswith("ray") for f in frameworks):
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
                     [os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."),
                      os.environ.get("PYTHONPATH", "")])}})
    rows = []
    for seed in args.seeds:
        for framework in frameworks:
            arms = ["without", "with"] + (["without, num_to_keep=1"] if framework == "ray" else [])
            for arm in (arms if seed % 2 == 0 else arms[::-1]):
                cached = arm == "with"
                with tempfile.TemporaryDirectory(prefix="tc-frameworks-") as tmp:
                    folder = Path(tmp)
                    if framework == "ray":
                        row = run_ray(seed, cached, folder, keep=1 if "keep" in arm else None)
                    elif framework == "ray-evolution":
                        row = run_ray_evolution(seed, cached, folder, args.trials)
                    elif framework == "optuna":
                        row = run_optuna(seed, cached, folder, args.trials)
                    else:
                        row = run_deephyper(seed, cached, folder, args.trials)
                belief = row.pop("belief", None)
                row = {"framework": framework, "seed": seed, "run": arm, **row,
                       **(outcome(belief, retrain, args.top_k) if belief else {})}
                row["warm_share"] = round(row["warm"] / row["starts_from_checkpoint"], 3) \
                    if row["starts_from_checkpoint"] else ""
                rows.append(row)
                print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                      flush=True)
    table = paired(rows)
    write_results(args.out, "frameworks", rows, {"settings": vars(args), "machine": machine(), "outcome": table,
                                                "retrained_archs": len(retrain.done), "retrain_s": retrain.seconds})
    write_markdown_table(os.path.join(args.out, "frameworks_outcome.md"), OUTCOME_HEADER, table)


if __name__ == "__main__":
    sys.exit(exit_status(main))
