"""Ray Tune on a real local Ray: PBT exploits through the cache (a mutated width included), bounded storage,
and an evolution searcher's lineage. One Ray instance serves the module."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from optional_dep import need

ray = need("ray", in_ci=False)   # .ci/run installs it where the platform has wheels
need("ray.tune", in_ci=False)

import tiny_job as tiny  # noqa: E402
import tune_app  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune.schedulers import PopulationBasedTraining  # noqa: E402

from tensorcache import TensorCache  # noqa: E402
from tensorcache.integrations.ray_tune import EvolutionSearcher, TuneCache, module_layers  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def local_ray():
    from ray import cloudpickle

    for module in (tune_app, tiny):   # Ray workers do not import the tests' helper modules
        cloudpickle.register_pickle_by_value(module)
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": env}, log_to_driver=False)
    yield
    ray.shutdown()
    for module in (tune_app, tiny):
        cloudpickle.unregister_pickle_by_value(module)


def _cache(tmp_path: Path, namespace: str, capacity: str = "64MB") -> dict:
    return {"memory": "16MB", "disk": str(tmp_path / "cache.lmdb"), "disk_capacity": capacity,
            "namespace": namespace}


def flip_width(config: dict) -> dict:
    """PBT's explore step also switches the hidden width, so every exploit changes shapes."""
    return {**config, "width": 48 - config["width"]}


@pytest.fixture(scope="module")
def pbt_run(tmp_path_factory, local_ray):
    """PBT over 2 trials, 3 steps, exploiting every step with the width switched (16 <-> 32), over a disk
    tier that holds about 4 of the run's models."""
    tmp = tmp_path_factory.mktemp("pbt")
    (tmp / "log").mkdir()
    helper = TuneCache(_cache(tmp, "tune-pbt", capacity="512KB"))
    pbt = PopulationBasedTraining(time_attr="training_iteration", perturbation_interval=1, quantile_fraction=0.5,
                                  hyperparam_mutations={"lr": [1e-3, 3e-3]}, custom_explore_fn=flip_width,
                                  synch=True, metric="acc", mode="max")
    tuner = tune.Tuner(tune.with_parameters(tune_app.mlp_trainable, helper=helper),
                       param_space={"width": tune.grid_search([16, 32]), "lr": 3e-3, "log": str(tmp / "log")},
                       tune_config=tune.TuneConfig(scheduler=pbt, reuse_actors=True),
                       run_config=tune.RunConfig(storage_path=str(tmp / "tune"), name="pbt", verbose=0,
                                                 stop={"training_iteration": tune_app.STEPS}))
    grid = tuner.fit()
    return grid, tune_app.reports(tmp / "log"), helper, tmp


@pytest.mark.slow
def test_pbt_exploits_resume_through_the_cache_and_a_changed_width_keeps_what_fits(pbt_run):
    grid, rows, helper, _ = pbt_run
    assert not grid.errors and len(grid) == 2
    final = {row["tc_last"]: row for row in rows}   # the model each report put, by id
    resumed = [row for row in rows if row["tc_resumed"] and row["init"] != "-"]
    assert resumed, "PBT exploited nothing"
    exact = partial = 0
    for row in resumed:
        parent = final.get(row["tc_parent"])
        assert parent is not None and row["tc_parent"] != row["tc_model"]
        if row["tc_donor"] != row["tc_parent"]:   # the parent's weights were evicted: another model gave
            continue
        init, given = tiny.parse_digests(row["init"]), tiny.parse_digests(parent["final"])
        copied = [name for name in init if init[name] == given[name]]
        if row["width"] == parent["width"]:   # a plain resume or a clone: the parent's model, whole
            exact += 1
            assert row["tc_layers"] == 3 and copied == list(init)
        else:   # the width switched: 784 -> 32 fits, the layers around the hidden width do not
            partial += 1
            assert row["tc_layers"] == 1 and copied == ["0.weight", "0.bias"]
    assert exact and partial


@pytest.mark.slow
def test_pbt_storage_stays_under_the_capacity(pbt_run):
    grid, rows, helper, tmp = pbt_run
    puts = len({row["tc_last"] for row in rows})
    assert puts == len(rows) >= 2 * tune_app.STEPS
    with TensorCache(memory=0, disk=str(tmp / "cache.lmdb"), disk_capacity="512KB", namespace="tune-pbt") as cache:
        tier = cache.stats()["tiers"]["lmdb"]
        assert 0 < tier["used_bytes"] <= tier["capacity"] == 512_000
        assert cache.stats()["models"] < puts and not cache.check_invariants()   # older models were evicted
    pointers = [p for p in (tmp / "tune").rglob("checkpoint_*/*") if p.is_file()]
    assert pointers and all(p.name == "tensorcache.json" and p.stat().st_size < 1024 for p in pointers)


