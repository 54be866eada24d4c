"""policy_grid's table: means over seeds, and a grid run of the subject alone still gets its table."""
from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import policy_grid as pg  # noqa: E402


def _row(family: str, policy: str, seed: int, transfer: float, revisit: float) -> dict:
    return {"mode": "prefix", "P": 50, "S": 5, "workers": 1, "seed": seed, "capacity_pct": 5, "family": family,
            "policy": policy, "transfer_yield": transfer, "revisit_yield": revisit, "seconds": 1.0}


def test_margin_is_over_the_best_other_policy_averaged_over_seeds():
    rows = [_row("bound", "bound", s, 1.0, 0.8) for s in (0, 1)]
    rows += [_row("ours", pg.SUBJECT, 0, 0.9, 0.6), _row("ours", pg.SUBJECT, 1, 0.7, 0.4)]
    rows += [_row("ours", "lru", 0, 0.8, 0.5), _row("libcachesim", "GDSF", 1, 0.75, 0.2)]
    (summary,) = pg.summarize(rows)
    assert summary["seeds"] == 2 and math.isclose(summary["evo_transfer"], 0.8)
    assert math.isclose(summary["margin"], ((0.9 - 0.8) + (0.7 - 0.75)) / 2)
    assert summary["best_other"] == "libcachesim:GDSF/ours:lru"
    # a 95% t interval over the two seeds' margins (+0.10, -0.05): t(0.975, 1) = 12.706, sd = 0.106
    assert math.isclose(summary["margin_ci"], 12.706 * 0.15 / math.sqrt(2) / math.sqrt(2), rel_tol=1e-3)
    assert summary["margin_ahead"] == 1 and summary["revisit_ahead"] == 2


def test_the_table_prints_each_margin_with_its_interval_and_the_seeds_ahead(tmp_path):
    rows = [_row("bound", "bound", s, 1.0, 0.8) for s in (0, 1, 2)]
    rows += [_row("ours", pg.SUBJECT, s, 0.9, 0.5 + s / 10) for s in (0, 1, 2)]
    rows += [_row("ours", "lru", s, 0.8, 0.55) for s in (0, 1, 2)]
    pg.write_table(str(tmp_path / "grid.md"), pg.summarize(rows))
    text = (tmp_path / "grid.md").read_text()
    assert "| +0.100 ± 0.000 (3/3) |" in text  # transfer: +0.1 in every seed
    assert "| +0.050 ± 0.248 (2/3) |" in text  # revisit: -0.05, +0.05, +0.15; t(0.975, 2) x 0.1 / sqrt(3)


def test_a_grid_of_the_subject_alone_has_no_margin_instead_of_crashing(tmp_path):
    rows = [_row("bound", "bound", 0, 1.0, 0.8), _row("ours", pg.SUBJECT, 0, 0.9, 0.6)]
    (summary,) = pg.summarize(rows)
    assert summary["best_other"] == "none" and math.isnan(summary["margin"]) and math.isnan(summary["margin_ci"])
    pg.write_table(str(tmp_path / "grid.md"), [summary])
    assert "| none |" in (tmp_path / "grid.md").read_text()


def test_a_cell_without_revisits_reads_n_a_not_nan(tmp_path):
    nan = math.nan
    rows = [_row("bound", "bound", 0, 1.0, nan), _row("ours", pg.SUBJECT, 0, 0.9, nan), _row("ours", "lru", 0, 0.8, nan)]
    pg.write_table(str(tmp_path / "grid.md"), pg.summarize(rows))
    cells = (tmp_path / "grid.md").read_text().splitlines()[2].split(" | ")
    assert "nan" not in " ".join(cells) and cells[11:14] == ["n/a", "n/a", "n/a"], cells


def test_a_grid_without_the_subject_says_why_its_table_is_empty(tmp_path, capsys):
    args = ["--out", str(tmp_path), "--evals", "20", "--populations", "4", "--samples", "2", "--workers", "1",
            "--seeds", "0", "--capacities", "5", "--policies", "lru", "--no-libcachesim"]
    assert pg.main(args) == 0
    assert f"(0 rows) from {tmp_path}/grid.jsonl: it tabulates {pg.SUBJECT} against the others" in \
        capsys.readouterr().out
