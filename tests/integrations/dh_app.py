"""A tiny DeepHyper regularized-evolution search on the attn space over mnist-small, warm-started by tensorcache.

Imported by the tests (serial, process, Ray) and run as a script under ``mpirun -n 3`` (mpicomm):
``python dh_app.py OUT_DIR LMDB_PATH REDIS_URL NAMESPACE``. Every job records digests of its tensors
right after the warm start (``init``) and after training (``final``), so a test can check that each
transferred tensor is the donor's own.
"""
from __future__ import annotations

import hashlib
import sys
from typing import Any

import torch
from deephyper.hpo import HpProblem
from torch import nn

from nas_integration.data import load_dataset
from nas_integration.spaces import AttnSpace
from tensorcache.integrations.deephyper import EvolutionFeed, LineageEvolution, WarmStartRun

SPACE = AttnSpace(nodes=3, units=(16, 32), activations=("relu", "tanh"), max_skip=1)
ARCH = [f"a{i}" for i in range(SPACE.n_positions)]
POPULATION, SAMPLE = 4, 2


def problem() -> HpProblem:
    """One integer hyperparameter per position of the architecture sequence."""
    p = HpProblem()
    for name, n in zip(ARCH, SPACE.choices):
        p.add_hyperparameter((0, n - 1), name)
    return p


_DATA: list[tuple[torch.Tensor, ...]] = []


def data() -> tuple[torch.Tensor, ...]:
    """480 training and 120 validation images of the shipped mnist-small set, as flat floats (read once)."""
    if not _DATA:
        x, y, _, _ = load_dataset("mnist-small", subset=(600, 1), download_missing=False)
        x = torch.as_tensor(x).float().div_(255).flatten(1)
        y = torch.as_tensor(y).long()
        _DATA.append((x[:480], y[:480], x[480:], y[480:]))
    return _DATA[0]


def build(job: Any) -> nn.Module:
    """A freshly initialised model of the job's architecture."""
    torch.manual_seed(int(job.parameters["tc_id"][:8], 16) if job.parameters.get("tc_id") else 0)
    return SPACE.build(tuple(int(job.parameters[n]) for n in ARCH), 10, (784,))


def digests(model: nn.Module) -> str:
    """``name=sha1`` of every tensor, ';'-joined (fits a CSV cell)."""
    return ";".join(f"{k}={hashlib.sha1(v.detach().contiguous().numpy().tobytes()).hexdigest()[:16]}"
                    for k, v in model.state_dict().items())


def train(job: Any, model: nn.Module) -> dict[str, Any]:
    """One epoch of Adam; validation accuracy in percent is the objective."""
    torch.set_num_threads(1)
    init = digests(model)
    x, y, xv, yv = data()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for batch in torch.randperm(len(x), generator=gen).split(32):
        loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        acc = 100.0 * float((model(xv).argmax(1) == yv).float().mean())
    return {"objective": acc, "metadata": {"init": init, "final": digests(model)}}


def make_run(cache: dict[str, Any]) -> WarmStartRun:
    """The warm-started run function over ``cache`` (TensorCache keyword arguments)."""
    return WarmStartRun(build, train, ARCH, cache=cache, layer_map=SPACE.layer_map)


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
