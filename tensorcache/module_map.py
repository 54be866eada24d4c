"""A LayerMap for an ordinary torch module (torchvision/timm style), which has no architecture sequence.

Each module that directly owns parameters or persistent buffers is one layer, in definition order, named
by its path and the shapes of its tensors and depending on no position. So two models share a layer's key
iff they have a module at that path with tensors of those shapes: lookup picks the donor that fits the
most layers, and a warm start between models of different widths or depths copies the layers that fit.
"""
from __future__ import annotations

from typing import Any

from .layers import LayerMap, LayerSpec, Mode
from .wrappers import unwrapped


def layer_map_of(module: Any, mode: Mode = "compatible") -> LayerMap:
    """One layer per owning module of ``module``'s state dict, keyed by path and tensor shapes (wrapper
    prefixes of ``nn.DataParallel``, DDP and ``torch.compile`` removed); ``mode`` as in ``LayerMap``."""
    groups: dict[str, list[tuple[str, tuple[int, ...]]]] = {}
    for name, tensor in unwrapped(module.state_dict(keep_vars=True)).items():
        groups.setdefault(name.rpartition(".")[0], []).append((name, tuple(tensor.shape)))
    return LayerMap(tuple(LayerSpec(f"{owner}{[shape for _, shape in entries]}", tuple(n for n, _ in entries))
                          for owner, entries in groups.items()), mode)
