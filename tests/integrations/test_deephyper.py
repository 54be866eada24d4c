"""DeepHyper's RegularizedEvolution and evaluators (serial, process, mpicomm, ray) over real tiny training."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from optional_dep import need

need("deephyper")

import dh_app  # noqa: E402
import tiny_job as tiny  # noqa: E402
from deephyper.evaluator import Evaluator  # noqa: E402

from tensorcache.integrations import worker  # noqa: E402
from tensorcache.integrations.deephyper import EvolutionFeed, WarmStartRun  # noqa: E402
from tensorcache import TensorCache  # noqa: E402
from tensorcache.events import EvaluationDone, Mutated, PopulationChanged  # noqa: E402
from tensorcache.news import EvaluationNews  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
COLUMNS = ["m:tc_model", "m:tc_parent", "m:tc_donor", "m:tc_layers", "m:tc_bytes", "m:tc_tier", "m:tc_cache_s"]
MAX_EVALS = 12


@pytest.fixture(autouse=True)
def worker_warnings_on_stderr():
    """The cache's warnings from forked worker processes written to stderr, which pytest captures and shows
    with a failure: a forked worker inherits pytest's log capture and keeps its records in its own memory."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(process)d %(levelname)s %(name)s: %(message)s"))
    log = logging.getLogger("tensorcache")
    log.addHandler(handler)
    yield
    log.removeHandler(handler)


def check_results(log_dir: Path) -> pd.DataFrame:
    """results.csv holds the transfer columns; children are warm-started from their recorded parent with
    the parent's own tensors; returns the table."""
    df = pd.read_csv(log_dir / "results.csv", dtype={"p:tc_parent": str, "m:tc_parent": str, "m:tc_donor": str})
    assert set(COLUMNS) <= set(df.columns), sorted(df.columns)
    assert len(df) >= MAX_EVALS and (df["job_status"] == "DONE").all()
    df = df.fillna({"p:tc_parent": "", "m:tc_parent": "", "m:tc_donor": ""})
    rows = {r["m:tc_model"]: r for _, r in df.iterrows()}
    assert len(rows) == len(df)
    arch = {m: tuple(int(r[f"p:{n}"]) for n in dh_app.ARCH) for m, r in rows.items()}
    children = [r for r in rows.values() if r["p:tc_parent"]]
    assert len(children) >= MAX_EVALS - dh_app.POPULATION - 2   # the first population has no parents
    from_parent, checked = 0, []
    for child in children:
        me, parent, donor = child["m:tc_model"], child["p:tc_parent"], child["m:tc_donor"]
        assert child["m:tc_parent"] == parent and parent in rows
        if not tiny.shared_layers(arch[parent], arch[me]):   # the mutation changed the first layer
            continue
        assert donor and child["m:tc_layers"] > 0 and child["m:tc_bytes"] > 0, _cache_fields(child, rows[parent])
        checked.append(me)
        if donor == parent:
            from_parent += 1
        else:  # lookup prefers the parent unless another model shares a longer prefix with the child
            assert tiny.common_prefix(arch[donor], arch[me]) > tiny.common_prefix(arch[parent], arch[me])
    # how many children another model outmatches their parent for depends on the archs the search draws, and
    # those on the tiny trainings' scores, which move with the machine's threads: the rule is checked per child
    assert checked and from_parent >= 1
    for _, row in df[df["m:tc_layers"] > 0].iterrows():   # every transferred tensor is the donor's own
        me, donor = row["m:tc_model"], row["m:tc_donor"]
        moved = tiny.moved_params(arch[me], int(row["m:tc_layers"]))
        init, donor_final = tiny.parse_digests(row["m:init"]), tiny.parse_digests(rows[donor]["m:final"])
        assert moved and all(init[p] == donor_final[p] for p in moved)
    first = df.sort_values("job_id").head(dh_app.POPULATION)
    assert (first["p:tc_parent"] == "").all()
    return df


def _cache_fields(*rows: pd.Series) -> str:
    """The cache's columns and job times of ``rows`` (a failed check's message: which worker put and which
    looked up, in what order, and what failed in the cache; the workers' warnings are in captured stderr)."""
    cols = [c for c in rows[0].index if c.startswith("m:tc_") or c.startswith("m:timestamp")]
    return "\n".join(", ".join(f"{c[2:]}={r[c]}" for c in cols) for r in rows)


def _cache(tmp_path: Path, namespace: str, redis: str | None = None) -> dict:
    return {"memory": "64MB", "disk": str(tmp_path / "cache.lmdb"), "disk_capacity": "256MB", "redis": redis,
            "namespace": namespace}


def _evaluator(run, method: str, **kwargs) -> Evaluator:
    return Evaluator.create(run, method=method, method_kwargs=EvolutionFeed().method_kwargs(**kwargs))


