"""transfer_pairs' table reader takes the NAS-Bench-201 table shipped with the package (gzipped CSV)."""
from __future__ import annotations

import sys
from pathlib import Path

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
