"""The benches' shared helpers."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from common import in_turns, interleaved, write_markdown_table  # noqa: E402


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
