"""The benches' shared helpers."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from common import write_markdown_table  # noqa: E402


def test_markdown_table_has_a_header_a_rule_and_one_line_per_row(tmp_path):
    path = tmp_path / "t.md"
    write_markdown_table(path, ("P", "yield"), [(50, "0.900"), (100, "0.950")])
    assert path.read_text() == "| P | yield |\n|---|---|\n| 50 | 0.900 |\n| 100 | 0.950 |\n"
