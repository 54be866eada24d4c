"""Locality-aware placement: the placement rule over what workers report, and a simulated search."""
from nas_integration.data import nb201_table
from nas_integration.locality import LocalityTracker
from nas_integration.search import SearchSettings, run_search
from tensorcache.config import CacheConfig

TABLE = str(nb201_table())  # the table shipped with the package


def test_placement_prefers_an_idle_holder_then_a_soon_free_one_then_anyone():
    t = LocalityTracker(workers=3, max_wait=50)
    t.finished(2, None, 0, None, held={"d"})  # worker 2's report lists d
    assert t.place("d", idle=[0, 1, 2], busy_until={}, reserved=set(), now=0) == (2, None)
    assert t.place("d", idle=[0, 1], busy_until={2: 30}, reserved=set(), now=0) == (2, 30)
    assert t.place("d", idle=[0, 1], busy_until={2: 80}, reserved=set(), now=0) == (0, None)  # too long a wait
    assert t.place("d", idle=[0, 1], busy_until={2: 30}, reserved={2}, now=0) == (0, None)   # already reserved
    assert t.stats.placed_on_holder == 1 and t.stats.reserved == 1
    assert t.stats.wait_s == 0  # counted when the reserved child starts (executors call waited)


def test_unreported_transfers_are_judged_by_the_workers_last_report():
    t = LocalityTracker(workers=2, max_wait=None)
    t.finished(0, None, 0, None, held={"a"})
    t.finished(0, "a", 8, None, held={"a", "b"})  # worker 0 reported a: local
    t.finished(1, "a", 8, None, held={"a", "c"})  # worker 1 reported nothing yet: fetched from a shared tier
    t.finished(1, "a", 8, None, held={"a", "c", "d"})  # it reported a since
    s = t.stats.summary()
    assert (s["local_hits"], s["remote_hits"], s["local_bytes"], s["remote_bytes"]) == (2, 1, 16, 8)
    assert not t.enabled and t.place("a", [0, 1], {}, set(), 0) == (0, None)


def test_reported_tier_bytes_decide_and_partial_hits_count_remote():
    t = LocalityTracker(workers=2, max_wait=None)
    t.finished(0, None, 0, None, held={"a"})
    t.finished(0, "a", 8, {"memory": 5, "lmdb": 3}, held={"a", "b"})  # expected local; 3 bytes came from LMDB
    t.finished(1, "a", 8, {"device": 2, "memory": 6}, held={"a", "c"})  # expected remote; all served locally
    s = t.stats.summary()
    assert (s["local_hits"], s["remote_hits"], s["local_bytes"], s["remote_bytes"]) == (1, 1, 13, 3)
    assert s["expected_local_hits"] == 1


def test_locality_aware_placement_serves_more_bytes_from_local_memory(tmp_path):
    shares = {}
    for wait in (None, 3000.0):
        out = tmp_path / f"w{wait}"
        summary = run_search(SearchSettings(out=str(out), evaluator="tabular", table=TABLE, evals=1200,
                                            workers=32, cache_config=CacheConfig(memory="200MB", disk="none"), seed=1,
                                            locality_wait=wait))
        shares[wait] = summary["locality"]
    assert shares[3000.0]["enabled"] and not shares[None]["enabled"]
    assert shares[3000.0]["local_byte_share"] > shares[None]["local_byte_share"] + 0.15
    assert shares[3000.0]["idle_s"] == 0.0  # children wait for their holder; workers never sit idle