@pytest.mark.slow
def test_evolution_searcher_records_the_lineage_and_children_start_from_their_parent(tmp_path, local_ray):
    searcher = EvolutionSearcher(tiny.SPACE, population_size=2, sample_size=2, metric="acc", seed=1)
    helper = TuneCache(_cache(tmp_path, "tune-re"), arch=searcher.keys, layer_map=tiny.SPACE.layer_map)
    tuner = tune.Tuner(tune.with_parameters(tune_app.nas_trainable, helper=helper),
                       tune_config=tune.TuneConfig(search_alg=searcher, num_samples=5,
                                                   max_concurrent_trials=2, reuse_actors=True),
                       run_config=tune.RunConfig(storage_path=str(tmp_path / "tune"), name="re", verbose=0))
    grid = tuner.fit()
    assert not grid.errors
    rows = {r.metrics["tc_model"]: r.metrics | {"config": r.config} for r in grid}
    arch = {m: helper.arch(r["config"]) for m, r in rows.items()}
    children = [r for r in rows.values() if r["config"]["tc_parent"]]
    assert children and all(r["tc_model"] == r["config"]["tc_id"] == r["tc_last"] for r in rows.values())
    for child in children:
        me, parent = child["tc_model"], child["config"]["tc_parent"]
        assert parent in rows and child["tc_parent"] == parent
        mutated = child["config"]["tc_mutated"]
        assert [k for k in searcher.keys if child["config"][k] != rows[parent]["config"][k]] in ([mutated], [])
        layers = tiny.shared_layers(arch[parent], arch[me])
        if child["tc_donor"] == parent:
            assert child["tc_layers"] == layers
            init, given = tiny.parse_digests(child["init"]), tiny.parse_digests(rows[parent]["final"])
            assert all(init[p] == given[p] for p in tiny.moved_params(arch[me], layers))
        else:   # a model sharing a longer prefix wins over the parent
            assert tiny.common_prefix(arch[child["tc_donor"]], arch[me]) > tiny.common_prefix(arch[parent], arch[me])


def test_module_layers_and_bad_arguments():
    lmap = module_layers(tune_app.mlp(16, 0))
    assert [layer.name for layer in lmap.layers] == ["0", "2", "4"] and lmap.mode == "compatible"
    assert all(layer.depends_on == () for layer in lmap.layers)
    with pytest.raises(ValueError, match="config keys"):
        TuneCache({"memory": "1MB"}, arch="width")
    with pytest.raises(ValueError, match=r"\['depth'\] missing"):
        TuneCache({"memory": "1MB"}, arch=["depth"]).arch({"width": 3})
    with pytest.raises(TypeError, match="memry"):
        TuneCache({"memry": "1MB"})
    with pytest.raises(ValueError, match="mode='best'"):
        EvolutionSearcher(tiny.SPACE, 3, 2, metric="acc", mode="best")


def _resume(helper: TuneCache, checkpoint, width: int, log=None):
    model = tune_app.mlp(width, seed=7)
    return model, helper.start(model, {"width": width}, checkpoint=checkpoint)


def test_a_resume_takes_the_pointed_model_and_falls_back_when_it_is_gone_or_misfits(tmp_path):
    helper = TuneCache({"memory": "1MB", "namespace": "tune-unit", "policy": "fifo"})
    donor = tune_app.mlp(32, seed=1)
    first = helper.start(donor, {"width": 32})
    assert first.transfer.report.layers == 0 and not first.resumed          # nothing to start from
    pointer = first.checkpoint(donor, score=50.0, step=3)
    model, trial = _resume(helper, pointer, 32)
    assert trial.resumed and trial.state == {"step": 3} and trial.transfer.parent == first.model_id
    assert trial.transfer.report.layers == 3 and tiny.digests(model) == tiny.digests(donor)
    with pytest.warns(UserWarning, match="took 1 layer"):                     # a mutated width: what fits
        model, trial = _resume(helper, pointer, 16)
    assert trial.transfer.report.donor == first.model_id
    assert tiny.digests(model).split(";")[:2] == tiny.digests(donor).split(";")[:2]
    for i in range(12):   # push the donor out of the 1 MB tier
        other = tune_app.mlp(32, seed=100 + i)
        helper.start(other, {"width": 32}).put(other, score=float(i))
    with pytest.warns(UserWarning, match=f"resumed from model '{first.model_id}'"):
        model, trial = _resume(helper, pointer, 32)
    report = trial.transfer.report
    assert report.donor not in (None, first.model_id) and report.layers == 3  # the best model held stands in
    (Path(pointer.path) / "tensorcache.json").write_text("not json")
    with pytest.warns(UserWarning, match="no readable tensorcache pointer"):
        model, trial = _resume(helper, pointer, 32)
    assert trial.transfer.report.layers == 0 and trial.resumed


def test_puts_chain_their_lineage_and_new_trials_start_from_the_nearest_only_when_asked():
    options = {"memory": "4MB", "namespace": "tune-chain"}
    helper = TuneCache(options)
    model = tune_app.mlp(16, seed=0)
    trial = helper.start(model, {"width": 16, "tc_id": "given", "tc_parent": ""})
    ids = [trial.put(model, score=1.0), trial.put(model, score=2.0)]
    assert ids[0] == "given" and trial.model_id == ids[1] != ids[0] and trial.metrics()["tc_last"] == ids[1]
    from tensorcache.integrations.worker import worker_cache

    cache = worker_cache(helper.cache).cache
    assert cache.stats()["bytes_stored"] < 2 * sum(t.numel() * 4 for t in model.state_dict().values())  # deduped
    assert helper.start(tune_app.mlp(16, 1), {"width": 16}).transfer.report.layers == 0
    nearest = TuneCache(options, new_trials=True).start(tune_app.mlp(16, 1), {"width": 16})
    assert nearest.transfer.report.donor == ids[1] and nearest.transfer.report.layers == 3
    child = helper.start(tune_app.mlp(16, 1), {"width": 16, "tc_parent": ids[0]})
    assert child.transfer.report.donor == ids[0]
