"""NAS-Bench-201 cell space: six edges, five ops, the standard macro skeleton and its layer maps.

Position e of an architecture is the op on edge e, edges in the standard order (node1<-0, node2<-0,
node2<-1, node3<-0, node3<-1, node3<-2), ops indexed as in ``OPS``. The native form is the standard
string ``|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|...|``. NAS-Bench-201 table indices are not a
closed-form enumeration of the ops, so ``NB201Index.from_csv`` maps them both ways from a table.
"""
from __future__ import annotations

import csv
from collections.abc import Sequence
from functools import lru_cache
from os import PathLike

import torch
from torch import Tensor, nn

from tensorcache.layers import LayerMap, LayerSpec
from tensorcache.tables import open_text

from .base import Arch, SearchSpace, state_nbytes

OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EDGES: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))  # (node, source)
_Key = tuple  # a hashable recipe for one module, see _make


def arch_to_str(arch: Sequence[int]) -> str:
    """The standard NAS-Bench-201 string of a (valid) 6-op sequence."""
    nodes = []
    for node in (1, 2, 3):
        nodes.append("|".join(f"{OPS[arch[e]]}~{src}" for e, (dst, src) in enumerate(EDGES) if dst == node))
    return "|" + "|+|".join(nodes) + "|"


def str_to_arch(text: str) -> Arch:
    """Parse the standard string; raise ValueError naming what is wrong."""
    if not isinstance(text, str):
        raise ValueError(f"nb201: expected an architecture string like '|nor_conv_3x3~0|+|...|', got {text!r}")
    nodes = text.strip().strip("|").split("|+|")
    if len(nodes) != 3:
        raise ValueError(f"nb201: {text!r} has {len(nodes)} nodes separated by '+', expected 3")
    arch = []
    for node, chunk in enumerate(nodes, start=1):
        edges = chunk.split("|")
        if len(edges) != node:
            raise ValueError(f"nb201: node {node} of {text!r} has {len(edges)} inputs, expected {node}")
        for src, edge in enumerate(edges):
            op, sep, source = edge.partition("~")
            if op not in OPS:
                raise ValueError(f"nb201: unknown op {op!r} in {text!r}; expected one of {OPS}")
            if sep != "~" or source != str(src):
                raise ValueError(f"nb201: edge {edge!r} of node {node} in {text!r} must read '{op}~{src}'")
            arch.append(OPS.index(op))
    return tuple(arch)


class NB201Index:
    """NAS-Bench-201 table index <-> architecture, read from a table with ``index`` and ``arch_str``."""

    def __init__(self, archs: dict[int, Arch]) -> None:
        self._arch = dict(archs)
        self._index = {arch: i for i, arch in self._arch.items()}
        if len(self._index) != len(self._arch):
            raise ValueError("NB201Index: two indices name the same architecture")

    @classmethod
    def from_csv(cls, path: str | PathLike, index_col: str = "index", arch_col: str = "arch_str") -> NB201Index:
        with open_text(path) as f:
            reader = csv.DictReader(f)
            missing = {index_col, arch_col} - set(reader.fieldnames or ())
            if missing:
                raise ValueError(f"{path}: missing column(s) {sorted(missing)}")
            return cls({int(row[index_col]): str_to_arch(row[arch_col]) for row in reader})

    def arch(self, index: int) -> Arch:
        if index not in self._arch:
            raise KeyError(f"NAS-Bench-201 index {index} is not in this table ({len(self)} entries)")
        return self._arch[index]

    def index(self, arch: Sequence[int]) -> int:
        key = tuple(arch)
        if key not in self._index:
            raise KeyError(f"architecture {key} is not in this table")
        return self._index[key]

    def __len__(self) -> int:
        return len(self._arch)


class ReLUConvBN(nn.Sequential):
    """ReLU, convolution without bias, affine batch norm."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1) -> None:
        super().__init__(nn.ReLU(), nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False),
                         nn.BatchNorm2d(c_out))


class Zero(nn.Module):
    """The ``none`` op: an all-zero output of the input's shape."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mul(0.0)


class Cell(nn.Module):
    """Node 0 is the input; each later node sums its incoming edges; node 3 is the output."""

    def __init__(self, arch: Arch, channels: int) -> None:
        super().__init__()
        self.edges = nn.ModuleList(_make(("op", OPS[v], channels)) for v in arch)

    def forward(self, x: Tensor) -> Tensor:
        nodes = [x]
        for node in (1, 2, 3):
            nodes.append(sum(op(nodes[src]) for op, (dst, src) in zip(self.edges, EDGES) if dst == node))
        return nodes[3]


