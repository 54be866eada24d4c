"""The ``tensorcache`` command finds a run's search space through the ``tensorcache.spaces`` entry point, so the
library names no driver: run_search's spaces are registered there, and any installed package can add one; and it
answers bad counts and an empty trace with one error naming them."""
import random
import tomllib
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from tensorcache.cli import SPACES, capacity_bytes, dashed_values, main, space_layers

ROOT = Path(__file__).resolve().parents[2]


def test_a_space_an_installed_package_registers_gives_the_layer_maps(tmp_path, monkeypatch):
    (tmp_path / "toyspace.py").write_text(
        "from tensorcache.layers import LayerMap\n"
        "class Toy:\n"
        "    def layer_map(self, arch, mode):\n        return LayerMap.generic(len(arch), mode)\n"
        "    def layer_nbytes(self, arch, mode):\n        return [4] * len(arch)\n")
    info = tmp_path / "toyspace-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toyspace\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{SPACES}]\ntoy = toyspace:Toy\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    layers, source = space_layers("toy")
    layer_map, nbytes = layers([1, 2, 3], "prefix")
    assert len(layer_map) == 3 and nbytes == [4, 4, 4] and source.startswith("the toy space's layer maps")
    assert space_layers("no-such-space") == (None, "") and space_layers(None) == (None, "")


def test_run_search_registers_its_spaces():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"][SPACES]
    assert set(declared) >= {"nb201", "attn"}
    for name, value in declared.items():
        space = EntryPoint(name, value, SPACES).load()()
        arch = space.sample(random.Random(0))
        assert len(space.layer_map(arch, "prefix")) == len(space.layer_nbytes(arch, "prefix"))


@pytest.mark.parametrize("args, option, value", [
    (["analyze", "--out", "rep", "--population", "0"], "--population", "0"),
    (["analyze", "--out", "rep", "--sample", "-1"], "--sample", "-1"),
    (["analyze", "--out", "rep", "--window", "0"], "--window", "0"),
    (["replay", "--population", "-3"], "--population", "-3"),
    (["replay", "--recommend", "--sample", "0"], "--sample", "0"),
])
def test_a_count_below_one_is_named_not_taken_as_not_given(tmp_path, capsys, args, option, value):
    with pytest.raises(SystemExit) as exit_:
        main([args[0], str(tmp_path / "trace.jsonl"), *args[1:]])
    assert exit_.value.code == 2
    assert f"argument {option}: expected an integer >= 1, got '{value}'" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "low"])
def test_a_low_cut_must_be_a_finite_score(tmp_path, capsys, value):
    with pytest.raises(SystemExit) as exit_:  # nan was taken as "none given", inf made every model low quality
        main(["analyze", str(tmp_path / "trace.jsonl"), "--out", "rep", f"--low-cut={value}"])
    assert exit_.value.code == 2
    assert f"argument --low-cut: expected a finite number, got '{value}'" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["-5%", "nan%", "inf%", "1e400%"])
def test_a_capacity_percent_must_be_a_finite_share(text):
    with pytest.raises(ValueError, match=f"bad capacity '{text}': expected a percent >= 0"):
        capacity_bytes(text, 1000)  # nan and inf failed converting to int (inf with an OverflowError traceback)
    assert capacity_bytes("150%", 1000) == 1500 and capacity_bytes("0%", 1000) == 0


@pytest.mark.parametrize("args, message", [
    (["--capacity", "-5%"], "bad capacity '-5%': expected a percent >= 0"),
    (["--capacity", "-5MB"], "bad capacity: '-5MB' (expected e.g. 512MB"),
    (["--recommend", "--capacity", "2%,-5%"], "bad capacity '-5%': expected a percent >= 0"),
])
def test_a_capacity_starting_with_a_minus_is_named_before_the_trace_is_read(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_:  # argparse took "-5%" for an option: "expected one argument"
        main(["replay", str(tmp_path / "no-trace.jsonl"), *args])
    assert exit_.value.code == 2
    assert f"argument --capacity: {message}" in capsys.readouterr().err


def test_a_value_starting_with_a_minus_is_joined_to_its_option():
    assert dashed_values(["--capacity", "-5%", "--population", "-3", "--seed=-1", "-.5"]) == \
        ["--capacity=-5%", "--population=-3", "--seed=-1", "-.5"]
    assert dashed_values(["--json", "--policy", "lru", "-v"]) == ["--json", "--policy", "lru", "-v"]
    assert dashed_values(["--", "--x", "-5%"]) == ["--", "--x", "-5%"]  # after "--" every argument is positional
