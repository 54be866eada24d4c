"""The report: ratios over the counters, NaN where nothing could be served, and a flat metrics dict."""
import math

from tensorcache.replay import ReplayResult, Served


def test_ratios_against_the_reference_and_nan_without_denominators():
    reference = ReplayResult("unbounded", 0, lookups=4, bytes_served=100, transfer_bytes_served=60,
                             revisit_bytes_served=40, entries_served=10)
    result = ReplayResult("lru", 50, lookups=4, hits=1, bytes_served=45, transfer_bytes_served=30,
                          revisit_bytes_served=15, bytes_requested=400, entries_served=4,
                          served=[Served("m1", "m0", ((0, 0),), 45)]).against(reference)
    assert (result.transfer_yield, result.revisit_yield, result.total_yield) == (0.5, 0.375, 0.45)
    assert (result.hit_ratio, result.byte_hit_ratio, result.object_hit_ratio) == (0.25, 45 / 400, 0.4)
    metrics = result.metrics()
    assert "served" not in metrics and metrics["transfer_yield"] == 0.5 and metrics["bytes_unbounded"] == 100
    empty = ReplayResult("lru", 0)
    assert all(math.isnan(v) for v in (empty.transfer_yield, empty.revisit_yield, empty.total_yield,
                                       empty.hit_ratio, empty.byte_hit_ratio, empty.object_hit_ratio))
