"""SearchSpace contract (validate, sample, mutate, caching), SequenceSpace, the registry, the doc example."""
from __future__ import annotations

import pickle
import random
import re
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch import nn

from nas_integration.spaces import (SearchSpace, SequenceSpace, get_space, known_spaces, register_space, state_nbytes,
                                   unregister_space)

DOC = Path(__file__).resolve().parents[3] / "docs" / "search_spaces.md"


def _mlp(arch, num_classes, input_shape):
    widths = [input_shape[0]] + [(8, 16, 32)[v] for v in arch]
    hidden = [nn.Sequential(nn.Linear(a, b), nn.BatchNorm1d(b)) for a, b in zip(widths, widths[1:])]
    return nn.Sequential(*hidden, nn.Linear(widths[-1], num_classes))


@pytest.fixture
def space() -> SequenceSpace:
    return SequenceSpace("toy", (3, 3, 1, 3), _mlp, input_shape=(5,))


def test_validate_accepts_int_like_values_and_names_what_is_wrong(space):
    assert space.validate([0, 2, 0, torch.tensor(1).item()]) == (0, 2, 0, 1)
    with pytest.raises(ValueError, match="length 3, expected 4"):
        space.validate((0, 0, 0))
    with pytest.raises(ValueError, match="position 1 holds 3, expected 0..2"):
        space.validate((0, 3, 0, 0))
    with pytest.raises(ValueError, match="position 3 holds -1"):
        space.validate((0, 0, 0, -1))
    with pytest.raises(ValueError, match="position 0 holds 1.0, not an int"):
        space.validate((1.0, 0, 0, 0))
    with pytest.raises(ValueError, match="position 2 holds True"):
        space.validate((0, 0, True, 0))
    with pytest.raises(ValueError, match="sequence of ints"):
        space.validate(7)


def test_sample_covers_every_value_of_every_position(space):
    rng = random.Random(1)
    seen = [set() for _ in space.choices]
    for _ in range(200):
        for pos, value in enumerate(space.sample(rng)):
            seen[pos].add(value)
    assert seen == [set(range(n)) for n in space.choices]


def test_mutate_changes_exactly_one_movable_position(space):
    rng = random.Random(2)
    arch = space.sample(rng)
    for _ in range(300):
        child, pos = space.mutate(arch, rng)
        diff = [i for i in range(space.n_positions) if child[i] != arch[i]]
        assert diff == [pos] and pos != 2          # position 2 has a single choice
        space.validate(child)
        arch = child


def test_mutate_bias_tilts_positions_toward_the_end():
    space = SequenceSpace("flat", (4,) * 8, _mlp, input_shape=(5,))
    rng = random.Random(3)
    arch = (0,) * 8
    uniform = Counter(space.mutate(arch, rng)[1] for _ in range(4000))
    tilted = Counter(space.mutate(arch, rng, bias=2.0)[1] for _ in range(4000))
    assert max(uniform.values()) < 1.3 * min(uniform.values())
    # weights (i+1)**2: position 7 is 64 times as likely as position 0
    assert tilted[7] > 20 * max(tilted[0], 1)
    assert sum(tilted[i] for i in range(4, 8)) > 3 * sum(tilted[i] for i in range(4))


def test_mutate_needs_a_movable_position():
    space = SequenceSpace("fixed", (1, 1), _mlp, input_shape=(5,))
    with pytest.raises(ValueError, match="nothing to mutate"):
        space.mutate((0, 0), random.Random(0))


def test_sequence_layer_map_owns_every_entry_with_prefix_deps(space):
    arch = (2, 0, 0, 1)
    model = space.build(arch, 3, (5,))
    layers = space.layer_map(arch)
    assert [l.name for l in layers.layers] == ["0", "1", "2", "3", "rest"]
    assert [l.depends_on for l in layers.layers] == [(0,), (0, 1), (0, 1, 2), (0, 1, 2, 3), (0, 1, 2, 3)]
    owned = [p for l in layers.layers for p in l.params]
    assert sorted(owned) == sorted(model.state_dict())       # BN buffers included, each exactly once
    sizes = state_nbytes(model)
    assert space.layer_nbytes(arch, num_classes=3) == [sum(sizes[p] for p in l.params) for l in layers.layers]
    assert space.layer_map(arch, "compatible").layers[1].depends_on == (0, 1)   # default: the prefix


