"""transfer_pairs' table reader takes the NAS-Bench-201 table shipped with the package (gzipped CSV); its
statistics, and its report on too few pairs for a Kendall tau."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from transfer_pairs import read_table  # noqa: E402

from nas_integration.data import nb201_table  # noqa: E402


def test_the_default_table_is_read():
    table = read_table(str(nb201_table()))
    assert len(table) == 15625 and all(0 <= acc <= 100 for acc in table.values())


def test_epochs_to_a_target_are_interpolated_between_checks():
    from transfer_pairs import first_reach

    history = [(0.0, 10.0), (0.5, 40.0), (1.0, 60.0), (1.5, 70.0)]
    assert first_reach(history, 50.0) == 0.75  # halfway from 40 at 0.5 to 60 at 1.0
    assert first_reach(history, 60.0) == 1.0 and first_reach(history, 71.0) is None
    assert first_reach(history, 5.0) == 0.0 and first_reach(history, 5.0, skip=1) == 0.5


def test_the_hierarchical_bootstrap_resamples_parents_first():
    import numpy as np
    from transfer_pairs import bootstrap, hierarchical

    rng = np.random.default_rng(0)
    groups = ["a"] * 3 + ["b"] * 3 + ["c"] * 3
    for _ in range(50):  # a draw holds whole parents' worth of pairs, each from a drawn parent
        idx = hierarchical(groups, rng)
        assert len(idx) == 9 and all(0 <= i < 9 for i in idx)
    # pairs that share a parent move together: resampling parents widens the interval of the mean
    values = [1.0, 1.1, 0.9, 5.0, 5.1, 4.9, 9.0, 9.1, 8.9]
    _, lo_p, hi_p = bootstrap(values, np.mean, np.random.default_rng(1))
    _, lo_h, hi_h = bootstrap(values, np.mean, np.random.default_rng(1), groups)
    assert hi_h - lo_h > hi_p - lo_p


def _pair(key: str, final: float) -> dict:
    scratch = [(0.0, 10.0), (0.5, 30.0), (1.0, final)]
    return {"key": key, "stratum": "adds", "transferred_fraction": 0.5, "parent_native": "p", "table_child": 70.0,
            "scratch": scratch, "warm": [(0.0, 20.0), (0.5, 40.0), (1.0, final + 1)], "scratch2": scratch}


def test_two_pairs_report_that_a_tau_needs_three_and_write_valid_json(tmp_path, capsys):
    from transfer_pairs import summarise, write_outputs

    write_outputs(str(tmp_path), summarise([_pair("a", 50.0), _pair("b", 60.0)], 0), {"scale": "quick"})
    printed = capsys.readouterr().out
    assert "nan" not in printed  # the mean tau within a parent printed nan
    assert printed.count("n/a (2 pairs; tau needs >= 3)") == 5  # four taus over children, one within a parent
    saved = json.loads((tmp_path / "transfer_pairs.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert saved["ranking"]["warm_vs_scratch"] == [None, None, None]  # written as NaN, which JSON lacks
    assert saved["ranking_within_parent_mean"]["warm_vs_scratch"] is None
