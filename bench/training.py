"""A plain training loop on flat images, for the benches and tests that train small real models through the
integrations (DeepHyper, Optuna, Ray Tune) rather than through the search's own evaluator."""
from __future__ import annotations

import torch
from torch import nn

from nas_integration.data import FlatData


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
