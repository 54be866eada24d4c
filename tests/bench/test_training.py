"""The plain training loop the integration tests and the framework benches train with learns, reproducibly."""
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from training import fit  # noqa: E402

from nas_integration.data import flat_mnist  # noqa: E402


def test_fit_learns_flat_mnist_and_repeats_exactly():
    data = flat_mnist(480, 120)
    scores = []
    for _ in range(2):
        torch.manual_seed(0)
        scores.append(fit(nn.Linear(784, 10), data, epochs=2, batch_size=32, lr=3e-3))
    assert scores[0] == scores[1] and scores[0] > 50.0  # chance is 10%
