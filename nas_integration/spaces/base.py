"""The search-space contract: architectures as int tuples, torch builders and layer maps.

A space fixes how many values each position of an architecture sequence can take, turns a sequence into
a torch model, and says which positions decide each layer's tensors (a ``tensorcache.layers.LayerMap``).
``SequenceSpace`` lets a user define a space in a few lines; ``get_space`` resolves registered names.
"""
from __future__ import annotations

import operator
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Any

from tensorcache.evolution import Arch
from tensorcache.layers import MODES, LayerMap, LayerSpec

if TYPE_CHECKING:  # torch is imported where a model is built, so that naming a space stays cheap
    from torch import nn

_CACHE_SIZE = 1 << 16


def state_nbytes(module: nn.Module) -> dict[str, int]:
    """Bytes of every state-dict entry of ``module`` (works on meta-device models)."""
    return {name: t.numel() * t.element_size() for name, t in module.state_dict().items()}


class SearchSpace(ABC):
    """A named space of int-tuple architectures with a model builder and per-layer dependencies."""

    name: str                        # also the root of the cache namespace
    choices: tuple[int, ...]         # arch[i] in range(choices[i])
    input_shape: tuple[int, ...]     # default input shape (without the batch dimension)
    transfer: str = "prefix"         # the transfer mode a search uses here unless told otherwise

    @property
    def n_positions(self) -> int:
        return len(self.choices)

    def validate(self, arch: Sequence[int]) -> Arch:
        """Return ``arch`` as a tuple of ints; raise ValueError naming the bad length, position or value."""
        try:
            values = tuple(arch)
        except TypeError:
            raise ValueError(f"{self.name}: architecture must be a sequence of ints, got {arch!r}") from None
        if len(values) != len(self.choices):
            raise ValueError(f"{self.name}: architecture has length {len(values)}, expected {len(self.choices)}")
        out = []
        for pos, (value, n) in enumerate(zip(values, self.choices)):
            try:
                if isinstance(value, bool):
                    raise TypeError
                value = operator.index(value)
            except TypeError:
                raise ValueError(f"{self.name}: position {pos} holds {value!r}, not an int") from None
            if not 0 <= value < n:
                raise ValueError(f"{self.name}: position {pos} holds {value}, expected 0..{n - 1}")
            out.append(value)
        return tuple(out)

    def sample(self, rng: random.Random) -> Arch:
        """A uniformly random architecture."""
        return tuple(rng.randrange(n) for n in self.choices)

    def mutate(self, arch: Sequence[int], rng: random.Random, bias: float = 0.0) -> tuple[Arch, int]:
        """Change exactly one position to a different value; return ``(child, position)``.

        Positions are drawn with weight ``(i + 1) ** bias`` (0 = uniform; > 0 favours later positions);
        positions with a single choice cannot change and are never drawn.
        """
        parent = self.validate(arch)
        movable = [i for i, n in enumerate(self.choices) if n > 1]
        if not movable:
            raise ValueError(f"{self.name}: no position has more than one choice, nothing to mutate")
        pos = rng.choices(movable, weights=[(i + 1) ** bias for i in movable])[0]
        value = rng.randrange(self.choices[pos] - 1)
        value += value >= parent[pos]
        return parent[:pos] + (value,) + parent[pos + 1:], pos

    def encode(self, native: Any) -> Arch:
        """Native form to sequence (default: the native form is the sequence)."""
        return self.validate(native)

    def decode(self, arch: Sequence[int]) -> Any:
        """Sequence to native form (default: the sequence itself)."""
        return self.validate(arch)

    @abstractmethod
    def build(self, arch: Sequence[int], num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
        """A freshly initialised torch model for ``arch``."""

    @abstractmethod
    def make_layer_map(self, arch: Arch, mode: str) -> LayerMap:
        """The layer map of a validated ``arch`` (uncached; ``layer_map`` caches it)."""

    def make_layer_nbytes(self, arch: Arch, mode: str, num_classes: int,
                          input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Bytes per layer (uncached). Default: read them off a meta-device model; override when slow."""
        sizes = state_nbytes(self.meta_model(arch, num_classes, input_shape))
        return tuple(sum(sizes[p] for p in layer.params) for layer in self.layer_map(arch, mode).layers)

    def meta_model(self, arch: Sequence[int], num_classes: int = 10,
                   input_shape: tuple[int, ...] | None = None) -> nn.Module:
        """The model of ``arch`` on the meta device: shapes without memory or initialisation cost."""
        import torch

        with torch.device("meta"):
            return self.build(arch, num_classes, tuple(input_shape or self.input_shape))

    def layer_map(self, arch: Sequence[int], mode: str = "prefix") -> LayerMap:
        """Ordered layers of ``arch``; ``LayerSpec.params`` are state-dict keys of ``build(arch, ...)``."""
        if mode not in MODES:
            raise ValueError(f"unknown transfer mode {mode!r}; expected one of {MODES}")
        return self._layer_maps(self.validate(arch), mode)

    def layer_nbytes(self, arch: Sequence[int], mode: str = "prefix", num_classes: int = 10,
                     input_shape: tuple[int, ...] | None = None) -> list[int]:
        """Bytes of each layer of ``layer_map(arch, mode)`` (float32 model); cached per architecture."""
        if mode not in MODES:
            raise ValueError(f"unknown transfer mode {mode!r}; expected one of {MODES}")
        shape = tuple(input_shape or self.input_shape)
        return list(self._layer_nbytes(self.validate(arch), mode, num_classes, shape))

    @cached_property
    def _layer_maps(self) -> Callable[[Arch, str], LayerMap]:
        return lru_cache(maxsize=_CACHE_SIZE)(self.make_layer_map)

    @cached_property
    def _layer_nbytes(self) -> Callable[..., tuple[int, ...]]:
        return lru_cache(maxsize=_CACHE_SIZE)(self.make_layer_nbytes)

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the caches (spaces travel to worker processes)."""
        return {k: v for k, v in self.__dict__.items() if k not in ("_layer_maps", "_layer_nbytes")}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}: {self.n_positions} positions>"


class SequenceSpace(SearchSpace):
    """A space defined by its choices and a build function; layer i = the submodule named for position i.

    ``build(arch, num_classes, input_shape)`` returns the model. ``layer_names[i]`` (default ``str(i)``,
    i.e. the children of an ``nn.Sequential``) names the submodule whose tensors form the layer of
    position i; it depends on positions ``0..i``. Tensors under no named submodule form a last layer
    ``"rest"`` that depends on every position. ``compatible_deps(i)`` gives the positions that decide
    layer i in ``compatible`` mode (default: the prefix, which is always safe).
    """

    def __init__(self, name: str, choices: Sequence[int],
                 build: Callable[[Arch, int, tuple[int, ...]], nn.Module],
                 input_shape: Sequence[int], layer_names: Sequence[str] | None = None,
                 compatible_deps: Callable[[int], Sequence[int]] | None = None) -> None:
        self.name = name
        self.choices = tuple(int(n) for n in choices)
        if any(n < 1 for n in self.choices):
            raise ValueError(f"{name}: every position needs at least one choice, got {self.choices}")
        self.input_shape = tuple(input_shape)
        self.layer_names = tuple(layer_names) if layer_names is not None else tuple(
            str(i) for i in range(len(self.choices)))
        if len(self.layer_names) != len(self.choices):
            raise ValueError(f"{name}: {len(self.layer_names)} layer names for {len(self.choices)} positions")
        self._build = build
        self._compatible_deps = compatible_deps

    def build(self, arch: Sequence[int], num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
        return self._build(self.validate(arch), num_classes, tuple(input_shape))

    def make_layer_map(self, arch: Arch, mode: str) -> LayerMap:
        keys = list(self.meta_model(arch).state_dict())
        layers, claimed = [], set()
        for i, layer_name in enumerate(self.layer_names):
            params = tuple(k for k in keys if k.startswith(layer_name + "."))
            claimed.update(params)
            if not params:
                continue
            deps = tuple(range(i + 1))
            if mode == "compatible" and self._compatible_deps is not None:
                deps = tuple(sorted(set(self._compatible_deps(i))))
            layers.append(LayerSpec(layer_name, params, deps))
        rest = tuple(k for k in keys if k not in claimed)
        if rest:
            layers.append(LayerSpec("rest", rest, tuple(range(self.n_positions))))
        return LayerMap(tuple(layers), mode)


_REGISTRY: dict[str, Callable[..., SearchSpace]] = {}


def register_space(name: str, factory: Callable[..., SearchSpace], replace: bool = False) -> None:
    """Make ``get_space(name, **kw)`` call ``factory(**kw)``; a taken name raises unless ``replace=True``
    (the rule ``register_policy`` follows), so two spaces never silently share a name."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"search space name must be a non-empty string, got {name!r}")
    if not callable(factory):
        raise TypeError(f"search space {name!r} needs a factory that builds it, got {factory!r}")
    if name in _REGISTRY and not replace:
        raise ValueError(f"search space name {name!r} is already registered; pass replace=True to replace it")
    _REGISTRY[name] = factory


def unregister_space(name: str) -> None:
    """Forget the space registered as ``name`` (KeyError naming it if none is)."""
    if name not in _REGISTRY:
        raise KeyError(f"no search space registered as {name!r}")
    del _REGISTRY[name]


def get_space(name: str | SearchSpace, **kw: Any) -> SearchSpace:
    """The space registered as ``name`` built with ``kw`` (a SearchSpace instance is returned as is)."""
    if isinstance(name, SearchSpace):
        return name
    if name not in _REGISTRY:
        raise ValueError(f"unknown search space {name!r}; known: {', '.join(sorted(_REGISTRY)) or 'none'}")
    return _REGISTRY[name](**kw)


def known_spaces() -> list[str]:
    """Names accepted by ``get_space``."""
    return sorted(_REGISTRY)
