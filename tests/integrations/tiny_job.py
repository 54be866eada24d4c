"""A tiny real training job for the integration tests: the attn space on 600 images of the shipped mnist-small.

``digests`` fingerprints every tensor of a model, so a test can check that each transferred tensor is
the donor's own (the child's digests right after the warm start against the donor's after training).
"""
from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nas_integration.data import FlatData, flat_mnist
from nas_integration.spaces import AttnSpace

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout: bench/ is not installed
from bench.training import fit as fit_flat  # noqa: E402

SPACE = AttnSpace(nodes=3, units=(16, 32), activations=("relu", "tanh"), max_skip=1)
_DATA: list[FlatData] = []


def data() -> FlatData:
    """480 training and 120 validation images as flat floats, read once per process."""
    if not _DATA:
        _DATA.append(flat_mnist(480, 120))
    return _DATA[0]


def build(arch: tuple[int, ...], seed: int) -> nn.Module:
    """A freshly initialised model of ``arch``."""
    torch.manual_seed(seed)
    return SPACE.build(arch, 10, (784,))


def digests(model: nn.Module) -> str:
    """``name=sha1`` of every tensor, ';'-joined (fits a CSV cell or an Optuna user attribute)."""
    return ";".join(f"{k}={hashlib.sha1(v.detach().contiguous().numpy().tobytes()).hexdigest()[:16]}"
                    for k, v in model.state_dict().items())


def parse_digests(text: str) -> dict[str, str]:
    return dict(part.split("=") for part in text.split(";"))


def fit(model: nn.Module) -> float:
    """One epoch of Adam on one thread; validation accuracy in percent."""
    torch.set_num_threads(1)
    return fit_flat(model, data(), epochs=1, batch_size=32, lr=3e-3)


def warm_objective(helper: Any) -> Callable[[Any], float]:
    """An Optuna objective: the trial's architecture through ``helper`` (an ``OptunaWarmStart``), warm-started,
    trained one epoch."""
    def objective(trial: Any) -> float:
        model = build(helper.suggest_arch(trial, SPACE.choices), trial.number)
        helper.warm_start(trial, model)
        return fit(model)

    return objective


def train_steps(model: nn.Module, lr: float, start: int, batches: int = 3) -> float:
    """``batches`` Adam steps on 32-image training batches from batch ``start`` (wrapping around); validation
    accuracy in percent."""
    torch.set_num_threads(1)
    x, y, xv, yv = data()
    rows = torch.arange(start * 32, (start + batches) * 32) % len(x)
    return fit_flat(model, (x[rows], y[rows], xv, yv), epochs=1, batch_size=32, lr=lr)


def moved_params(arch: tuple[int, ...], layers: int) -> list[str]:
    """Tensor names of the first ``layers`` layers of ``arch`` (what a prefix warm start copies)."""
    return [p for layer in SPACE.layer_map(arch).layers[:layers] for p in layer.params]


def shared_layers(donor: tuple[int, ...], child: tuple[int, ...]) -> int:
    """Leading layers of ``child`` that ``donor`` can give (equal layer keys)."""
    return common_prefix(*(SPACE.layer_map(x).keys("any", x) for x in (donor, child)))


def common_prefix(a: Sequence, b: Sequence) -> int:
    """Length of the leading run where ``a`` and ``b`` agree."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n
