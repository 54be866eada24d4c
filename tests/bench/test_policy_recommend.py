"""policy_recommend: its table (each seed's pick, the margins in hours with their intervals, the pick ÷ bound) and
its options (a bad capacity is named)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import policy_recommend as pr  # noqa: E402


def _answer(best: str, margin: float) -> dict:
    scores = {"lru": 3600.0, "evolution-aware": 3600.0 + margin}
    return {"recommend": best, "capacities": [{"capacity": "5%", "best": best, "margin": abs(margin),
                                               "low": 0.0, "high": 7200.0, "scores": scores, "bound": 14400.0}]}


def test_rows_group_the_seeds_of_a_cell_and_capacity():
    answers = {"P50_S5_w64_s0_prefix": _answer("evolution-aware", 3600.0),
               "P50_S5_w64_s1_prefix": _answer("lru", -1800.0), "not a cell": _answer("lru", 0.0)}
    (row,) = pr.table_rows(answers)
    assert row[:6] == ("prefix", 50, 5, 64, "5", 2)
    assert row[6] == "evolution-aware 1/2, lru 1/2"
    assert row[7] == "+1.0 [+0.0, +2.0]; +0.5 [+0.0, +2.0]"
    assert row[8] == "0.500 / 0.250"


def test_a_capacity_list_starting_with_a_minus_is_named(capsys):
    with pytest.raises(SystemExit):  # argparse took "-1,2" for an option: "expected one argument"
        pr.main(["--grid", "unused", "--out", "unused", "--capacities", "-1,2"])
    assert "argument --capacities: expected positive numbers, got '-1,2'" in capsys.readouterr().err
