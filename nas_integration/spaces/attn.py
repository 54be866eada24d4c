"""A dense space with skip connections, modelled on the CANDLE Attn search space of the study.

``K`` variable nodes run in a chain on a flat input. Node i has one op position (0 = identity,
1.. = Dense(units, activation) over every pair of ``units`` x ``ACTIVATIONS``), then one 0/1 position per
anchor among the last ``max_skip`` earlier outputs (the input counts as the first anchor; the newest
anchor is node i's own input, so connecting it makes a residual). Connected anchors are added to the
node's output, through a bias-free linear projection when their width differs. A linear head gives
logits (softmax and cross-entropy belong to the loss). The original Attn data is not public here; any
flat input works, e.g. MNIST pixels.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from math import prod

from torch import Tensor, nn

from tensorcache.layers import LayerMap, LayerSpec

from .base import Arch, SearchSpace

ACTIVATIONS: tuple[str, ...] = ("none", "swish", "relu", "tanh", "sigmoid")
_ACTIVATION_MODULES = {"none": nn.Identity, "swish": nn.SiLU, "relu": nn.ReLU, "tanh": nn.Tanh,
                       "sigmoid": nn.Sigmoid}
CANDLE_UNITS = range(50, 2001, 25)   # the original Attn space; the default is a CPU-friendly slice
_FLOAT = 4


class Dense(nn.Linear):
    """A linear layer followed by its activation."""

    def __init__(self, in_features: int, units: int, activation: str) -> None:
        super().__init__(in_features, units)
        self.activation = _ACTIVATION_MODULES[activation]()

    def forward(self, x: Tensor) -> Tensor:
        return self.activation(super().forward(x))


class AttnNode(nn.Module):
    """One variable node: its op plus projections of the skip inputs whose width differs."""

    def __init__(self, op: nn.Module, skips: tuple[str, ...], projections: dict[str, tuple[int, int]]) -> None:
        super().__init__()
        self.op = op
        self.skips = skips
        self.proj = nn.ModuleDict({a: nn.Linear(i, o, bias=False) for a, (i, o) in projections.items()})

    def forward(self, x: Tensor, anchors: dict[str, Tensor]) -> Tensor:
        y = self.op(x)
        for a in self.skips:
            y = y + (self.proj[a](anchors[a]) if a in self.proj else anchors[a])
        return y


class AttnNet(nn.Module):
    """Flatten, the chain of nodes, linear head."""

    def __init__(self, nodes: list[AttnNode], head_in: int, num_classes: int) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.nodes = nn.ModuleList(nodes)
        self.head = nn.Linear(head_in, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.flatten(x)
        anchors = {"input": x}
        for i, node in enumerate(self.nodes):
            x = node(x, anchors)
            anchors[f"node{i}"] = x
        return self.head(x)


@dataclass(frozen=True)
class _Part:
    """One candidate layer: name, module path, (in, out, bias) of its linear map, deps in both modes."""

    name: str
    path: str
    shape: tuple[int, int, bool]
    prefix: tuple[int, ...]
    compatible: tuple[int, ...]


class AttnSpace(SearchSpace):
    """``nodes`` variable nodes, Dense widths from ``units``, skips to the last ``max_skip`` anchors.

    Layer maps (one layer per Dense op, per projection, and the head):

    * ``prefix``: a node's Dense depends on positions up to its op position, a projection on positions up
      to its skip position (everything that decides their inputs comes earlier); the head on all.
    * ``compatible``: a Dense depends on its op position plus the op positions that decide its input
      width (back to the nearest earlier Dense; all earlier ones if only identities precede it); a
      projection on its skip position plus the positions deciding both widths; the head on the positions
      deciding the last node's width.
    """

    input_shape = (784,)

    def __init__(self, nodes: int = 6, units: Sequence[int] = range(50, 501, 25),
                 activations: Sequence[str] = ACTIVATIONS, max_skip: int = 3) -> None:
        if nodes < 1 or max_skip < 0 or not units:
            raise ValueError(f"attn: need nodes >= 1, max_skip >= 0 and some units; got {nodes}, {max_skip}, {units}")
        unknown = [a for a in activations if a not in _ACTIVATION_MODULES]
        if unknown or not activations:
            raise ValueError(f"attn: unknown activation(s) {unknown}; expected some of {ACTIVATIONS}")
        self.k, self.units, self.activations, self.max_skip = nodes, tuple(units), tuple(activations), max_skip
        default = (nodes, self.units, self.activations, max_skip) == (6, tuple(range(50, 501, 25)), ACTIVATIONS, 3)
        self.name = "attn" if default else (
            f"attn-K{nodes}-u{self.units[0]}..{self.units[-1]}x{len(self.units)}-a{len(self.activations)}-s{max_skip}")
        choices, self.op_pos, self.skip_pos = [], [], []
        for i in range(nodes):
            self.op_pos.append(len(choices))
            choices.append(1 + len(self.units) * len(self.activations))
            anchors = (["input"] + [f"node{j}" for j in range(i)])[-max_skip:] if max_skip else []
            self.skip_pos.append({a: len(choices) + n for n, a in enumerate(anchors)})
            choices += [2] * len(anchors)
        self.choices = tuple(choices)

    def op(self, value: int) -> tuple[int, str] | None:
        """``(units, activation)`` of an op value, or None for identity."""
        if value == 0:
            return None
        units, act = divmod(value - 1, len(self.activations))
        return self.units[units], self.activations[act]

    def build(self, arch: Sequence[int], num_classes: int = 10, input_shape: tuple[int, ...] = (784,)) -> AttnNet:
        arch = self.validate(arch)
        *node_parts, (head,) = self._parts(arch, prod(input_shape), num_classes)
        nodes = []
        for i, parts in enumerate(node_parts):
            op = self.op(arch[self.op_pos[i]])
            layer = nn.Identity() if op is None else Dense(parts[0].shape[0], *op)
            skips = tuple(a for a, pos in self.skip_pos[i].items() if arch[pos])
            projections = {p.path.rsplit(".", 1)[1]: p.shape[:2] for p in parts if ".proj." in p.path}
            nodes.append(AttnNode(layer, skips, projections))
        return AttnNet(nodes, head.shape[0], num_classes)

    def make_layer_map(self, arch: Arch, mode: str) -> LayerMap:
        layers = []
        for part in (p for parts in self._parts(arch, prod(self.input_shape), 10) for p in parts):
            params = (f"{part.path}.weight", f"{part.path}.bias") if part.shape[2] else (f"{part.path}.weight",)
            layers.append(LayerSpec(part.name, params, part.prefix if mode == "prefix" else part.compatible))
        return LayerMap(tuple(layers), mode)

    def make_layer_nbytes(self, arch: Arch, mode: str, num_classes: int,
                          input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple((i * o + o * bias) * _FLOAT for parts in self._parts(arch, prod(input_shape), num_classes)
                     for i, o, bias in (p.shape for p in parts))

    def _parts(self, arch: Arch, in_width: int, num_classes: int) -> list[list[_Part]]:
        """Candidate layers per node (then ``[head]``), with widths and dependencies of each."""
        width = {"input": in_width}
        decided = {"input": ()}          # op positions that decide each anchor's width
        prev = "input"
        out = []
        for i in range(self.k):
            pos = self.op_pos[i]
            op = self.op(arch[pos])
            parts = []
            if op is None:
                width[f"node{i}"], decided[f"node{i}"] = width[prev], decided[prev] + (pos,)
            else:
                width[f"node{i}"], decided[f"node{i}"] = op[0], (pos,)
                parts.append(_Part(f"node{i}.op", f"nodes.{i}.op", (width[prev], op[0], True),
                                   tuple(range(pos + 1)), tuple(sorted(decided[prev] + (pos,)))))
            me = f"node{i}"
            for a, spos in self.skip_pos[i].items():
                if arch[spos] and width[a] != width[me]:
                    parts.append(_Part(f"{me}.proj.{a}", f"nodes.{i}.proj.{a}", (width[a], width[me], False),
                                       tuple(range(spos + 1)), tuple(sorted({spos, *decided[a], *decided[me]}))))
            out.append(parts)
            prev = me
        out.append([_Part("head", "head", (width[prev], num_classes, True), tuple(range(self.n_positions)),
                          tuple(sorted(decided[prev])))])
        return out
