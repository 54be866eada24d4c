"""A cache that cannot be opened, in each integration: a bad value that can be known where the search is set up
(a malformed Redis URL, a bad config URL, a required Redis that is down) is a clear error there, naming it; a
store that only a worker can try (an LMDB path a worker cannot open) leaves that worker without the cache:
every warm start a miss, every put skipped, one warning per process, and the search completes."""
from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd
import pytest
from optional_dep import need

need("deephyper")
optuna = need("optuna")

import dh_app  # noqa: E402
import tiny_job as tiny  # noqa: E402
from deephyper.evaluator import Evaluator  # noqa: E402

from tensorcache.integrations import worker  # noqa: E402
from tensorcache.integrations.deephyper import EvolutionFeed, WarmStartRun, warm_started  # noqa: E402
from tensorcache.integrations.optuna import OptunaWarmStart  # noqa: E402

EVALS = 6


def _deephyper(cache):
    return WarmStartRun(dh_app.build, dh_app.train, dh_app.ARCH, cache=cache, layer_map=tiny.SPACE.layer_map)


def _deephyper_own_run(cache):
    return warm_started(dh_app.run, cache, tiny.SPACE.layer_map, arch="a", problem=dh_app.problem())


def _ray_tune(cache):
    need("ray.tune", in_ci=False)
    from tensorcache.integrations.ray_tune import TuneCache

    return TuneCache(cache)


SET_UP = {"WarmStartRun": _deephyper, "warm_started": _deephyper_own_run,
          "OptunaWarmStart": lambda cache: OptunaWarmStart(cache, layer_map=tiny.SPACE.layer_map),
          "TuneCache": _ray_tune}


@pytest.mark.parametrize("integration", sorted(SET_UP))
@pytest.mark.parametrize("cache, error, named", [
    ({"memory": "8MB", "redis": "redis://127.0.0.1:notaport/0"}, ValueError, "redis://127.0.0.1:notaport/0"),
    ({"memory": "8MB", "redis": "http://127.0.0.1:6379"}, ValueError, "http://127.0.0.1:6379"),
    ("tensorcache://?memory=lots", ValueError, "lots"),
    ("tensorcache://?memory=8MB&colour=red", ValueError, "colour"),
    ({"memory": "8MB", "redis": "redis://127.0.0.1:1/0", "redis_required": True}, ConnectionError,
     "redis://127.0.0.1:1/0"),
], ids=["redis-port", "redis-scheme", "url-size", "url-setting", "required-redis-down"])
def test_a_bad_value_known_at_set_up_is_a_clear_error_there(integration, cache, error, named):
    with pytest.raises(error, match=named.replace("?", r"\?")):
        SET_UP[integration](cache)


def _settings(made) -> dict:
    """The cache settings an integration object keeps (``warm_started`` gives a partial over its wrapper)."""
    if isinstance(made, OptunaWarmStart):
        return made._cache
    return made.args[0].cache if hasattr(made, "args") else made.cache


@pytest.mark.parametrize("integration", sorted(SET_UP))
def test_a_cache_given_as_a_url_or_a_config_is_taken_as_its_settings(integration, tmp_path):
    from tensorcache.config import CacheConfig

    url = f"tensorcache://?memory=8MB&disk={tmp_path / 'c.lmdb'}&namespace=by-url"
    for given in (url, CacheConfig.from_url(url)):
        assert CacheConfig.from_settings(_settings(SET_UP[integration](given))) == CacheConfig.from_url(url)


def _unopenable(tmp_path: Path) -> dict:
    """Settings whose only tier is an LMDB path no process can open: it lies below a regular file."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    return {"memory": 0, "disk": str(blocker / "cache.lmdb"), "namespace": f"unopenable-{tmp_path.name}"}


def _opening_warnings(caught: list[warnings.WarningMessage], path: str) -> list[str]:
    return [str(w.message) for w in caught if "cannot be opened" in str(w.message) and path in str(w.message)]


def test_a_deephyper_search_whose_workers_cannot_open_the_cache_completes_without_it(tmp_path):
    cache = _unopenable(tmp_path)
    run = _deephyper(cache)   # set-up cannot know a worker's disk: no error here
    evaluator = Evaluator.create(run.for_evaluator("serial"), method="serial",
                                 method_kwargs=EvolutionFeed().method_kwargs())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dh_app.search(str(tmp_path)).search(evaluator, max_evals=EVALS)
    df = pd.read_csv(tmp_path / "results.csv", dtype={"m:tc_error": str})
    assert len(df) >= EVALS and (df["job_status"] == "DONE").all()
    assert (df["m:tc_layers"] == 0).all() and df["m:tc_error"].str.contains(cache["disk"], regex=False).all()
    assert len(_opening_warnings(caught, cache["disk"])) == 1, "one warning per process, not one per job"
    opened = worker.worker_cache(run.cache)
    assert opened.cache is None and opened.errors == 2 * len(df)   # each warm start and each put, skipped


def test_an_optuna_study_whose_cache_cannot_be_opened_completes_every_trial(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cache = _unopenable(tmp_path)
    helper = OptunaWarmStart(cache, layer_map=tiny.SPACE.layer_map)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=5))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        study.optimize(tiny.warm_objective(helper), n_trials=4, callbacks=[helper])
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 4
    assert all(cache["disk"] in t.user_attrs["tc_error"] and t.user_attrs["tc_layers"] == 0 for t in study.trials)
    assert len(_opening_warnings(caught, cache["disk"])) == 1
    assert helper.worker.cache is None and helper.worker.errors == 8


def test_a_tune_trial_whose_cache_cannot_be_opened_trains_and_checkpoints_without_it(tmp_path):
    cache = _unopenable(tmp_path)
    helper = _ray_tune(cache)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for n in range(3):
            model = tiny.build((0,) * tiny.SPACE.n_positions, n)
            trial = helper.start(model, {"tc_parent": "some-earlier-model"})
            checkpoint = trial.checkpoint(model, score=tiny.fit(model), epoch=1)
            assert trial.metrics()["tc_layers"] == 0 and cache["disk"] in trial.metrics()["tc_error"]
            assert Path(checkpoint.path, "tensorcache.json").exists()
    assert len(_opening_warnings(caught, cache["disk"])) == 1
