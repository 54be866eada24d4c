"""Placement on an injected clock: idle holders first, reservations for soon-free holders, waits and idle
time counted on that clock, a gone worker's waiting child handed back; transfers counted local or shared
from the workers' reports; and a simulated search that placement serves from local memory more often."""
from types import SimpleNamespace

import pytest

from nas_integration.data import nb201_table
from nas_integration.executors import Locality, Placement
from nas_integration.search import SearchSettings, run_search
from tensorcache.config import CacheConfig
from tensorcache.evolution import Candidate

TABLE = str(nb201_table())  # the table shipped with the package


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def child(i: int, parent: str = "d") -> Candidate:
    return Candidate(i, f"c{i}", (i,), parent_id=parent)


def report(placement: Placement, worker: int, held: set[str], donor: str | None = None, nbytes: int = 0,
           tier_bytes: dict[str, int] | None = None) -> None:
    """``worker`` finished a child served ``nbytes`` by ``donor`` and reports holding ``held``."""
    record = SimpleNamespace(donor_id=donor, bytes_served=nbytes, tier_bytes=tier_bytes or {})  # its fields
    placement.finished(worker, record, held, reported=tier_bytes is not None)


def placed(held: dict[int, set[str]], max_wait: float | None = 10, clock=None) -> Placement:
    """A placement on ``clock`` whose workers reported holding ``held``; each child's donor is its parent."""
    placement = Placement(Locality(max_wait), clock or Clock(), donor=lambda c: c.parent_id)
    for worker, models in held.items():
        report(placement, worker, models)
    return placement


def test_without_a_tracker_the_lowest_idle_worker_takes_the_child():
    placement = Placement(None, Clock())
    assert placement.place(child(0), [3, 1, 2], {}) == 1
    assert placement.summary() is None


def test_a_child_waits_for_its_busy_holder_and_the_wait_is_counted_on_the_clock():
    clock = Clock()
    placement = placed({1: {"d"}}, clock=clock)  # worker 1 reports holding d
    for worker in (0, 1):
        placement.idle(worker)
    clock.now = 2.0
    placement.started(1)
    assert placement.place(child(0), [0], {1: 7.0}) is None  # reserved: worker 1 is free within 10 s
    clock.now = 7.0
    assert placement.freed(1) == child(0)
    placement.started(1)
    summary = placement.summary()
    assert summary["reserved"] == 1 and summary["wait_s"] == 5.0
    assert summary["idle_s"] == 2.0  # worker 1 idle 0..2, then straight from its job to the reserved child


def test_an_idle_holder_is_preferred_and_a_far_holder_is_not_waited_for():
    placement = placed({2: {"d"}})
    assert placement.place(child(0), [0, 2], {}) == 2
    assert placement.place(child(1), [0, 1], {2: 50.0}) == 0  # holder busy for too long: anyone
    assert placement.summary()["placed_on_holder"] == 1


def test_a_gone_worker_hands_back_the_child_waiting_for_it():
    placement = placed({1: {"d"}})
    assert placement.place(child(0), [0], {1: 1.0}) is None
    assert placement.abandon(1) == child(0) and placement.abandon(1) is None


def test_a_disabled_tracker_never_asks_for_the_donor():
    asked = []
    placement = Placement(Locality(None), Clock(), donor=lambda c: asked.append(c) or "d")
    assert placement.place(child(0), [1, 0], {}) == 0 and asked == []


def test_a_restarted_worker_holds_nothing_until_it_reports():
    placement = placed({1: {"d"}})
    assert placement.place(child(0), [0, 1], {}) == 1
    placement.restarted(1)  # a fresh process: its memory tier is empty
    assert placement.place(child(1), [0, 1], {}) == 0


def test_placement_prefers_an_idle_holder_then_a_soon_free_one_then_anyone():
    placement = placed({2: {"d"}}, max_wait=50)
    assert placement.place(child(0), [0, 1, 2], {}) == 2
    assert placement.place(child(1), [0, 1], {2: 80}) == 0   # too long a wait
    assert placement.place(child(2), [0, 1], {2: 30}) is None  # reserved for worker 2
    assert placement.place(child(3), [0, 1], {2: 30}) == 0   # worker 2 is reserved already
    summary = placement.summary()
    assert summary["placed_on_holder"] == 1 and summary["reserved"] == 1
    assert summary["wait_s"] == 0  # counted when the reserved child starts (freed)


def test_unreported_transfers_are_judged_by_the_workers_last_report():
    placement = placed({0: {"a"}}, max_wait=None)
    report(placement, 0, {"a", "b"}, "a", 8)        # worker 0 reported a: local
    report(placement, 1, {"a", "c"}, "a", 8)        # worker 1 reported nothing yet: fetched from a shared tier
    report(placement, 1, {"a", "c", "d"}, "a", 8)   # it reported a since
    s = placement.summary()
    assert (s["local_hits"], s["remote_hits"], s["local_bytes"], s["remote_bytes"]) == (2, 1, 16, 8)
    assert not s["enabled"] and placement.place(child(0, "a"), [1, 0], {}) == 0


def test_reported_tier_bytes_decide_and_partial_hits_count_remote():
    placement = placed({0: {"a"}}, max_wait=None)
    report(placement, 0, {"a", "b"}, "a", 8, {"memory": 5, "lmdb": 3})   # expected local; 3 bytes from LMDB
    report(placement, 1, {"a", "c"}, "a", 8, {"device": 2, "memory": 6})  # expected remote; all served locally
    s = placement.summary()
    assert (s["local_hits"], s["remote_hits"], s["local_bytes"], s["remote_bytes"]) == (1, 1, 13, 3)
    assert s["expected_local_hits"] == 1


def test_a_negative_wait_is_refused():
    with pytest.raises(ValueError, match="-1"):
        Locality(-1)


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
