"""The plain training loop used by the integration tests and the DeepHyper bench learns, reproducibly."""
import torch
from torch import nn

from nas_integration.fit import fit, flat_mnist


def test_fit_learns_flat_mnist_and_repeats_exactly():
    data = flat_mnist(480, 120)
    assert data[0].shape == (480, 784) and data[2].shape == (120, 784) and float(data[0].max()) <= 1.0
    scores = []
    for _ in range(2):
        torch.manual_seed(0)
        scores.append(fit(nn.Linear(784, 10), data, epochs=2, batch_size=32, lr=3e-3))
    assert scores[0] == scores[1] and scores[0] > 50.0  # chance is 10%
