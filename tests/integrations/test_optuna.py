"""A real Optuna study over the attn space with tiny training: warm starts from the nearest completed trial."""
from __future__ import annotations

import pytest
from optional_dep import need

optuna = need("optuna")

import tiny_job as tiny  # noqa: E402

from tensorcache import TensorCache  # noqa: E402
from tensorcache.integrations.optuna import OptunaWarmStart, nearest_trial  # noqa: E402


def _study(tmp_path, n_trials: int, direction: str = "maximize"):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    helper = OptunaWarmStart({"memory": "64MB", "disk": str(tmp_path / "c.lmdb"), "namespace": "optuna-test"},
                             layer_map=tiny.SPACE.layer_map)
    sign = 1.0 if direction == "maximize" else -1.0

    def objective(trial):
        arch = helper.suggest_arch(trial, tiny.SPACE.choices)
        model = tiny.build(arch, trial.number)
        helper.warm_start(trial, model)
        trial.set_user_attr("init", tiny.digests(model))
        acc = tiny.fit(model)
        trial.set_user_attr("final", tiny.digests(model))
        return sign * acc

    study = optuna.create_study(direction=direction, sampler=optuna.samplers.RandomSampler(seed=3))
    study.optimize(objective, n_trials=n_trials, callbacks=[helper])
    return study, helper


def test_trials_warm_start_from_the_nearest_completed_trial(tmp_path):
    study, helper = _study(tmp_path, 10)
    trials = study.get_trials(deepcopy=False)
    models = {t.user_attrs["tc_model"]: t for t in trials}
    arch = {m: tuple(t.user_attrs["tc_arch"]) for m, t in models.items()}
    assert trials[0].user_attrs["tc_parent"] == "" and trials[0].user_attrs["tc_layers"] == 0
    warmed = 0
    for i, t in enumerate(trials[1:], start=1):
        a = tuple(t.user_attrs["tc_arch"])
        earlier = trials[:i]
        closest = min(sum(x != y for x, y in zip(a, arch[e.user_attrs["tc_model"]])) for e in earlier)
        parent = t.user_attrs["tc_parent"]
        assert parent in models and models[parent].number < t.number
        assert sum(x != y for x, y in zip(a, arch[parent])) == closest
        donor, layers = t.user_attrs["tc_donor"], t.user_attrs["tc_layers"]
        assert layers == (tiny.shared_layers(arch[donor], a) if donor else 0)
        if layers:
            warmed += 1
            init = tiny.parse_digests(t.user_attrs["init"])
            final = tiny.parse_digests(models[donor].user_attrs["final"])
            assert all(init[p] == final[p] for p in tiny.moved_params(a, layers))
            assert t.user_attrs["tc_bytes"] > 0 and t.user_attrs["tc_tier"] in ("memory", "lmdb")
    assert warmed >= 3
    assert helper.worker.cache.stats()["models"] == len(trials)


def test_nearest_trial_breaks_ties_by_the_better_value_in_either_direction(tmp_path):
    for direction in ("maximize", "minimize"):
        study = optuna.create_study(direction=direction)
        for arch, value, model in (((0, 1, 2), 5.0, "a"), ((0, 1, 3), 9.0, "b"), ((4, 4, 4), 1.0, "c")):
            trial = optuna.trial.create_trial(value=value, params={}, distributions={},
                                              user_attrs={"tc_arch": list(arch), "tc_model": model})
            study.add_trial(trial)
        best = "b" if direction == "maximize" else "a"
        assert nearest_trial(study, (0, 1, 0)) == best
        assert nearest_trial(study, (4, 4, 0)) == "c"
        assert nearest_trial(study, (9, 9)) is None


def test_pruned_trials_are_not_put(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cache = TensorCache(memory="16MB", namespace="optuna-pruned")
    helper = OptunaWarmStart(cache, layer_map=tiny.SPACE.layer_map)

    def objective(trial):
        arch = helper.suggest_arch(trial, tiny.SPACE.choices)
        helper.warm_start(trial, tiny.build(arch, 0))
        raise optuna.TrialPruned()

    study = optuna.create_study()
    study.optimize(objective, n_trials=3, callbacks=[helper])
    assert cache.stats()["models"] == 0 and cache.stats()["lookups"] == 3
    with pytest.raises(ValueError, match="suggest_arch"):
        helper.warm_start(study.ask(), tiny.build((0,) * tiny.SPACE.n_positions, 0))
