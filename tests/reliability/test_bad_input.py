"""Bad user input: a clear error naming the bad value, raised before any work (nothing stored, no file made)."""
from __future__ import annotations

import random
import re

import numpy as np
import pytest
import torch
from torch import nn

from nas_integration.data import nb201_table
from nas_integration.cli import main as run_search_main
from nas_integration.spaces import get_space
from tensorcache import LayerMap, LayerSpec, TensorCache, TransferError

TABLE = str(nb201_table())  # the table shipped with the package


@pytest.mark.parametrize("space, arch, named", [
    ("nb201", (0, 1, 2, 3), "length 4, expected 6"),
    ("nb201", (0, 1, 2, 3, 4, 5), "position 5 holds 5, expected 0..4"),
    ("nb201", (0, 1, -1, 3, 4, 0), "position 2 holds -1"),
    ("nb201", (0, 1, "2", 3, 4, 0), "position 2 holds '2', not an int"),
    ("nb201", (0, 1, 2.0, 3, 4, 0), "position 2 holds 2.0, not an int"),
    ("nb201", 7, "must be a sequence of ints, got 7"),
    ("attn", (99,), "expected"),
])
def test_a_space_names_the_bad_position_and_value(space, arch, named):
    s = get_space(space)
    with pytest.raises(ValueError, match=re.escape(named)):
        s.validate(arch)
    with pytest.raises(ValueError, match=re.escape(named)):
        s.layer_map(arch)
    with pytest.raises(ValueError, match=re.escape(named)):
        s.mutate(arch, random.Random(0))


@pytest.mark.parametrize("arch, named", [
    ([1, -2], "[1, -2]"), ([0.5, 1], "[0.5, 1]"), ("abc", "'abc'"), ([], "[]"), (None, "None"),
    ([1, "x"], "[1, 'x']"),
])
def test_the_cache_names_a_bad_architecture_and_stores_nothing(tmp_path, arch, named, layers_of):
    cache = TensorCache(memory="1MB", disk=tmp_path / "c.lmdb")
    with pytest.raises(ValueError, match=re.escape(named)):
        cache.put("m1", arch, layers_of(1, 2))
    with pytest.raises(ValueError, match=re.escape(named)):
        cache.lookup(arch)
    stats = cache.stats()
    assert stats["puts"] == stats["lookups"] == stats["bytes_stored"] == stats["models"] == 0
    assert all(tier["used_bytes"] == 0 for tier in stats["tiers"].values())
    cache.close()


def test_bad_layers_are_named_and_nothing_is_stored(layers_of):
    cache = TensorCache(memory="1MB")
    with pytest.raises(ValueError, match="got 3 layer dicts for a layer map of 2 layers"):
        cache.put("m1", (1, 2), layers_of(1, 3))
    with pytest.raises(TypeError, match="uint32"):
        cache.put("m1", (1, 2), [{"w0": np.zeros(4, np.float32)}, {"w1": np.zeros(4, np.uint32)}])
    with pytest.raises(TypeError, match="list"):
        cache.put("m1", (1, 2), [{"w0": np.zeros(4, np.float32)}, {"w1": [0.0, 1.0]}])
    with pytest.raises(ValueError, match="1.bias"):
        cache.put("m1", (1, 2), {"0.weight": torch.zeros(2)}, layer_map=_two_linear_map())
    with pytest.raises(ValueError, match="model_id must be a non-empty string, got ''"):
        cache.put("", (1, 2), layers_of(1, 2))
    stats = cache.stats()
    assert stats["models"] == stats["bytes_stored"] == stats["tiers"]["memory"]["used_bytes"] == 0
    assert cache.lookup((1, 2)) is None


@pytest.mark.parametrize("kwargs, named", [
    ({"policy": "nope"}, "unknown policy 'nope'"),
    ({"policy": "lru", "policy_options": {"bogus": 1}}, "'bogus'"),
    ({"policy": "donor-window", "policy_options": {"window": -1}}, "got -1"),
    ({"memory": "2GiBx"}, "bad memory size: '2GiBx'"),
    ({"disk_capacity": "20 gigs"}, "bad disk capacity: '20 gigs'"),
    ({"redis_capacity": "-1GB"}, "bad redis capacity: '-1GB'"),
    ({"namespace": ""}, "namespace must be a non-empty string, got ''"),
])
def test_bad_settings_are_named_before_any_file_is_made(tmp_path, kwargs, named):
    disk = tmp_path / "cache.lmdb"
    with pytest.raises((ValueError, TypeError), match=re.escape(named)):
        TensorCache(**{"memory": "1MB", "disk": disk, **kwargs})
    assert not disk.exists(), "the LMDB tier was opened before the settings were checked"


def test_unknown_space_and_transfer_mode_are_named():
    with pytest.raises(ValueError, match="unknown search space 'nb301'; known: .*attn.*nb201"):
        get_space("nb301")
    with pytest.raises(ValueError, match="unknown transfer mode 'sideways'"):
        LayerMap((), mode="sideways")
    with pytest.raises(ValueError, match="unknown transfer mode 'sideways'"):
        get_space("nb201").layer_map((0,) * 6, mode="sideways")


@pytest.mark.parametrize("flag, value, named", [
    ("--memory", "2GiBx", "bad memory size: '2GiBx'"),
    ("--policy", "nope", "unknown policy 'nope'"),
    ("--space", "nope", "invalid choice: 'nope'"),
    ("--evals", "-3", "-3"),
])
def test_run_search_names_a_bad_option_and_runs_nothing(tmp_path, capsys, flag, value, named):
    out = tmp_path / "run"
    try:
        code = run_search_main(["--out", str(out), "--evaluator", "tabular", "--table", TABLE, "--evals", "5",
                                "--quiet", flag, value])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and named in err
    assert not out.exists() or not any(out.iterdir()), "a search with a bad option must not start"


# ---------------------------------------------------------------- tensors that do not fit the module
def _two_linear_map() -> LayerMap:
    return LayerMap((LayerSpec("0", ("0.weight", "0.bias"), (0,)), LayerSpec("1", ("1.weight", "1.bias"), (0, 1))))


def test_shapes_that_do_not_fit_the_module_are_named_and_nothing_is_half_copied():
    torch.manual_seed(0)
    cache, lmap = TensorCache(memory="1MB"), _two_linear_map()
    donor = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    cache.put("donor", (1, 1), donor.state_dict(), layer_map=lmap)
    child = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 5))  # not what arch (1, 1) builds
    before = {k: v.clone() for k, v in child.state_dict().items()}

    with pytest.raises(TransferError, match=re.escape("1.weight: shape (2, 3) does not match the module's (5, 3)")):
        cache.lookup((1, 1), layer_map=lmap).apply(child, strict=True)
    assert all(torch.equal(before[k], v) for k, v in child.state_dict().items()), "strict must copy nothing"

    report = cache.warm_start(child, (1, 1), layer_map=lmap)  # takes the layers that fit, names the rest
    assert report.layers == 1 and any("1.weight" in s and "(5, 3)" in s for s in report.skipped)
    assert torch.equal(child[0].weight, donor[0].weight) and torch.equal(child[1].weight, before["1.weight"])

    wide = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2)).double()
    report = cache.warm_start(wide, (1, 1), layer_map=lmap, cast=False)
    assert report.layers == 0 and any("dtype float32 does not match the module's float64 (cast=False)" in s
                                      for s in report.skipped)
