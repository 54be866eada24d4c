"""Locality-aware placement: the worker-memory model, the placement rule, and a simulated search."""
from nas_integration.data import nb201_table
from nas_integration.locality import LocalityTracker, WorkerMemory
from nas_integration.search import SearchSettings, run_search

TABLE = str(nb201_table())  # the table shipped with the package


def test_worker_memory_is_an_lru_within_its_budget():
    mem = WorkerMemory(capacity=10)
    for model, size in [("a", 4), ("b", 4), ("a", 4), ("c", 4)]:
        mem.touch(model, size)
    assert list(mem.held) == ["a", "c"] and mem.used == 8
    mem.touch("huge", 11)
    assert "huge" not in mem.held


def test_placement_prefers_an_idle_holder_then_a_soon_free_one_then_anyone():
    t = LocalityTracker(workers=3, worker_memory=100, max_wait=50)
    t.finished(2, "d", 10, None, 0)
    assert t.place("d", idle=[0, 1, 2], busy_until={}, reserved=set(), now=0) == (2, None)
    assert t.place("d", idle=[0, 1], busy_until={2: 30}, reserved=set(), now=0) == (2, 30)
    assert t.place("d", idle=[0, 1], busy_until={2: 80}, reserved=set(), now=0) == (0, None)  # too long a wait
    assert t.place("d", idle=[0, 1], busy_until={2: 30}, reserved={2}, now=0) == (0, None)   # already reserved
    assert t.stats.placed_on_holder == 1 and t.stats.reserved == 1
    assert t.stats.wait_s == 0  # counted when the reserved child starts (executors call waited)


def test_transfers_are_counted_local_or_remote_by_worker_memory():
    t = LocalityTracker(workers=2, worker_memory=100, max_wait=None)
    t.finished(0, "a", 10, None, 0)
    t.finished(0, "b", 10, "a", 8)   # a is in worker 0's memory
    t.finished(1, "c", 10, "a", 8)   # worker 1 fetches a from a shared tier, then holds it
    t.finished(1, "d", 10, "a", 8)
    s = t.stats.summary()
    assert (s["local_hits"], s["remote_hits"], s["local_bytes"], s["remote_bytes"]) == (2, 1, 16, 8)
    assert not t.enabled and t.place("a", [0, 1], {}, set(), 0) == (0, None)


def test_reported_tier_bytes_override_the_model_and_partial_hits_count_remote():
    t = LocalityTracker(workers=2, worker_memory=100, max_wait=None)
    t.finished(0, "a", 10, None, 0)
    t.finished(0, "b", 10, "a", 8, {"memory": 5, "lmdb": 3})  # model says local; 3 bytes came from LMDB
    t.finished(1, "c", 10, "a", 8, {"device": 2, "memory": 6})  # model says remote; all served locally
    s = t.stats.summary()
    assert (s["local_hits"], s["remote_hits"], s["local_bytes"], s["remote_bytes"]) == (1, 1, 13, 3)
    assert s["modelled_local_hits"] == 1


def test_locality_aware_placement_serves_more_bytes_from_local_memory(tmp_path):
    shares = {}
    for wait in (None, 3000.0):
        out = tmp_path / f"w{wait}"
        summary = run_search(SearchSettings(out=str(out), evaluator="tabular", table=TABLE, evals=1200,
                                            workers=32, memory="200MB", disk="none", seed=1,
                                            locality_wait=wait))
        shares[wait] = summary["locality"]
    assert shares[3000.0]["enabled"] and not shares[None]["enabled"]
    assert shares[3000.0]["local_byte_share"] > shares[None]["local_byte_share"] + 0.15
    assert shares[3000.0]["idle_s"] == 0.0  # children wait for their holder; workers never sit idle
