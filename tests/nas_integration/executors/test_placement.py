"""Placement on an injected clock: idle holders first, reservations for soon-free holders, waits and idle
time counted on that clock, and a gone worker's waiting child handed back."""
from nas_integration.executors import Placement
from nas_integration.locality import LocalityTracker
from tensorcache.evolution import Candidate


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def child(i: int, parent: str = "d") -> Candidate:
    return Candidate(i, f"c{i}", (i,), parent_id=parent)


def test_without_a_tracker_the_lowest_idle_worker_takes_the_child():
    placement = Placement(None, Clock())
    assert placement.place(child(0), [3, 1, 2], {}) == 1
    assert placement.summary() is None


def test_a_child_waits_for_its_busy_holder_and_the_wait_is_counted_on_the_clock():
    clock = Clock()
    tracker = LocalityTracker(workers=2, max_wait=10)
    tracker.finished(1, None, 0, None, held={"d"})  # worker 1 reports holding d
    placement = Placement(tracker, clock, donor=lambda c: c.parent_id)
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
    tracker = LocalityTracker(workers=3, max_wait=10)
    tracker.finished(2, None, 0, None, held={"d"})
    placement = Placement(tracker, Clock(), donor=lambda c: c.parent_id)
    assert placement.place(child(0), [0, 2], {}) == 2
    assert placement.place(child(1), [0, 1], {2: 50.0}) == 0  # holder busy for too long: anyone
    assert placement.summary()["placed_on_holder"] == 1


def test_a_gone_worker_hands_back_the_child_waiting_for_it():
    tracker = LocalityTracker(workers=2, max_wait=10)
    tracker.finished(1, None, 0, None, held={"d"})
    placement = Placement(tracker, Clock(), donor=lambda c: c.parent_id)
    assert placement.place(child(0), [0], {1: 1.0}) is None
    assert placement.abandon(1) == child(0) and placement.abandon(1) is None


def test_a_disabled_tracker_never_asks_for_the_donor():
    asked = []
    tracker = LocalityTracker(workers=2, max_wait=None)
    placement = Placement(tracker, Clock(), donor=lambda c: asked.append(c) or "d")
    assert placement.place(child(0), [1, 0], {}) == 0 and asked == []


def test_a_restarted_worker_holds_nothing_until_it_reports():
    tracker = LocalityTracker(workers=2, max_wait=10)
    tracker.finished(1, None, 0, None, held={"d"})
    placement = Placement(tracker, Clock(), donor=lambda c: c.parent_id)
    assert placement.place(child(0), [0, 1], {}) == 1
    placement.restarted(1)  # a fresh process: its memory tier is empty
    assert placement.place(child(1), [0, 1], {}) == 0