def test_serial_search_warm_starts_children_from_their_parent(tmp_path):
    run = dh_app.make_run(_cache(tmp_path, "dh-serial", None))
    dh_app.search(str(tmp_path)).search(_evaluator(run.for_evaluator("serial"), "serial"), max_evals=MAX_EVALS)
    df = check_results(tmp_path)
    assert df["m:tc_worker"].nunique() == 1
    assert sorted(df["m:tc_worker_jobs"]) == list(range(1, len(df) + 1))   # one cache served every job
    served = worker.worker_cache(run.cache).cache.stats()
    assert served["hits"] == (df["m:tc_layers"] > 0).sum()


def test_process_evaluator_opens_one_cache_per_worker(tmp_path):
    run = dh_app.make_run(_cache(tmp_path, "dh-process"))
    with _evaluator(run, "process", num_workers=2) as evaluator:
        dh_app.search(str(tmp_path)).search(evaluator, max_evals=MAX_EVALS)
    df = check_results(tmp_path)
    for _, jobs in df.groupby("m:tc_worker"):   # each worker's cache counts the jobs it served: 1, 2, ...
        assert sorted(jobs["m:tc_worker_jobs"]) == list(range(1, len(jobs) + 1))
    assert df["m:tc_worker"].nunique() == 2


@pytest.mark.parametrize("method, workers", [("serial", 1), ("process", 2)])
def test_an_unchanged_run_function_is_warm_started(tmp_path, method, workers):
    run_warm = dh_app.make_warm(_cache(tmp_path, f"dh-plain-{method}"), method)
    with _evaluator(run_warm, method, num_workers=workers) as evaluator:
        dh_app.search(str(tmp_path)).search(evaluator, max_evals=MAX_EVALS)
    df = check_results(tmp_path)
    assert df["m:tc_worker"].nunique() == workers and (df["m:tc_worker_jobs"] > 0).all()


def test_the_architecture_is_named_once_and_checked_against_the_problem():
    from deephyper.hpo import HpProblem

    from tensorcache.integrations.deephyper import arch_names

    problem = HpProblem()
    for name in ("x10", "x2", "x0", "x1", "lr"):
        problem.add_hyperparameter((0, 3) if name != "lr" else (1e-4, 1e-2, "log-uniform"), name)
    for i in range(3, 10):
        problem.add_hyperparameter((0, 3), f"x{i}")
    assert arch_names("x", problem) == tuple(f"x{i}" for i in range(11))
    with pytest.raises(ValueError, match="no hyperparameter named 'y'"):
        arch_names("y", problem)
    with pytest.raises(ValueError, match="'lr' is not an integer"):
        arch_names(["x0", "lr"], problem)
    with pytest.raises(ValueError, match="give the problem"):
        arch_names("x")


def test_thread_evaluator_shares_one_cache_between_threads(tmp_path):
    run = dh_app.make_run(_cache(tmp_path, "dh-thread"))
    with _evaluator(run.for_evaluator("thread"), "thread", num_workers=2) as evaluator:
        dh_app.search(str(tmp_path)).search(evaluator, max_evals=MAX_EVALS)
    df = check_results(tmp_path)
    assert df["m:tc_worker"].nunique() == 1 and sorted(df["m:tc_worker_jobs"]) == list(range(1, len(df) + 1))


def test_feed_tells_the_evolution_aware_policy_the_population_and_mutations(tmp_path, monkeypatch):
    told: list = []
    original = TensorCache.observe

    def record(cache, event):
        told.append(event)
        return original(cache, event)

    monkeypatch.setattr(TensorCache, "observe", record)
    run = dh_app.make_run(dict(_cache(tmp_path, "dh-feed", None), policy="evolution-aware"))
    dh_app.search(str(tmp_path)).search(_evaluator(run.for_evaluator("serial"), "serial"), max_evals=MAX_EVALS)
    df = pd.read_csv(tmp_path / "results.csv", dtype={"p:tc_mutated": str, "p:tc_id": str})
    df = df.fillna({"p:tc_mutated": ""}).sort_values("job_id")
    populations = [e for e in told if isinstance(e, PopulationChanged)]
    assert populations and all((e.population_size, e.sample_size) == (dh_app.POPULATION, dh_app.SAMPLE)
                               for e in populations)
    members, objective = dict(populations[-1].members), dict(zip(df["p:tc_id"], df["objective"]))
    assert len(members) == dh_app.POPULATION and all(objective[m] == pytest.approx(s) for m, s in members.items())
    positions = [e.position for e in told if isinstance(e, Mutated)]
    mutated = [dh_app.ARCH.index(name) for name in df["p:tc_mutated"] if name]
    assert mutated and positions == mutated[:len(positions)] and len(positions) >= len(mutated) - 1
    assert sum(isinstance(e, EvaluationDone) for e in told) == len(df) - 1   # told at the next job's start


