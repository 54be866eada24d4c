"""A cache error never fails a user's job: real DeepHyper searches and an Optuna study over wrapped models and
a layer map that does not fit complete every evaluation, with a warning and the error in the job's metadata."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from optional_dep import need

need("deephyper")
optuna = need("optuna")

import dh_app  # noqa: E402
import tiny_job as tiny  # noqa: E402
from deephyper.evaluator import Evaluator  # noqa: E402
from torch import nn  # noqa: E402

from tensorcache import LayerMap, LayerSpec  # noqa: E402
from tensorcache.integrations import worker  # noqa: E402
from tensorcache.integrations.deephyper import EvolutionFeed, WarmStartRun  # noqa: E402
from tensorcache.integrations.optuna import OptunaWarmStart  # noqa: E402

EVALS = 8


def build_wrapped(job) -> nn.Module:
    """The job's model as nn.DataParallel wraps it (its state dict names start with ``module.``)."""
    return nn.DataParallel(dh_app.build(job))


def ghost_map(arch: tuple[int, ...]) -> LayerMap:
    """The space's layer map plus a layer naming a tensor no model has: every put of it fails."""
    lmap = tiny.SPACE.layer_map(arch)
    return LayerMap((*lmap.layers, LayerSpec("ghost", ("ghost.weight",), ())), lmap.mode)


def _search(tmp_path: Path, run: WarmStartRun) -> pd.DataFrame:
    evaluator = Evaluator.create(run.for_evaluator("serial"), method="serial",
                                 method_kwargs=EvolutionFeed().method_kwargs())
    dh_app.search(str(tmp_path)).search(evaluator, max_evals=EVALS)
    df = pd.read_csv(tmp_path / "results.csv", dtype={"m:tc_error": str}).fillna({"m:tc_error": ""})
    assert len(df) >= EVALS and (df["job_status"] == "DONE").all()
    return df


def _cache(tmp_path: Path, namespace: str) -> dict:
    return {"memory": "64MB", "disk": str(tmp_path / "cache.lmdb"), "namespace": namespace}


def test_a_deephyper_search_over_wrapped_models_warm_starts_like_the_plain_one(tmp_path):
    run = WarmStartRun(build_wrapped, dh_app.train, dh_app.ARCH, cache=_cache(tmp_path, "dh-wrapped"),
                       layer_map=tiny.SPACE.layer_map)
    df = _search(tmp_path, run)
    assert (df["m:tc_error"] == "").all() and (df["m:tc_layers"] > 0).sum() >= 2
    stats = worker.worker_cache(run.cache).cache.stats()
    assert stats["puts"] == stats["models"] == len(df)


def test_a_deephyper_search_whose_puts_fail_completes_every_evaluation(tmp_path):
    run = WarmStartRun(build_wrapped, dh_app.train, dh_app.ARCH, cache=_cache(tmp_path, "dh-ghost"),
                       layer_map=ghost_map)
    with pytest.warns(RuntimeWarning, match="put of model .* failed: ValueError: .*ghost.weight.*goes on"):
        df = _search(tmp_path, run)
    assert df["m:tc_error"].str.contains("lacks entries named by the layer map").all()
    assert (df["m:tc_layers"] == 0).all()
    assert worker.worker_cache(run.cache).errors == len(df)


def test_an_optuna_study_completes_every_trial_when_the_cache_fails(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    helper = OptunaWarmStart(_cache(tmp_path, "optuna-ghost"), layer_map=ghost_map)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=3))
    with pytest.warns(RuntimeWarning, match="put of model"):
        study.optimize(tiny.warm_objective(helper), n_trials=3, callbacks=[helper])
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3
    assert helper.worker.errors == 3 and helper.worker.cache.stats()["models"] == 0
