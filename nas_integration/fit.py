"""A plain training loop on flat mnist-small images, for the benches and tests that train small real models
through the integrations (DeepHyper, Optuna) rather than through the search's own evaluator."""
from __future__ import annotations

import torch
from torch import nn

from .data import load_dataset

FlatData = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def flat_mnist(train: int, val: int) -> FlatData:
    """``train`` training and ``val`` validation images of the shipped mnist-small (a seeded subset) as flat
    floats in [0, 1], with their labels: (x, y, x_val, y_val)."""
    x, y, _, _ = load_dataset("mnist-small", subset=(train + val, 1), download_missing=False)
    x, y = torch.as_tensor(x).float().div_(255).flatten(1), torch.as_tensor(y).long()
    return x[:train], y[:train], x[train:], y[train:]


def fit(model: nn.Module, data: FlatData, epochs: int = 1, batch_size: int = 128, lr: float = 1e-3) -> float:
    """Train ``model`` ``epochs`` epochs with Adam (batch order seeded, the same for every model); return its
    validation accuracy in percent."""
    x, y, xv, yv = data
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=gen).split(batch_size):
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        return 100.0 * float((model(xv).argmax(1) == yv).float().mean())
