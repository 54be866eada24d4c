"""DeepHyper's RegularizedEvolution and evaluators (serial, process, mpicomm, ray) over real tiny training."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest

from tensorcache.policies import EvolutionAware

ROOT = Path(__file__).resolve().parents[2]
COLUMNS = ["m:tc_model", "m:tc_parent", "m:tc_donor", "m:tc_layers", "m:tc_bytes", "m:tc_tier", "m:tc_cache_s"]
MAX_EVALS = 12


def _digests(cell: str) -> dict[str, str]:
    return dict(part.split("=") for part in cell.split(";"))


def _common_prefix(a: tuple, b: tuple) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _shared_layers(app: ModuleType, parent: tuple[int, ...], child: tuple[int, ...]) -> int:
    """Leading layers of ``child`` that ``parent`` can give (equal layer keys)."""
    keys = [app.SPACE.layer_map(a).keys("any", a) for a in (parent, child)]
    return _common_prefix(tuple(keys[0]), tuple(keys[1]))


def check_results(app: ModuleType, log_dir: Path) -> pd.DataFrame:
    """results.csv holds the transfer columns; children are warm-started from their recorded parent with
    the parent's own tensors; returns the table."""
    df = pd.read_csv(log_dir / "results.csv", dtype={"p:tc_parent": str, "m:tc_parent": str, "m:tc_donor": str})
    assert set(COLUMNS) <= set(df.columns), sorted(df.columns)
    assert len(df) >= MAX_EVALS and (df["job_status"] == "DONE").all()
    df = df.fillna({"p:tc_parent": "", "m:tc_parent": "", "m:tc_donor": ""})
    rows = {r["m:tc_model"]: r for _, r in df.iterrows()}
    assert len(rows) == len(df)
    arch = {m: tuple(int(r[f"p:{n}"]) for n in app.ARCH) for m, r in rows.items()}
    children = [r for r in rows.values() if r["p:tc_parent"]]
    assert len(children) >= MAX_EVALS - app.POPULATION - 2   # the first population has no parents
    from_parent, checked = 0, []
    for child in children:
        me, parent, donor = child["m:tc_model"], child["p:tc_parent"], child["m:tc_donor"]
        assert child["m:tc_parent"] == parent and parent in rows
        if not _shared_layers(app, arch[parent], arch[me]):   # the mutation changed the first layer
            continue
        assert donor and child["m:tc_layers"] > 0 and child["m:tc_bytes"] > 0
        checked.append(me)
        if donor == parent:
            from_parent += 1
        else:  # lookup prefers the parent unless another model shares a longer prefix with the child
            assert _common_prefix(arch[donor], arch[me]) > _common_prefix(arch[parent], arch[me])
        lmap = app.SPACE.layer_map(arch[me])
        moved = [p for layer in lmap.layers[:int(child["m:tc_layers"])] for p in layer.params]
        init, donor_final = _digests(child["m:init"]), _digests(rows[donor]["m:final"])
        assert moved and all(init[p] == donor_final[p] for p in moved)
    assert from_parent >= len(checked) / 2 and checked
    first = df.sort_values("job_id").head(app.POPULATION)
    assert (first["p:tc_parent"] == "").all() and (first["m:tc_layers"] == 0).all()
    return df


def _cache(tmp_path: Path, namespace: str, redis: str | None = None) -> dict:
    return {"memory": "64MB", "disk": str(tmp_path / "cache.lmdb"), "disk_capacity": "256MB", "redis": redis,
            "namespace": namespace}


def _evaluator(app: ModuleType, run, method: str, **kwargs):
    from deephyper.evaluator import Evaluator

    from tensorcache.integrations.deephyper import EvolutionFeed

    return Evaluator.create(run, method=method, method_kwargs=EvolutionFeed().method_kwargs(**kwargs))


def test_serial_search_warm_starts_children_from_their_parent(dh_app, tmp_path):
    from tensorcache.integrations import worker

    run = dh_app.make_run(_cache(tmp_path, "dh-serial", None))
    dh_app.search(str(tmp_path)).search(_evaluator(dh_app, run.for_evaluator("serial"), "serial"), max_evals=MAX_EVALS)
    df = check_results(dh_app, tmp_path)
    assert df["m:tc_worker"].nunique() == 1
    assert sorted(df["m:tc_worker_jobs"]) == list(range(1, len(df) + 1))   # one cache served every job
    served = worker.worker_cache(run.cache).cache.stats()
    assert served["hits"] == (df["m:tc_layers"] > 0).sum()


