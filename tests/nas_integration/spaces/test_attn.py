"""Attn-style dense space: positions, models, layer maps and their dependencies."""
from __future__ import annotations

import random
import time

import pytest
import torch

from nas_integration.spaces import AttnSpace, state_nbytes
from nas_integration.spaces.attn import ACTIVATIONS, CANDLE_UNITS


@pytest.fixture(scope="module")
def space() -> AttnSpace:
    return AttnSpace()


def test_positions_follow_nodes_ops_and_anchors(space):
    ops = 1 + 19 * 5
    assert space.choices == (ops, 2) + (ops, 2, 2) + (ops, 2, 2, 2) * 4
    assert space.op_pos == [0, 2, 5, 9, 13, 17]
    assert list(space.skip_pos[0]) == ["input"] and list(space.skip_pos[4]) == ["node1", "node2", "node3"]
    assert space.op(0) is None and space.op(1) == (50, "none") and space.op(ops - 1) == (500, "sigmoid")
    candle = AttnSpace(units=CANDLE_UNITS)
    assert candle.choices[0] == 1 + 79 * len(ACTIVATIONS) and candle.name != space.name == "attn"
    assert AttnSpace(nodes=3, max_skip=0).choices == (ops,) * 3


def test_bad_configurations_are_rejected():
    with pytest.raises(ValueError, match="unknown activation"):
        AttnSpace(activations=("relu", "gelu6"))
    with pytest.raises(ValueError, match="nodes >= 1"):
        AttnSpace(nodes=0)


def _arch(space, ops, skips):
    """Architecture from per-node op values and per-node sets of connected anchors."""
    arch = [0] * space.n_positions
    for i, value in enumerate(ops):
        arch[space.op_pos[i]] = value
        for anchor in skips.get(i, ()):
            arch[space.skip_pos[i][anchor]] = 1
    return tuple(arch)


def test_model_computes_the_documented_graph():
    space = AttnSpace(nodes=3, units=(4, 6), activations=("none", "relu"))
    # node0 Dense(4, none), node1 identity + residual from node0, node2 Dense(6, relu) + skip from input
    arch = _arch(space, [1, 0, 4], {1: ["node0"], 2: ["input"]})
    model = space.build(arch, num_classes=3, input_shape=(5,))
    x = torch.randn(2, 5)
    n0 = model.nodes[0].op(x)
    n1 = n0 + n0
    n2 = torch.relu(model.nodes[2].op(n1)) + model.nodes[2].proj["input"](x)
    torch.testing.assert_close(model(x), model.head(n2))
    assert set(model.nodes[1].proj) == set() and model.nodes[2].proj["input"].bias is None


@pytest.mark.parametrize("mode", ["prefix", "compatible"])
def test_layers_own_every_entry_and_nbytes_match_a_real_model(space, mode):
    rng = random.Random(11)
    for arch in [space.sample(rng) for _ in range(6)] + [(0,) * space.n_positions]:
        model = space.build(arch, num_classes=10, input_shape=(1, 28, 28))
        assert model(torch.rand(4, 1, 28, 28)).shape == (4, 10)
        sizes = state_nbytes(model)
        layers = space.layer_map(arch, mode).layers
        assert sorted(p for l in layers for p in l.params) == sorted(sizes)
        assert space.layer_nbytes(arch, mode) == [sum(sizes[p] for p in l.params) for l in layers]
    assert space.layer_nbytes((0,) * space.n_positions, mode, num_classes=3, input_shape=(7,)) == [(7 * 3 + 3) * 4]


def test_prefix_dependencies_end_at_the_position_that_creates_the_layer(space):
    ops = [5, 0, 30, 0, 12, 40]
    arch = _arch(space, ops, {2: ["node0", "node1"], 4: ["node3"]})
    deps = {l.name: l.depends_on for l in space.layer_map(arch).layers}
    assert deps["node0.op"] == (0,)
    assert deps["node2.op"] == tuple(range(6))
    assert deps["node2.proj.node0"] == tuple(range(space.skip_pos[2]["node0"] + 1))
    assert deps["head"] == tuple(range(space.n_positions))
    lengths = [len(d) for d in deps.values()]
    assert lengths == sorted(lengths) and all(d == tuple(range(len(d))) for d in deps.values())


def test_compatible_dependencies_follow_widths(space):
    arch = _arch(space, [5, 0, 30, 0, 0, 40], {2: ["input"], 4: ["node2"], 5: ["node2"]})
    deps = {l.name: l.depends_on for l in space.layer_map(arch, "compatible").layers}
    assert deps["node0.op"] == (0,)
    assert deps["node2.op"] == (0, 2, 5)          # input width: node0's Dense through identity node1
    assert deps["node5.op"] == (5, 9, 13, 17)     # input width: node2's Dense through identities 3, 4
    assert deps["node2.proj.input"] == (5, 6)     # the input's width is fixed
    assert "node4.proj.node2" not in deps         # same width: plain add, nothing to own
    assert deps["node5.proj.node2"] == (5, 17, 18)   # skip position + both widths
    assert deps["head"] == (17,)


@pytest.mark.parametrize("mode", ["prefix", "compatible"])
def test_equal_layer_keys_imply_equal_shapes(space, mode):
    rng = random.Random(13)
    hits = 0
    for _ in range(150):
        parent = space.sample(rng)
        child, _ = space.mutate(parent, rng, bias=1.0)
        if rng.random() < 0.5:
            child, _ = space.mutate(child, rng)
        pm, cm = space.layer_map(parent, mode), space.layer_map(child, mode)
        pkeys = dict(zip(pm.keys(space.name, parent), pm.layers))
        pshapes = {k: v.shape for k, v in space.meta_model(parent).state_dict().items()}
        cshapes = {k: v.shape for k, v in space.meta_model(child).state_dict().items()}
        for key, layer in zip(cm.keys(space.name, child), cm.layers):
            if key in pkeys:
                hits += 1
                assert pkeys[key].params == layer.params
                assert all(pshapes[p] == cshapes[p] for p in layer.params), (parent, child, layer.name)
    assert hits > 150


def test_layer_nbytes_is_fast(space):
    rng = random.Random(17)
    archs = [space.sample(rng) for _ in range(3000)]
    start = time.perf_counter()
    for arch in archs:
        space.layer_nbytes(arch)
    assert time.perf_counter() - start < 3.0
