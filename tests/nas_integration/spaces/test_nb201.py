"""NAS-Bench-201 space: strings, table indices, parameter counts against the table, layer maps."""
from __future__ import annotations

import csv
import itertools
import random
import time

import pytest
import torch

from nas_integration.data import nb201_table
from nas_integration.spaces import NB201Index, NB201Space, state_nbytes
from nas_integration.spaces.nb201 import OPS, arch_to_str
from tensorcache.tables import open_text

TABLE = nb201_table()  # the table shipped with the package
ALL = list(itertools.product(range(len(OPS)), repeat=6))


@pytest.fixture(scope="module")
def rows() -> dict[int, dict[str, str]]:
    with open_text(TABLE) as f:
        return {int(r["index"]): r for r in csv.DictReader(f)}


@pytest.fixture(scope="module")
def small() -> NB201Space:
    return NB201Space(C=4, N=1)


def test_strings_round_trip_for_every_architecture():
    space = NB201Space()
    assert space.encode("|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|none~0|avg_pool_3x3~1|"
                        "nor_conv_3x3~2|") == (3, 1, 2, 0, 4, 3)
    assert len({space.decode(a) for a in ALL}) == len(ALL)
    assert all(space.encode(space.decode(a)) == a for a in ALL)


@pytest.mark.parametrize("text, message", [
    ("|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|", "2 nodes"),
    ("|conv_5x5~0|+|skip_connect~0|nor_conv_1x1~1|+|none~0|none~1|none~2|", "unknown op 'conv_5x5'"),
    ("|none~0|+|none~0|+|none~0|none~1|none~2|", "node 2 .* has 1 inputs, expected 2"),
    ("|none~0|+|none~1|none~0|+|none~0|none~1|none~2|", "must read 'none~0'"),
    ("|none|+|none~0|none~1|+|none~0|none~1|none~2|", "must read 'none~0'"),
    ((0, 1, 2, 3, 4, 0), "expected an architecture string"),
])
def test_bad_strings_are_rejected_with_the_reason(text, message):
    with pytest.raises(ValueError, match=message):
        NB201Space().encode(text)


def test_table_index_is_not_closed_form_and_nb201index_maps_both_ways(rows):
    index = NB201Index.from_csv(TABLE)
    assert len(index) == 15625 == len(rows)
    for i in (0, 1, 9930, 15624):
        assert arch_to_str(index.arch(i)) == rows[i]["arch_str"]
        assert index.index(index.arch(i)) == i
    assert sorted(index.index(a) for a in ALL) == list(range(15625))
    # neither base-5 reading of the op tuple gives the table index
    assert any(index.index(a) != sum(v * 5 ** p for p, v in enumerate(a)) for a in ALL)
    assert any(index.index(a) != sum(v * 5 ** (5 - p) for p, v in enumerate(a)) for a in ALL)
    with pytest.raises(KeyError, match="index 15625"):
        index.arch(15625)


def test_nb201index_rejects_tables_without_the_columns(tmp_path):
    bad = tmp_path / "t.csv"
    bad.write_text("idx,arch\n0,x\n")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['arch_str', 'index'\]"):
        NB201Index.from_csv(bad)


@pytest.mark.parametrize("i", [0, 1, 2, 3, 9930, 6111, 15624])
def test_parameter_count_matches_the_table(rows, i):
    space = NB201Space()
    arch = space.encode(rows[i]["arch_str"])
    for classes, column in ((10, "c10_params_M"), (100, "c100_params_M")):
        model = space.meta_model(arch, num_classes=classes)
        params = sum(p.numel() for p in model.parameters())
        assert params / 1e6 == pytest.approx(float(rows[i][column]), rel=1e-4), (i, column)


def test_forward_shapes_and_none_edges(small):
    model = small.build((0, 3, 2, 1, 4, 0), num_classes=7, input_shape=(3, 16, 16))
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 7)
    grey = small.build((3,) * 6, num_classes=5, input_shape=(1, 12, 12))
    assert grey(torch.randn(3, 1, 12, 12)).shape == (3, 5)
    cell = small.build((0,) * 6, 10, (3, 8, 8)).cells[0]
    assert torch.count_nonzero(cell(torch.randn(1, 4, 8, 8))) == 0      # all-none cell outputs zeros
    with pytest.raises(ValueError, match="input_shape must be"):
        small.build((0,) * 6, 10, (784,))