def test_process_evaluator_opens_one_cache_per_worker(dh_app, tmp_path):
    run = dh_app.make_run(_cache(tmp_path, "dh-process"))
    with _evaluator(dh_app, run, "process", num_workers=2) as evaluator:
        dh_app.search(str(tmp_path)).search(evaluator, max_evals=MAX_EVALS)
    df = check_results(dh_app, tmp_path)
    for _, jobs in df.groupby("m:tc_worker"):   # each worker's cache counts the jobs it served: 1, 2, ...
        assert sorted(jobs["m:tc_worker_jobs"]) == list(range(1, len(jobs) + 1))
    assert df["m:tc_worker"].nunique() == 2


class Recording(EvolutionAware):
    """The evolution-aware policy, noting what the cache tells it (serial runs share this process)."""

    told: list[tuple] = []

    def update_population(self, members, population_size, sample_size):
        Recording.told.append(("population", len(members), population_size, sample_size))
        super().update_population(members, population_size, sample_size)

    def observe_mutation(self, position):
        Recording.told.append(("mutation", position))
        super().observe_mutation(position)


def test_feed_tells_the_evolution_aware_policy_the_population_and_mutations(dh_app, tmp_path):
    Recording.told.clear()
    run = dh_app.make_run(dict(_cache(tmp_path, "dh-feed", None), policy=Recording))
    dh_app.search(str(tmp_path)).search(_evaluator(dh_app, run.for_evaluator("serial"), "serial"), max_evals=MAX_EVALS)
    df = pd.read_csv(tmp_path / "results.csv", dtype={"p:tc_mutated": str}).fillna({"p:tc_mutated": ""})
    tiers = 2   # memory and LMDB: each tier's policy is told
    populations = [t for t in Recording.told if t[0] == "population"]
    assert populations and all(t[2:] == (dh_app.POPULATION, dh_app.SAMPLE) for t in populations)
    assert max(t[1] for t in populations) == dh_app.POPULATION
    positions = [t[1] for t in Recording.told if t[0] == "mutation"]
    mutated = [dh_app.ARCH.index(name) for name in df.sort_values("job_id")["p:tc_mutated"] if name]
    assert mutated and positions == [p for p in mutated for _ in range(tiers)]


@pytest.mark.slow
def test_mpicomm_ranks_share_one_lmdb_and_redis(dh_app, tmp_path, redis_url, redis_namespace):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
    cmd = ["mpirun", "--oversubscribe", "-n", "3", sys.executable, str(Path(dh_app.__file__)), str(tmp_path),
           str(tmp_path / "cache.lmdb"), redis_url, redis_namespace]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    df = check_results(dh_app, tmp_path)
    assert df["m:tc_worker"].nunique() == 2             # two worker ranks, one cache each
    for _, jobs in df.groupby("m:tc_worker"):
        assert sorted(jobs["m:tc_worker_jobs"]) == list(range(1, len(jobs) + 1))
    tiers = set(df.loc[df["m:tc_layers"] > 0, "m:tc_tier"])
    assert tiers <= {"memory", "lmdb", "redis"} and tiers & {"lmdb", "redis"}   # ranks read each other's models


@pytest.mark.slow
def test_ray_evaluator_on_a_local_ray(dh_app, ray, tmp_path):
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(dh_app)   # Ray workers do not import the test's helper module
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": env}, log_to_driver=False)
    try:
        run = dh_app.make_run(_cache(tmp_path, "dh-ray"))
        with _evaluator(dh_app, run.for_evaluator("ray"), "ray", num_cpus_per_task=1) as evaluator:
            dh_app.search(str(tmp_path)).search(evaluator, max_evals=MAX_EVALS)
        df = check_results(dh_app, tmp_path)
        for _, jobs in df.groupby("m:tc_worker"):
            assert sorted(jobs["m:tc_worker_jobs"]) == list(range(1, len(jobs) + 1))
    finally:
        ray.shutdown()
        cloudpickle.unregister_pickle_by_value(dh_app)
