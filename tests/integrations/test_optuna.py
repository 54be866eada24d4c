"""A real Optuna study over the attn space with tiny training: warm starts from the nearest completed trial."""
from __future__ import annotations

import pytest
from optional_dep import need

optuna = need("optuna")

import tiny_job as tiny  # noqa: E402

from tensorcache import TensorCache  # noqa: E402
from tensorcache.integrations.optuna import OptunaWarmStart, nearest_trial, ranked_trials  # noqa: E402


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


def test_pruned_trials_are_not_put_when_told_not_to(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cache = TensorCache(memory="16MB", namespace="optuna-pruned")
    helper = OptunaWarmStart(cache, layer_map=tiny.SPACE.layer_map, keep_pruned=False)

    def objective(trial):
        arch = helper.suggest_arch(trial, tiny.SPACE.choices)
        helper.warm_start(trial, tiny.build(arch, 0))
        raise optuna.TrialPruned()

    study = optuna.create_study()
    study.optimize(objective, n_trials=3, callbacks=[helper])
    assert cache.stats()["models"] == 0 and cache.stats()["lookups"] == 3 and helper.pending == 0
    with pytest.raises(ValueError, match="suggest_arch"):
        helper.warm_start(study.ask(), tiny.build((0,) * tiny.SPACE.n_positions, 0))
    with pytest.raises(ValueError, match="max_pending"):
        OptunaWarmStart(cache, max_pending=0)


def _sqlite(tmp_path, name: str, **kwargs):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}", study_name=name, **kwargs)


def test_ask_and_tell_on_an_rdb_study_puts_every_model_and_leaves_nothing_pending(tmp_path):
    cache = TensorCache(memory="64MB", namespace="optuna-ask-tell")
    helper = OptunaWarmStart(cache, layer_map=tiny.SPACE.layer_map)
    study = _sqlite(tmp_path, "ask-tell", direction="maximize", sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(8):
        trial = study.ask()
        model = tiny.build(helper.suggest_arch(trial, tiny.SPACE.choices), trial.number)
        helper.warm_start(trial, model)
        helper.tell(study, trial, tiny.train_steps(model, 3e-3, 0))
    assert cache.stats()["models"] == 8 and helper.pending == 0
    trials = study.get_trials()
    assert sum(t.user_attrs["tc_layers"] > 0 for t in trials) >= 3
    earlier = {t.user_attrs["tc_model"]: t.number for t in trials}
    assert all(earlier[t.user_attrs["tc_parent"]] < t.number for t in trials[1:])


def test_a_forgotten_callback_warns_once_and_puts_at_the_next_warm_start(tmp_path):
    cache = TensorCache(memory="64MB", namespace="optuna-forgot")
    helper = OptunaWarmStart(cache, layer_map=tiny.SPACE.layer_map)

    def objective(trial):
        model = tiny.build(helper.suggest_arch(trial, tiny.SPACE.choices), trial.number)
        helper.warm_start(trial, model)
        return tiny.train_steps(model, 3e-3, 0)

    study = _sqlite(tmp_path, "forgot", direction="maximize", sampler=optuna.samplers.RandomSampler(seed=3))
    with pytest.warns(UserWarning, match="without helper.tell or callbacks") as caught:
        study.optimize(objective, n_trials=6)
    assert sum("callbacks" in str(w.message) for w in caught) == 1
    assert cache.stats()["models"] == 5 and helper.pending == 1   # the last waits for the next warm start
    trials = study.get_trials()
    put_before = set()
    for t in trials:   # a parent is only ever a model the cache held
        assert t.user_attrs["tc_parent"] in put_before | {""}
        put_before.add(t.user_attrs["tc_model"])
    assert trials[1].user_attrs["tc_parent"] == trials[0].user_attrs["tc_model"]


def test_models_of_unfinished_trials_are_bounded():
    helper = OptunaWarmStart(TensorCache(memory="16MB", namespace="optuna-bound"), layer_map=tiny.SPACE.layer_map,
                             max_pending=2)
    study = optuna.create_study()
    with pytest.warns(UserWarning, match="max_pending=2"):
        for _ in range(4):
            trial = study.ask()
            helper.warm_start(trial, tiny.build(helper.suggest_arch(trial, tiny.SPACE.choices), 0))
    assert helper.pending == 2


def test_multi_objective_donors_rank_by_pareto_rank_or_a_chosen_objective(tmp_path):
    cache = TensorCache(memory="16MB", namespace="optuna-mo")
    helper = OptunaWarmStart(cache, layer_map=tiny.SPACE.layer_map)
    study = _sqlite(tmp_path, "mo", directions=["maximize", "minimize"])
    arch = (0,) * tiny.SPACE.n_positions
    for values in ((60.0, 1.0), (70.0, 5.0), (50.0, 9.0)):   # (60, 1) dominates (50, 9), put last; (70, 5) is not
        trial = study.ask()                                     # dominated: the cache's score is the rank at the put
        helper.warm_start(trial, tiny.build(arch, trial.number), arch)
        helper.tell(study, trial, list(values))
    models = [t.user_attrs["tc_model"] for t in study.get_trials()]
    assert cache.best_donor(arch, layer_map=tiny.SPACE.layer_map(arch)) in models[:2]   # rank 0, not the dominated
    assert [t.user_attrs["tc_model"] for t in ranked_trials(study, arch)][-1] == models[2]
    assert ranked_trials(study, arch, objective=0)[0].user_attrs["tc_model"] == models[1]
    assert ranked_trials(study, arch, objective=1)[0].user_attrs["tc_model"] == models[0]
    by_loss = OptunaWarmStart(cache, layer_map=tiny.SPACE.layer_map, objective=1)
    trial = study.ask()
    by_loss.warm_start(trial, tiny.build(arch, 9), arch)
    assert trial.user_attrs["tc_parent"] == trial.user_attrs["tc_donor"] == models[0]


def test_a_pruned_trial_is_kept_and_a_promoted_trial_resumes_from_it(tmp_path):
    cache = TensorCache(memory="64MB", namespace="optuna-asha")
    helper = OptunaWarmStart(cache, layer_map=tiny.SPACE.layer_map)
    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2)
    study = _sqlite(tmp_path, "asha", direction="maximize", pruner=pruner,
                    sampler=optuna.samplers.RandomSampler(seed=5))

    def objective(trial):
        model = tiny.build(helper.suggest_arch(trial, tiny.SPACE.choices), trial.number)
        helper.warm_start(trial, model)
        trial.set_user_attr("init", tiny.digests(model))
        for step in range(trial.user_attrs.get("tc_resume_step", 0), 4):
            acc = tiny.train_steps(model, 3e-3, 2 * step, batches=2)
            trial.report(acc, step)
            trial.set_user_attr("final", tiny.digests(model))
            if trial.should_prune():
                raise optuna.TrialPruned()
        return acc

    study.optimize(objective, n_trials=6, callbacks=[helper])
    pruned = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned and cache.stats()["models"] == 6
    promoted = pruned[0]
    study.enqueue_trial(promoted.params)   # a promotion: the same configuration again
    study.optimize(objective, n_trials=1, callbacks=[helper])
    last = study.get_trials()[-1]
    assert last.params == promoted.params and last.user_attrs["tc_donor"] == promoted.user_attrs["tc_model"]
    assert last.user_attrs["tc_resume_step"] == max(promoted.intermediate_values) + 1
    assert last.user_attrs["init"] == promoted.user_attrs["final"]
    assert min(last.intermediate_values) == last.user_attrs["tc_resume_step"]
