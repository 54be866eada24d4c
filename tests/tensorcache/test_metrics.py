"""Served bytes split into revisits and transfers; a hit needs a served layer that depends on a position."""
import json
import math

from tensorcache.metrics import Counts, json_safe, mark_revisits, positional, summarize_records
from tensorcache.replay import Workload, replay
from tensorcache.trace import as_records


def rec(i, arch, t0, t1, revisit=None, layers_served=0, bytes_served=0):
    # layer 0: a stem no position decides (one key in every model); layer 1 depends on both positions
    keys = [b"\1" * 16, bytes([2, *arch]).ljust(16, b"\0")]
    out = {"model_id": f"m{i}", "parent_id": None, "donor_id": None, "worker": 0, "t_start": t0, "t_end": t1,
           "arch": list(arch), "mutation_pos": None, "score": float(i), "layer_keys": [k.hex() for k in keys],
           "layer_bytes": [2, 10], "layer_deps": [[], [0, 1]], "layers_served": layers_served,
           "bytes_served": bytes_served, "tier": None, "cache_s": 0.0, "train_s": t1 - t0}
    if revisit is not None:
        out["revisit"] = revisit
    return out


def test_mark_revisits_by_start_order_and_recorded_flag():
    marks = mark_revisits([("a", (1, 2), 5.0, None), ("b", (1, 2), 1.0, None), ("c", (3,), 2.0, True),
                           ("d", None, 0.0, None)])
    assert marks == {"b": False, "a": True, "c": True, "d": False}
    assert positional([[], [0]]) and not positional([[], []])


def test_replay_splits_bytes_and_counts_only_positional_hits():
    records = [rec(0, (0, 0), 0.0, 1.0), rec(1, (1, 1), 2.0, 3.0), rec(2, (0, 0), 4.0, 5.0)]
    result = replay(Workload(records, "compatible"), "lru", 10**6, population_size=2, sample_size=1)
    # m1 gets only the stem (not a hit, a transfer of 2 B); m2 repeats m0's arch and gets both layers
    assert result.lookups_served == 2 and result.hits == 1 and result.hit_ratio == 1 / 3
    assert (result.transfer_bytes_served, result.revisit_bytes_served) == (2, 12)
    assert result.transfer_yield == 1.0 and result.revisit_yield == 1.0
    small = replay(Workload(records, "compatible"), "fifo", 12, population_size=2, sample_size=1)
    assert small.revisit_bytes_served < 12 and small.metrics()["revisit_yield"] < 1


def test_summarize_records_for_the_live_summary():
    records = as_records([rec(0, (0, 0), 0.0, 1.0), rec(1, (1, 1), 2.0, 3.0, layers_served=1, bytes_served=2),
                          rec(2, (0, 0), 4.0, 5.0, revisit=True, layers_served=2, bytes_served=12)])
    got = summarize_records(records, "prefix")
    assert got.hits == 1 and got.revisits == 1 and got.revisit_fraction == 1 / 3
    assert got.bytes_served == 14 and got.transfer_bytes_served == 2 and got.revisit_bytes_served == 12
    assert got.new == 2 and got.new_hits == 0 and got.new_byte_share == 2 / 24  # m1 got only the stem
    assert math.isnan(summarize_records([]).hit_ratio)


def test_a_running_count_equals_the_count_of_the_finished_trace():
    records = as_records([rec(0, (0, 0), 0.0, 1.0), rec(1, (1, 1), 2.0, 3.0, layers_served=2, bytes_served=12),
                          rec(2, (1, 1), 4.0, 5.0, layers_served=1, bytes_served=2)])
    assert [r.revisit for r in records] == [False, False, True]  # as_records marks the revisit
    running = summarize_records([], "compatible")
    for record in records:
        running.add(record)
    assert running == summarize_records(records, "compatible")
    assert (running.hits, running.new_hits) == (1, 1)  # m2 got only the stem: not a hit in compatible mode


def test_counts_without_evaluations_write_valid_json() -> None:
    # a search stopped before its first evaluation finished has ratios without a denominator (NaN); its
    # summary must still be JSON every reader takes (NaN is not JSON), so those ratios are written as null
    empty = Counts()
    summary = {"new_hit_ratio": empty.new_hit_ratio, "nested": {"hit_ratio": empty.hit_ratio, "inf": [math.inf, 1.5]}}
    assert math.isnan(summary["new_hit_ratio"])
    text = json.dumps(json_safe(summary), allow_nan=False)
    assert json.loads(text) == {"new_hit_ratio": None, "nested": {"hit_ratio": None, "inf": [None, 1.5]}}
