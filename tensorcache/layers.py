"""Layer maps: which architecture positions decide each layer's tensors.

A search space turns an architecture into an ordered list of layers. Each layer names the module
parameters/buffers it owns and the positions of the architecture sequence its shape and input depend on.
Two models may exchange a layer iff they agree on exactly those positions (shapes are still checked at
transfer time). ``mode`` says how lookup uses the map:

* ``prefix``: a child takes a donor's layers as one unbroken run from layer 0 (the study's rule: a layer
  trained on top of the donor's earlier layers is only useful after them).
* ``compatible``: a child takes every layer whose own key matches, wherever it sits.
"""
from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .keys import layer_key, layer_suffix, positions_key, prefix_keys
from .wrappers import unwrapped, wrapper_prefix

Mode = Literal["prefix", "compatible"]
MODES: tuple[str, ...] = ("prefix", "compatible")


@dataclass(frozen=True)
class LayerSpec:
    """One layer: its name, the state-dict entries it owns, and the positions it depends on."""

    name: str
    params: tuple[str, ...] = ()
    depends_on: tuple[int, ...] = ()


@dataclass(frozen=True)
class LayerMap:
    """Ordered layers of one architecture plus the transfer mode."""

    layers: tuple[LayerSpec, ...]
    mode: Mode = "prefix"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown transfer mode {self.mode!r}; expected one of {MODES}")
        names = [layer.name for layer in self.layers]
        if len(set(names)) != len(names):
            raise ValueError("layer names in a LayerMap must be unique")

    @classmethod
    def generic(cls, n_positions: int, mode: Mode = "prefix") -> LayerMap:
        """Layer i owns the tensors given for position i and depends on positions 0..i (one shared map per
        length and mode: a map is immutable, and every put and lookup without a layer map asks for one)."""
        return _generic(n_positions, mode)

    def __len__(self) -> int:
        return len(self.layers)

    def keys(self, namespace: str, arch: Sequence[int]) -> list[bytes]:
        """One 128-bit key per layer: the layer's name hashed with the values it depends on."""
        prefixes = prefix_keys(namespace, arch)
        return [layer_key(prefixes[depth] if depth >= 0 else positions_key(namespace, arch, deps), suffix)
                for depth, suffix, deps in self._key_plan]

    @functools.cached_property
    def _key_plan(self) -> tuple[tuple[int, bytes, tuple[int, ...]], ...]:
        """Per layer: k when it depends on exactly positions 0..k-1 (its context is that prefix's key), else -1;
        its name's ``layer_suffix``; its positions (worked out once per map: every put and lookup keys one)."""
        return tuple((len(layer.depends_on) if layer.depends_on == tuple(range(len(layer.depends_on))) else -1,
                      layer_suffix(layer.name), layer.depends_on) for layer in self.layers)

    @functools.cached_property
    def _wrapped(self) -> int:
        """Length of the wrapper prefix every named entry shares (0: none), worked out once per map."""
        return len(wrapper_prefix(p for layer in self.layers for p in layer.params))

    def split(self, state: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
        """Split a flat state dict into one dict per layer, and name the entries no layer claims; KeyError
        if a named entry is missing or no entry is named. Names are matched and kept without the wrapper
        prefixes of ``nn.DataParallel``/DDP (``module.``) and ``torch.compile`` (``_orig_mod.``), either side."""
        plain = unwrapped(state)
        cut = self._wrapped
        per_layer: list[dict[str, Any]] = []
        missing: list[str] = []
        for layer in self.layers:
            tensors = {}
            for p in layer.params:
                name = p if p in plain else p[cut:]
                if name in plain:
                    tensors[name] = plain[name]
                else:
                    missing.append(p)
            per_layer.append(tensors)
        claimed = set().union(*per_layer)
        left_out = [name for name in plain if name not in claimed] if len(claimed) < len(plain) else []
        if plain and not claimed:
            raise KeyError(f"state dict entries match no layer of the layer map: {left_out[:8]}"
                           f"{' ...' if len(left_out) > 8 else ''} (give a layer_map that names them)")
        if missing:
            raise KeyError(f"state dict lacks entries named by the layer map: {missing[:5]}")
        return per_layer, left_out


@functools.lru_cache(maxsize=256)
def _generic(n_positions: int, mode: Mode) -> LayerMap:
    return LayerMap(tuple(LayerSpec(str(i), (), tuple(range(i + 1))) for i in range(n_positions)), mode)