def test_a_worker_that_falls_behind_hears_each_evaluation_once_and_the_mutations_kept():
    """The feed numbers the news of finished evaluations; a worker hears each number once, and those no
    longer kept only as finished."""
    from tensorcache.integrations.deephyper import WarmStartRun
    from tensorcache.integrations.worker import WorkerCache

    heard = []

    class Listener:
        def observe(self, event):
            heard.append(event)

    worker = WorkerCache(Listener())
    now = EvaluationNews(population=[("m1", 0.5)], population_size=4, sample_size=2)
    finished = tuple((n, EvaluationNews.of(pos, None, 0, 0)) for n, pos in ((3, None), (4, 1), (5, 2), (6, None)))
    WarmStartRun._tell(worker, (finished, now))        # evaluations 1 and 2 are no longer kept
    WarmStartRun._tell(worker, (finished[2:], now))    # nothing new: only the population again
    assert worker.heard == 6
    assert [type(e).__name__ for e in heard] == ["EvaluationDone"] * 6 + ["Mutated"] * 2 + ["PopulationChanged"] * 2
    assert [e.position for e in heard if isinstance(e, Mutated)] == [1, 2]


@pytest.mark.slow
def test_mpicomm_ranks_share_one_lmdb_and_redis(tmp_path, redis_url, redis_namespace):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
    cmd = ["mpirun", "--oversubscribe", "-n", "3", sys.executable, str(Path(dh_app.__file__)), str(tmp_path),
           str(tmp_path / "cache.lmdb"), redis_url, redis_namespace]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    df = check_results(tmp_path)
    assert df["m:tc_worker"].nunique() == 2             # two worker ranks, one cache each
    for _, jobs in df.groupby("m:tc_worker"):
        assert sorted(jobs["m:tc_worker_jobs"]) == list(range(1, len(jobs) + 1))
    tiers = set(df.loc[df["m:tc_layers"] > 0, "m:tc_tier"])
    assert tiers <= {"memory", "lmdb", "redis"}
    put_by, read = dict(zip(df["m:tc_model"], df["m:tc_worker"])), set()
    for _, row in df[df["m:tc_layers"] > 0].sort_values("m:tc_worker_jobs").iterrows():
        me, donor = row["m:tc_worker"], row["m:tc_donor"]
        if put_by[donor] != me and (me, donor) not in read:   # a rank's first read of the other rank's model
            assert row["m:tc_tier"] in ("lmdb", "redis")         # comes from a shared tier
            read.add((me, donor))


@pytest.mark.slow
def test_ray_evaluator_on_a_local_ray(tmp_path):
    ray = need("ray", in_ci=False)   # .ci/run installs it where the platform has wheels
    from ray import cloudpickle

    for module in (dh_app, tiny):   # Ray workers do not import the tests' helper modules
        cloudpickle.register_pickle_by_value(module)
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": env}, log_to_driver=False)
    try:
        run = dh_app.make_run(_cache(tmp_path, "dh-ray"))
        with _evaluator(run.for_evaluator("ray"), "ray", num_cpus_per_task=1) as evaluator:
            dh_app.search(str(tmp_path)).search(evaluator, max_evals=MAX_EVALS)
        df = check_results(tmp_path)
        for _, jobs in df.groupby("m:tc_worker"):
            assert sorted(jobs["m:tc_worker_jobs"]) == list(range(1, len(jobs) + 1))
    finally:
        ray.shutdown()
        for module in (dh_app, tiny):
            cloudpickle.unregister_pickle_by_value(module)


def test_lineage_warns_and_records_no_parent_when_the_tournament_does_not_copy(monkeypatch, tmp_path):
    from deephyper.hpo import RegularizedEvolution

    search = dh_app.search(str(tmp_path))
    population = [search.ask(1)[0] for _ in range(dh_app.POPULATION)]
    assert all(c["tc_parent"] == "" and c["tc_mutated"] == "" for c in population)
    search.tell([(config, float(i)) for i, config in enumerate(population)])
    child = search.ask(1)[0]
    assert child["tc_parent"] in {c["tc_id"] for c in population} and child["tc_id"] not in child["tc_parent"]
    plain = {k: v for k, v in population[0].items() if not k.startswith("tc_")}
    monkeypatch.setattr(RegularizedEvolution, "_ask", lambda self, n=1: [dict(plain) for _ in range(n)])
    with pytest.warns(UserWarning, match="parents are not recorded"):   # a DeepHyper that evolves otherwise
        child = search.ask(1)[0]
    assert child["tc_parent"] == "" and child["tc_id"]


def test_run_names_a_missing_or_non_int_architecture_parameter():
    run = dh_app.make_run({"memory": "1MB", "namespace": "dh-bad"})
    with pytest.raises(ValueError, match="'a0' is missing"):
        run.arch({})
    with pytest.raises(ValueError, match="'a0' = 1.5 is not an int"):
        run.arch({n: 1.5 for n in dh_app.ARCH})
    with pytest.raises(ValueError, match="arch_params"):
        WarmStartRun(dh_app.build, dh_app.train, "a0", cache={})
    with pytest.raises(TypeError, match="memry"):
        WarmStartRun(dh_app.build, dh_app.train, dh_app.ARCH, cache={"memry": "1GB"})


def test_the_feed_s_old_keyword_still_works_and_an_unknown_one_is_named():
    with pytest.warns(DeprecationWarning, match="keep="):
        EvolutionFeed(keep_mutations=3)
    with pytest.raises(TypeError, match="keep_everything"):
        EvolutionFeed(keep_everything=3)