@pytest.mark.parametrize("mode", ["prefix", "compatible"])
def test_every_state_entry_belongs_to_exactly_one_layer(mode):
    rng = random.Random(5)
    for space in (NB201Space(C=4, N=2), NB201Space()):
        for arch in [space.sample(rng) for _ in range(4)] + [(0,) * 6, (3,) * 6]:
            model = space.meta_model(arch)
            owned = [p for layer in space.layer_map(arch, mode).layers for p in layer.params]
            assert sorted(owned) == sorted(model.state_dict()), (arch, mode)


@pytest.mark.parametrize("mode", ["prefix", "compatible"])
def test_layer_nbytes_match_a_real_model(mode):
    space = NB201Space(C=8, N=2)
    for arch, classes, shape in [((3, 2, 1, 4, 0, 3), 10, (3, 32, 32)), ((2,) * 6, 100, (1, 28, 28)),
                                 ((0, 1, 4, 3, 3, 2), 5, (3, 32, 32))]:
        sizes = state_nbytes(space.build(arch, classes, shape))
        layers = space.layer_map(arch, mode).layers
        assert space.layer_nbytes(arch, mode, classes, shape) == [sum(sizes[p] for p in l.params) for l in layers]


def test_prefix_map_dependencies():
    space = NB201Space(C=4, N=2)
    arch = (3, 2, 1, 3, 0, 2)
    deps = {l.name: l.depends_on for l in space.layer_map(arch).layers}
    assert deps["stem"] == ()
    assert deps["cells.0.edges.0"] == (0,) and deps["cells.0.edges.3"] == (0, 1, 2, 3)
    assert "cells.0.edges.2" not in deps and "cells.0.edges.4" not in deps    # skip / none own nothing
    assert deps["cells.1"] == deps["cells.2"] == deps["head"] == tuple(range(6))
    assert list(deps) == ["stem", "cells.0.edges.0", "cells.0.edges.1", "cells.0.edges.3", "cells.0.edges.5",
                          "cells.1", "cells.2", "cells.3", "cells.4", "cells.5", "cells.6", "cells.7", "head"]
    # layers are ordered so prefix lengths never decrease (lookup takes an unbroken run from layer 0)
    lengths = [len(d) for d in deps.values()]
    assert lengths == sorted(lengths)


def test_compatible_map_dependencies():
    space = NB201Space(C=4, N=2)
    layers = {l.name: l for l in space.layer_map((3, 2, 1, 3, 0, 2), "compatible").layers}
    assert set(layers) == {"stem", "edge0", "edge1", "edge3", "edge5", "cells.2", "cells.5", "head"}
    assert layers["edge3"].depends_on == (3,)
    assert {p.split(".edges")[0] for p in layers["edge3"].params} == {f"cells.{k}" for k in (0, 1, 3, 4, 6, 7)}
    assert layers["stem"].depends_on == layers["cells.2"].depends_on == layers["head"].depends_on == ()


@pytest.mark.parametrize("mode", ["prefix", "compatible"])
def test_equal_layer_keys_imply_equal_shapes_and_compatible_keeps_most_bytes(mode):
    """A donor layer whose key matches the child's always fits; one-edge mutations keep most bytes."""
    space = NB201Space()
    rng = random.Random(7)
    kept = []
    for _ in range(25):
        parent = space.sample(rng)
        child, _ = space.mutate(parent, rng)
        pm, cm = space.layer_map(parent, mode), space.layer_map(child, mode)
        pkeys = dict(zip(pm.keys(space.name, parent), pm.layers))
        pshapes = {k: v.shape for k, v in space.meta_model(parent).state_dict().items()}
        cshapes = {k: v.shape for k, v in space.meta_model(child).state_dict().items()}
        shared = 0
        for key, layer, size in zip(cm.keys(space.name, child), cm.layers, space.layer_nbytes(child, mode)):
            if key in pkeys:
                assert pkeys[key].params == layer.params
                assert all(pshapes[p] == cshapes[p] for p in layer.params)
                shared += size
        kept.append(shared / sum(space.layer_nbytes(child, mode)))
    if mode == "compatible":
        assert sum(kept) / len(kept) > 0.6
    else:
        assert sum(kept) / len(kept) < 0.2       # a strict prefix keeps little in a cell space


def test_names_separate_sizes_and_layer_nbytes_is_fast():
    assert NB201Space().name == "nb201" and NB201Space(C=8, N=5).name != NB201Space(C=16, N=3).name
    space = NB201Space()
    start = time.perf_counter()
    for arch in ALL[:3000]:
        space.layer_nbytes(arch)
    assert time.perf_counter() - start < 3.0
