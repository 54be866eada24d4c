"""Ray Tune, Optuna and DeepHyper with and without tensorcache: warm-started share and disk used, per seed.

    python bench/frameworks.py [--seeds 0,1,2] [--trials 8] [--frameworks ray,optuna,deephyper] [--out DIR]

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
* optuna: ``--trials`` trials of a random-sampler study over the attn space (3 nodes), one epoch each,
  ask-and-tell; ``with`` warm-starts each trial from the nearest held trial (``OptunaWarmStart``).
* deephyper: regularized evolution (population 4, sample 2), ``--trials`` evaluations, serial evaluator;
  ``with`` wraps the same run function with ``warm_started`` under ``LineageEvolution``.

Disk: bytes allocated under the run's Tune storage and the cache's LMDB file (``du``), and the cache's
payload bytes (its books). For Optuna and DeepHyper ``without`` keeps no model at all; its disk column
is what keeping every model as a ``torch.save`` file takes. Accuracy columns are validation accuracies
of the runs' own models (warm-started scores carry inherited training): a diagnostic, not the outcome
of a search (that needs the final pick retrained from scratch, which this bench does not do).
Writes DIR/frameworks.csv and .json.
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
import uuid
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench.common import machine, write_results  # noqa: E402
from nas_integration.fit import fit, flat_mnist  # noqa: E402
from nas_integration.spaces import AttnSpace  # noqa: E402
from tensorcache import TensorCache  # noqa: E402

SPACE = AttnSpace(nodes=3, units=(16, 32), activations=("relu", "tanh"), max_skip=1)
DATA: list[Any] = []


def data() -> Any:
    if not DATA:
        DATA.append(flat_mnist(480, 120))
    return DATA[0]


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
        tune.report({"acc": acc}, checkpoint=tune.Checkpoint.from_directory(folder))


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
        tune.report({"acc": acc}, checkpoint=trial.checkpoint(model, score=acc, step=step + 1))


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
    grid = tune.Tuner(trainable, param_space={"width": tune.grid_search([16, 32, 16, 32]), "lr": 3e-3,
                                              "log": str(folder / "log")},
                      tune_config=tune.TuneConfig(scheduler=pbt, reuse_actors=True),
                      run_config=tune.RunConfig(storage_path=str(folder / "tune"), name="pbt", verbose=0,
                                                stop=stopper, callbacks=[stopper],
                                                checkpoint_config=tune.CheckpointConfig(num_to_keep=keep),
                                                failure_config=tune.FailureConfig(fail_fast=False))).fit()
    starts = [json.loads(p.read_text()) for p in (folder / "log").glob("*.json")]
    final = [result.metrics["acc"] for result in grid if result.metrics and "acc" in result.metrics] or [0.0]
    return {"starts_from_checkpoint": len(starts), "warm": sum(s["warm"] for s in starts),
            "partial": sum(s["warm"] and s["partial"] for s in starts), "errors": len(grid.errors),
            "finished": sum(bool(r.metrics) and r.metrics.get("training_iteration") == 4 for r in grid),
            "mean_acc": statistics.fmean(final), "best_acc": max(final),
            "tune_disk": allocated(folder / "tune"), "cache_disk": allocated(folder / "cache.lmdb"),
            "cache_payload": cache_bytes(folder / "cache.lmdb", namespace, "1MB"), "reference_disk": ""}


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
        if cached:
            helper.tell(study, trial, value)
        else:
            kept += saved_bytes(model)
            study.tell(trial, value)
    return {"starts_from_checkpoint": trials, "warm": warm, "errors": 0, "mean_acc": statistics.fmean(values),
            "best_acc": max(values), "tune_disk": "", "cache_disk": allocated(folder / "cache.lmdb"),
            "cache_payload": cache_bytes(folder / "cache.lmdb", namespace, "64MB"), "reference_disk": kept or ""}


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
    df = search.search(evaluator, max_evals=trials)
    warm = int((df["m:tc_layers"] > 0).sum()) if cached else 0
    return {"starts_from_checkpoint": len(df), "warm": warm, "errors": 0, "mean_acc": float(df["objective"].mean()),
            "best_acc": float(df["objective"].max()), "tune_disk": "", "cache_disk": allocated(folder / "cache.lmdb"),
            "cache_payload": cache_bytes(folder / "cache.lmdb", namespace, "64MB"),
            "reference_disk": "" if cached else sum(KEPT)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--trials", type=int, default=8, help="Optuna trials and DeepHyper evaluations")
    parser.add_argument("--frameworks", default="ray,optuna,deephyper")
    parser.add_argument("--out", default="runs/frameworks")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    frameworks = args.frameworks.split(",")
    if "ray" in frameworks:
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
                     [os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."),
                      os.environ.get("PYTHONPATH", "")])}})
    rows = []
    for seed in seeds:
        for framework in frameworks:
            arms = ["without", "with"] + (["without, num_to_keep=1"] if framework == "ray" else [])
            for arm in (arms if seed % 2 == 0 else arms[::-1]):
                cached = arm == "with"
                with tempfile.TemporaryDirectory(prefix="tc-frameworks-") as tmp:
                    folder = Path(tmp)
                    if framework == "ray":
                        row = run_ray(seed, cached, folder, keep=1 if "keep" in arm else None)
                    elif framework == "optuna":
                        row = run_optuna(seed, cached, folder, args.trials)
                    else:
                        row = run_deephyper(seed, cached, folder, args.trials)
                row = {"framework": framework, "seed": seed, "run": arm, **row}
                row["warm_share"] = round(row["warm"] / row["starts_from_checkpoint"], 3) \
                    if row["starts_from_checkpoint"] else ""
                rows.append(row)
                print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                      flush=True)
    write_results(args.out, "frameworks", rows, {"settings": vars(args), "machine": machine()})


if __name__ == "__main__":
    main()