def test_sequence_space_skips_positions_without_tensors_and_uses_custom_names():
    def build(arch, num_classes, input_shape):
        model = nn.Module()
        model.body = nn.Linear(input_shape[0], 4)
        model.act = nn.ReLU() if arch[0] else nn.Tanh()
        model.out = nn.Linear(4, num_classes)
        return model

    space = SequenceSpace("named", (2, 2), build, (3,), layer_names=("act", "body"),
                          compatible_deps=lambda i: (i,))
    layers = space.layer_map((1, 0), "compatible")
    assert [(l.name, l.depends_on) for l in layers.layers] == [("body", (1,)), ("rest", (0, 1))]
    assert layers.layers[1].params == ("out.weight", "out.bias")


def test_layer_map_and_nbytes_are_cached_and_reject_bad_modes(space):
    assert space.layer_map((1, 1, 0, 1)) is space.layer_map([1, 1, 0, 1])
    with pytest.raises(ValueError, match="unknown transfer mode 'suffix'"):
        space.layer_map((1, 1, 0, 1), "suffix")
    with pytest.raises(ValueError, match="unknown transfer mode"):
        space.layer_nbytes((1, 1, 0, 1), "suffix")
    sizes = space.layer_nbytes((1, 1, 0, 1))
    sizes.append(-1)                                   # callers get a copy, never the cached value
    assert space.layer_nbytes((1, 1, 0, 1))[-1] != -1


def test_sequence_space_rejects_inconsistent_definitions():
    with pytest.raises(ValueError, match="2 layer names for 3 positions"):
        SequenceSpace("bad", (2, 2, 2), _mlp, (5,), layer_names=("a", "b"))
    with pytest.raises(ValueError, match="at least one choice"):
        SequenceSpace("bad", (2, 0), _mlp, (5,))


@pytest.fixture
def registry():
    """Unregisters every space a test registers, so no test leaves the global registry changed."""
    before = set(known_spaces())
    yield
    for name in set(known_spaces()) - before:
        unregister_space(name)
    assert set(known_spaces()) == before


def test_registry_resolves_names_and_lists_known_ones(registry):
    assert {"nb201", "attn"} <= set(known_spaces())
    assert get_space("nb201", C=8, N=1).name == "nb201-C8-N1"
    space = get_space("attn")
    assert get_space(space) is space and isinstance(space, SearchSpace)
    with pytest.raises(ValueError, match=r"unknown search space 'nb202'; known: .*attn.*nb201"):
        get_space("nb202")
    register_space("toy-registry", lambda width=3: SequenceSpace("toy-registry", (width,), _mlp, (5,)))
    assert get_space("toy-registry", width=2).choices == (2,)


def test_a_taken_space_name_raises_unless_replaced(registry):
    register_space("toy-dup", lambda: SequenceSpace("toy-dup", (2,), _mlp, (5,)))
    with pytest.raises(ValueError, match="'toy-dup' is already registered; pass replace=True"):
        register_space("toy-dup", lambda: SequenceSpace("other", (3,), _mlp, (5,)))
    assert get_space("toy-dup").choices == (2,)
    register_space("toy-dup", lambda: SequenceSpace("other", (3,), _mlp, (5,)), replace=True)
    assert get_space("toy-dup").choices == (3,)
    with pytest.raises(ValueError, match="'nb201' is already registered"):
        register_space("nb201", lambda: SequenceSpace("x", (2,), _mlp, (5,)))
    with pytest.raises(TypeError, match="factory"):
        register_space("toy-none", None)
    with pytest.raises(KeyError, match="toy-never"):
        unregister_space("toy-never")


def test_documentation_example_runs(registry):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert blocks, f"no python example in {DOC}"
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), {})
    assert get_space("mlp3").n_positions == 3


@pytest.mark.parametrize("name", ["nb201", "attn"])
def test_spaces_pickle_with_warm_caches(name):
    space = get_space(name)
    arch = space.sample(random.Random(0))
    sizes = space.layer_nbytes(arch)
    copy = pickle.loads(pickle.dumps(space))
    assert copy.name == space.name and copy.layer_nbytes(arch) == sizes
    assert copy.layer_map(arch) == space.layer_map(arch)
