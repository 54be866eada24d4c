"""policy_inflight's table on rows made up for it (the bench records its traces as policy_grid does)."""
from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import policy_inflight as pi  # noqa: E402


def _row(P: int, seed: int, revisit: float) -> dict:
    return {"P": P, "S": 2, "workers": 2, "seed": seed, "evals": 20, "capacity_pct": 5.0,
            "transfer_without": 0.5, "transfer_with": 0.6, "revisit_without": revisit, "revisit_with": revisit + 0.1}


def test_a_seed_without_revisits_leaves_the_revisit_mean_to_the_others_and_none_at_all_is_n_a(tmp_path):
    rows = [_row(4, 0, math.nan), _row(4, 1, 0.2), _row(8, 0, math.nan)]
    pi.write_table(str(tmp_path / "inflight.md"), rows)
    lines = (tmp_path / "inflight.md").read_text().splitlines()
    assert lines[2].split(" | ")[-3:] == ["0.200", "0.300", "+0.100 |"]
    assert lines[3].split(" | ")[-3:] == ["n/a", "n/a", "n/a |"] and "nan" not in "".join(lines)