class Reduction(nn.Module):
    """Residual basic block that halves the resolution and doubles the channels."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(channels, 2 * channels, 3, stride=2)
        self.conv_b = ReLUConvBN(2 * channels, 2 * channels, 3)
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(channels, 2 * channels, 1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_b(self.conv_a(x)) + self.shortcut(x)


def _make(key: _Key) -> nn.Module:
    """Build the module a recipe names; the model and the byte tables both use this."""
    kind, *args = key
    if kind == "op":
        name, c = args
        return {"none": Zero, "skip_connect": nn.Identity,
                "nor_conv_1x1": lambda: ReLUConvBN(c, c, 1), "nor_conv_3x3": lambda: ReLUConvBN(c, c, 3),
                "avg_pool_3x3": lambda: nn.AvgPool2d(3, 1, 1, count_include_pad=False)}[name]()
    if kind == "stem":
        c_in, c = args
        return nn.Sequential(nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
    if kind == "reduce":
        return Reduction(*args)
    if kind == "head":
        c, num_classes = args
        return nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(c, num_classes))
    raise AssertionError(f"unknown module recipe {key!r}")


@lru_cache(maxsize=None)
def _template(key: _Key) -> tuple[tuple[str, ...], int]:
    """State-dict suffixes and total bytes of the module a recipe names (measured once on meta)."""
    with torch.device("meta"):
        sizes = state_nbytes(_make(key))
    return tuple(sizes), sum(sizes.values())


class NB201Net(nn.Module):
    """Stem, three stages of ``n`` cells with residual reductions between them, BN-ReLU-pool-linear head."""

    def __init__(self, arch: Arch, channels: int, n: int, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.stem = _make(("stem", in_channels, channels))
        blocks: list[nn.Module] = []
        for kind, c in _stages(channels, n):
            blocks.append(Cell(arch, c) if kind == "cell" else _make(("reduce", c)))
        self.cells = nn.ModuleList(blocks)
        self.head = _make(("head", channels * 4, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for block in self.cells:
            x = block(x)
        return self.head(x)


def _stages(channels: int, n: int) -> list[tuple[str, int]]:
    """``(kind, input channels)`` of each entry of ``NB201Net.cells``."""
    out = []
    for stage in range(3):
        if stage:
            out.append(("reduce", channels))
            channels *= 2
        out += [("cell", channels)] * n
    return out


class NB201Space(SearchSpace):
    """The NAS-Bench-201 space at width ``C`` (first-stage channels) with ``N`` cells per stage.

    Layer maps (only layers that own tensors are listed):

    * ``prefix``: ``stem`` depends on nothing; edge e of the first cell (``cells.0.edges.e``) depends on
      positions 0..e (its op and, through its source node, a subset of the earlier edges); every later
      block (``cells.k``) and the ``head`` see the first cell's output and so depend on all six.
    * ``compatible``: ``edge{e}`` holds edge e's op in every cell and depends on position e only;
      ``stem``, the reductions (``cells.k``) and the ``head`` depend on nothing.
    """

    input_shape = (3, 32, 32)
    transfer = "compatible"  # a strict prefix ends at the first cell: almost nothing transfers (see above)

    def __init__(self, C: int = 16, N: int = 5) -> None:
        if C < 1 or N < 1:
            raise ValueError(f"nb201: C and N must be positive, got C={C}, N={N}")
        self.C, self.N = C, N
        self.name = "nb201" if (C, N) == (16, 5) else f"nb201-C{C}-N{N}"
        self.choices = (len(OPS),) * len(EDGES)

    def encode(self, native: str) -> Arch:
        return str_to_arch(native)

    def decode(self, arch: Sequence[int]) -> str:
        return arch_to_str(self.validate(arch))

    def build(self, arch: Sequence[int], num_classes: int = 10,
              input_shape: tuple[int, ...] = (3, 32, 32)) -> NB201Net:
        if len(input_shape) != 3:
            raise ValueError(f"nb201: input_shape must be (channels, height, width), got {input_shape}")
        return NB201Net(self.validate(arch), self.C, self.N, num_classes, input_shape[0])

    def make_layer_map(self, arch: Arch, mode: str) -> LayerMap:
        layers = []
        for name, deps, recipes in self._groups(arch, mode, 3, 10):
            params = tuple(f"{path}.{s}" for path, key in recipes for s in _template(key)[0])
            if params:
                layers.append(LayerSpec(name, params, deps))
        return LayerMap(tuple(layers), mode)

    def make_layer_nbytes(self, arch: Arch, mode: str, num_classes: int,
                          input_shape: tuple[int, ...]) -> tuple[int, ...]:
        sizes = (sum(_template(key)[1] for _, key in recipes)
                 for _, _, recipes in self._groups(arch, mode, input_shape[0], num_classes))
        return tuple(n for n in sizes if n)

    def _groups(self, arch: Arch, mode: str, in_channels: int,
                num_classes: int) -> list[tuple[str, tuple[int, ...], list[tuple[str, _Key]]]]:
        """``(layer name, depends_on, [(module path, recipe), ...])`` for every candidate layer, in order."""
        everything = tuple(range(len(EDGES)))
        stem = ("stem", ("stem", in_channels, self.C))
        head = ("head", ("head", self.C * 4, num_classes))
        blocks = _stages(self.C, self.N)

        def edges(k: int, c: int) -> list[tuple[str, _Key]]:
            return [(f"cells.{k}.edges.{e}", ("op", OPS[v], c)) for e, v in enumerate(arch)]

        groups = [("stem", (), [stem])]
        if mode == "prefix":
            groups += [(path, everything[:e + 1], [(path, key)]) for e, (path, key) in enumerate(edges(0, self.C))]
            for k, (kind, c) in enumerate(blocks[1:], start=1):
                recipes = edges(k, c) if kind == "cell" else [(f"cells.{k}", ("reduce", c))]
                groups.append((f"cells.{k}", everything, recipes))
            groups.append(("head", everything, [head]))
        else:
            per_cell = [edges(k, c) for k, (kind, c) in enumerate(blocks) if kind == "cell"]
            groups += [(f"edge{e}", (e,), [cell[e] for cell in per_cell]) for e in everything]
            groups += [(f"cells.{k}", (), [(f"cells.{k}", ("reduce", c))])
                       for k, (kind, c) in enumerate(blocks) if kind == "reduce"]
            groups.append(("head", (), [head]))
        return groups
