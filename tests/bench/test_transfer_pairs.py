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
