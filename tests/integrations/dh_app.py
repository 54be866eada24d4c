"""A tiny DeepHyper regularized-evolution search on the attn space over mnist-small, warm-started by tensorcache.

Imported by the tests (serial, process, Ray) and run as a script under ``mpirun -n 3`` (mpicomm):
``python dh_app.py OUT_DIR LMDB_PATH REDIS_URL NAMESPACE``. Every job records digests of its tensors
right after the warm start (``m:init``) and after training (``m:final``).
"""
from __future__ import annotations

import sys
from typing import Any

from deephyper.hpo import HpProblem
from torch import nn

import tiny_job as tiny
from tensorcache.integrations.deephyper import EvolutionFeed, LineageEvolution, WarmStartRun, warm_started

SPACE = tiny.SPACE
ARCH = [f"a{i}" for i in range(SPACE.n_positions)]
POPULATION, SAMPLE = 4, 2


def problem() -> HpProblem:
    """One integer hyperparameter per position of the architecture sequence."""
    p = HpProblem()
    for name, n in zip(ARCH, SPACE.choices):
        p.add_hyperparameter((0, n - 1), name)
    return p


def build(job: Any) -> nn.Module:
    """A freshly initialised model of the job's architecture, seeded by its model id."""
    model_id = job.parameters.get("tc_id") or "0"
    return tiny.build(tuple(int(job.parameters[n]) for n in ARCH), int(model_id[:8], 16))


def train(job: Any, model: nn.Module) -> dict[str, Any]:
    """Validation accuracy after one epoch, with digests of the tensors before and after training."""
    init = tiny.digests(model)
    acc = tiny.fit(model)
    return {"objective": acc, "metadata": {"init": init, "final": tiny.digests(model)}}


def make_run(cache: dict[str, Any]) -> WarmStartRun:
    """The warm-started run function over ``cache`` (TensorCache keyword arguments)."""
    return WarmStartRun(build, train, ARCH, cache=cache, layer_map=SPACE.layer_map)


def run(job: Any) -> dict[str, Any]:
    """A user's own run function, unaware of the cache: build, train, return the objective. A hook of its
    own records the model's digests on its first call (after any warm start) and after training."""
    model = build(job)
    init: list[str] = []
    model.register_forward_pre_hook(lambda module, args: None if init else init.append(tiny.digests(module)))
    acc = tiny.fit(model)
    return {"objective": acc, "metadata": {"init": init[0], "final": tiny.digests(model)}}


async def run_async(job: Any) -> dict[str, Any]:
    """``run`` as the serial evaluator wants it."""
    return run(job)


def make_warm(cache: dict[str, Any], method: str) -> Any:
    """The user's run function for ``method`` warm-started by the cache, the architecture named once (the
    problem's ``a0``, ``a1``, ...)."""
    return warm_started(run_async if method == "serial" else run, cache, SPACE.layer_map, arch="a",
                        problem=problem())


def search(log_dir: str, seed: int = 0) -> LineageEvolution:
    return LineageEvolution(problem(), random_state=seed, log_dir=log_dir, population_size=POPULATION,
                            sample_size=SAMPLE)


if __name__ == "__main__":   # mpirun -n 3 python dh_app.py OUT LMDB REDIS NAMESPACE
    from deephyper.evaluator import Evaluator

    out, disk, redis_url, namespace = sys.argv[1:5]
    run = make_run({"memory": "64MB", "disk": disk, "disk_capacity": "256MB", "redis": redis_url,
                    "namespace": namespace})
    feed = EvolutionFeed()
    with Evaluator.create(run, method="mpicomm", method_kwargs=feed.method_kwargs()) as evaluator:
        if evaluator.is_master:
            search(out).search(evaluator, max_evals=12)
