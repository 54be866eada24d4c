"""The benches' shared helpers, and every bench answering bad input with one error line naming it."""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from common import (Comparison, exit_status, in_turns, interleaved, numbers, print_comparisons, redis_url,  # noqa: E402
                    seeds, write_markdown_table)


def test_markdown_table_has_a_header_a_rule_and_one_line_per_row(tmp_path):
    path = tmp_path / "t.md"
    write_markdown_table(path, ("P", "yield"), [(50, "0.900"), (100, "0.950")])
    assert path.read_text() == "| P | yield |\n|---|---|\n| 50 | 0.900 |\n| 100 | 0.950 |\n"


def test_cases_take_turns_and_each_leads_a_round():
    order = list(in_turns(["a", "b", "c"], 3))
    assert order == [(0, "a"), (0, "b"), (0, "c"), (1, "b"), (1, "c"), (1, "a"), (2, "c"), (2, "a"), (2, "b")]


def test_interleaved_times_each_case_repeats_times_after_its_warmup_with_the_given_clock():
    calls: list[str] = []
    ticks = iter(range(1000))
    times = interleaved({"x": (lambda: calls.append("x"), None), "y": (lambda: calls.append("y"), None)},
                        repeats=2, warmup=1, clock=lambda: float(next(ticks)), pause_gc=False)
    assert calls == ["x", "y", "y", "x", "x", "y"]
    assert times == {"x": [1.0, 1.0], "y": [1.0, 1.0]}


def test_numbers_are_finite_and_positive():
    assert numbers("1,2.5", float) == [1.0, 2.5]
    for text in ("0", "-1", "nan", "inf", "2,nan"):  # nan and inf passed 'x <= 0' and broke the replays
        with pytest.raises(argparse.ArgumentTypeError, match=f"expected positive numbers, got '{text}'"):
            numbers(text, float)


def test_seeds_are_integers_from_zero_and_a_bad_one_is_named():
    assert seeds("0,3") == [0, 3]
    for text, named in (("-1", "expected seeds >= 0, got '-1'"), ("a", "expected comma-separated seeds, got 'a'")):
        with pytest.raises(argparse.ArgumentTypeError, match=named):
            seeds(text)


def test_exit_status_turns_a_bad_setting_into_one_error_line(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["bench/x.py"])

    def bad() -> int:
        raise ValueError("bad memory size: '5XB'")

    assert exit_status(bad) == 2 and capsys.readouterr().err == "x.py: error: bad memory size: '5XB'\n"
    assert exit_status(lambda: None) == 0 and exit_status(lambda: 3) == 3


@pytest.mark.parametrize("script, args, named", [
    ("policy_compare.py", ["EMPTY", "--out", "OUT"], "error: the trace has no records"),
    ("replay_speed.py", ["--out", "OUT", "--repeats", "0"], "argument --repeats: expected an integer >= 1, got '0'"),
    ("replay_speed.py", ["--out", "OUT", "--capacity=-1"], "argument --capacity: expected a percent >= 0, got -1"),
    ("replay_speed.py", ["--out", "OUT", "--capacity", "nan"], "argument --capacity: expected a percent >= 0, got nan"),
    ("catalog.py", ["--batch", "0"], "argument --batch: expected an integer >= 1, got '0'"),
    ("transfer_pairs.py", ["--pairs", "0"], "argument --pairs: expected an integer >= 1, got '0'"),
    ("bookkeeping.py", ["--repeats", "-1"], "argument --repeats: expected an integer >= 1, got '-1'"),
    ("catalog.py", ["--live", "-5"], "argument --live: expected live models >= 0, got -5"),
    ("prefault.py", ["--seconds", "inf"], "argument --seconds: expected finite seconds > 0, got inf"),
    ("prefault.py", ["--rate", "-1"], "argument --rate: expected a finite rate >= 0, got -1"),
    ("policy_grid.py", ["--out", "OUT", "--populations", "4", "--samples", "5"], "no cell: a cell needs S < P"),
    ("policy_recommend.py", ["--grid", "OUT", "--out", "OUT"], "holds no traces"),
    ("frameworks.py", ["--frameworks", "optuns"], "argument --frameworks: unknown 'optuns'"),
    ("deephyper_compare.py", ["--population", "2", "--sample", "3"], "got sample 3, population 2"),
    ("deephyper_compare.py", ["--train", "7000", "--val", "50"], "mnist-small has"),
])
def test_a_bench_answers_bad_input_with_one_line_naming_it(tmp_path, script, args, named):
    (tmp_path / "trace.jsonl").write_text("")
    args = [str(tmp_path / "trace.jsonl") if a == "EMPTY" else str(tmp_path / "out") if a == "OUT" else a
            for a in args]
    done = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert named in done.stderr.strip().splitlines()[-1], done.stderr


def test_a_redis_url_that_does_not_answer_is_named_before_a_part_uses_it():
    with pytest.raises(OSError, match="redis at redis://127.0.0.1:1/0 does not answer"):
        with redis_url("redis://127.0.0.1:1/0"):
            pass


def test_a_comparison_table_gives_small_sizes_in_their_unit_and_none_for_a_cpu_comparison(capsys):
    small = Comparison("g", "put@300KB", "a", "b", 300_000, [0.001], [0.002])
    cpu = Comparison("g", "replay CPU", "a", "b", 0, [1.0], [2.0])  # no bytes moved: read "0MiB" and 0 MB/s
    print_comparisons("t", [small, cpu])
    out = capsys.readouterr().out
    small_row = next(line for line in out.splitlines() if line.startswith("put@300KB")).split()
    cpu_row = next(line for line in out.splitlines() if line.startswith("replay CPU ")).split()
    assert small_row[1:3] == ["300.0", "KB"] and small_row[7:9] == ["300", "150"]  # was 0.3MiB
    assert cpu_row[2] == "-" and cpu_row[7:9] == ["-", "-"]
