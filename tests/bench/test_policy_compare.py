"""policy_compare's harness: libCacheSim gets a capacity unit that never overflows its sketches, and every
row of a small comparison stays under the bound."""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
pytest.importorskip("scipy")

import policy_compare as pc  # noqa: E402
from tensorcache.events import Inserted  # noqa: E402
from tensorcache.replay import Workload  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tensorcache" / "replay"))
from evolution_sim import simulate  # noqa: E402


def test_lcs_unit_keeps_capacity_under_2_30():
    assert pc.lcs_unit(10**6) == 1 and pc.lcs_unit(2**30 - 1) == 1
    for cap in (2**30, 3 * 2**31, 10**13):
        unit = pc.lcs_unit(cap)
        assert cap // unit < 2**30 <= cap // (unit // 2)
    assert pc.units(1, 1024) == 1 and pc.units(1025, 1024) == 2


def test_tinylfu_above_2_31_bytes_admits_and_serves():
    """Regression: at 20% of a large trace WTinyLFU got over 2**31 bytes of capacity and ran with a broken
    counting Bloom filter; in units it admits and keeps what fits."""
    lcs = pc.libcachesim_policies()
    if "TinyLFU" not in lcs:
        pytest.skip("libcachesim with WTinyLFU is not installed")
    cap = 3 * 2**31
    store = pc.LibCacheSimStore(lcs["TinyLFU"], cap, {("m", 0): 1, ("m", 1): 2}, {})
    assert store.unit > 1 and store.capacity < 2**30
    admitted, _ = store.insert(Inserted(("m", 0), 2**20, "m", ()))
    assert admitted and store.contains(("m", 0)) and store.missing("m", [0, 1]) == [1]


def test_every_policy_row_is_under_the_bound():
    work = Workload(simulate(n=80, seed=3), "prefix")
    cap = int(work.total_bytes * 0.05)
    rows = pc.prefix_aware(work, cap, 8, 3, pc.OURS, pc.libcachesim_policies())
    bound = rows[0][2]
    assert rows[0][1] == "bound"
    for family, policy, metrics in rows[1:]:
        for key in ("transfer_yield", "revisit_yield", "total_yield"):
            if metrics[key] == metrics[key]:  # not NaN
                assert metrics[key] <= bound[key] + 1e-9, (family, policy, key)


def test_request_stream_for_libcachesim(tmp_path):
    records = simulate(n=50, seed=4)
    work = Workload(records)
    stream = pc.request_stream(work)
    inserts = [r for r in stream if r.insert]
    lookups = [r for r in stream if not r.insert]
    assert len(stream) == work.clock[-1]  # one request per position of replay's request stream
    assert len(inserts) == sum(len(r["layer_bytes"]) for r in records)
    assert len({r.key_id for r in inserts}) == len(inserts) and min(r.key_id for r in inserts) == 1
    assert sum(r.size for r in lookups) == work.unbounded.bytes_served
    assert [r.time for r in stream] == sorted(r.time for r in stream)
    first_seen = {}
    for r in stream:
        first_seen.setdefault(r.key_id, r)
    assert all(r.insert for r in first_seen.values())  # every object is admitted before it is requested
    path = tmp_path / "requests.csv"
    pc.write_requests_csv(stream, path)
    rows = list(csv.reader(path.open()))
    assert rows[0] == ["time", "obj_id", "obj_size", "insert"] and len(rows) - 1 == len(stream)
    assert rows[1][3] == "1" and {row[3] for row in rows[1:]} == {"0", "1"}


def test_c_level_warnings_are_hidden_and_counted(capfd):
    import os

    from common import HIDDEN_C_LINES, c_stderr_hidden

    before = HIDDEN_C_LINES.get("test-lib", 0)
    with c_stderr_hidden("test-lib"):
        os.write(2, b"[WARN] a C library talks\n[WARN] twice\n")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"
    assert HIDDEN_C_LINES["test-lib"] == before + 2


def test_the_yield_figure_highlights_a_few_and_spans_the_data(monkeypatch):
    drawn = []
    monkeypatch.setattr(pc, "_save", lambda fig, path: drawn.append(fig))
    policies = ["bound", "evolution-aware", "donor-window", "lru", "lfu", "fifo", "SIEVE", "GDSF"]
    rows = [{"family": "libcachesim" if p in ("SIEVE", "GDSF") else "bound" if p == "bound" else "ours",
             "policy": p, "capacity_pct": pct, "transfer_yield": 0.80 + 0.01 * k + 0.02 * pct / 20}
            for k, p in enumerate(policies) for pct in (2, 5, 20)]
    pc.plot_yield("x.png", "t", rows)
    (ax,) = drawn[0].axes
    labels = [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")]
    assert labels[:3] == ["bound", "evolution-aware", "donor-window"] and "libCacheSim GDSF (best other)" in labels
    assert "4 other policies" in labels and len(labels) == 5
    assert ax.get_ylim()[0] > 0.7  # not from 0: the differences stay visible
