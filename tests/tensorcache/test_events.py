"""Every typed policy event reaches the policy method that declares it; no hook is looked up by name."""
import typing

import pytest

from tensorcache import events
from tensorcache.news import EvaluationNews
from tensorcache.policies import Policy, make_policy


class Recorder(Policy):
    """Keeps what it was told, in order."""

    name = "recorder"

    def __init__(self):
        self.calls, self.keys = [], set()

    def on_insert(self, key, size, model_id, deps=()):
        self.calls.append(("insert", key, size, model_id, deps))
        self.keys.add(key)

    def on_release(self, key):
        self.calls.append(("remove", key))
        self.keys.discard(key)

    def on_hit(self, key):
        self.calls.append(("hit", key))

    def on_donation(self, model_id):
        self.calls.append(("donation", model_id))

    def on_evaluation(self):
        self.calls.append(("evaluation",))

    def on_population(self, members, population_size, sample_size):
        self.calls.append(("population", members, population_size, sample_size))

    def on_mutation(self, position):
        self.calls.append(("mutation", position))

    def on_model(self, model_id, arch, mode="prefix", layers=0, score=None):
        self.calls.append(("model", model_id, arch, mode, layers, score))

    def on_clock(self, position):
        self.calls.append(("clock", position))

    def victim(self):
        return next(iter(self.keys))

    def __len__(self):
        return len(self.keys)

    def __contains__(self, key):
        return key in self.keys


def test_each_event_calls_its_declared_method():
    p = Recorder()
    for event in [events.ModelDescribed("m", (1, 2), "prefix", 2, 0.5), events.Inserted(("m", 0), 10, "m", (0,)),
                  events.Found("m", ((("m", 1), 5, (0, 1)), (("m", 2), 6, (0, 1, 2)))), events.LayerServed(("m", 0)), events.Donated("m"), *EvaluationNews.of(1, [("m", 0.5)], 4, 2).events(),
                  events.ClockMoved(7, 9), events.Released(("m", 0))]:
        p.handle(event)
    assert p.calls == [("model", "m", (1, 2), "prefix", 2, 0.5), ("insert", ("m", 0), 10, "m", (0,)),
                       ("insert", ("m", 1), 5, "m", (0, 1)), ("insert", ("m", 2), 6, "m", (0, 1, 2)),  # Found: each
                       ("hit", ("m", 0)), ("donation", "m"), ("evaluation",), ("mutation", 1),
                       ("population", (("m", 0.5),), 4, 2), ("clock", 7), ("remove", ("m", 0))]


def _every_event(model: str, other: str) -> list:
    """One event of each type, about entry (model, 0) while (other, 0) is also held."""
    return [events.ModelDescribed(model, (1, 2), "prefix", 2, 0.5), events.Found(model, ()),
            events.Inserted((model, 0), 10, model, (0,)), events.LayerServed((model, 0)), events.Donated(model), events.EvaluationDone(), events.Mutated(1),
            events.PopulationChanged(((other, 0.1), (model, 0.9)), 4, 2), events.ClockMoved(3, 4)]


def test_the_event_list_covers_every_policy_event_type():
    assert {type(e) for e in _every_event("m", "n")} | {events.Released} == set(typing.get_args(events.PolicyEvent))


@pytest.mark.parametrize("name", ["fifo", "lru", "lfu", "donor-window", "evolution-aware"])
def test_every_built_in_policy_takes_every_event_and_evicts_only_what_it_holds(name):
    p = make_policy(name)
    p.handle(events.ModelDescribed("old", (1, 1), "prefix", 1, 0.1))
    p.handle(events.Inserted(("old", 0), 10, "old", (0,)))
    for event in _every_event("new", "old"):
        p.handle(event)
    held = {("old", 0), ("new", 0)}
    assert len(p) == 2 and all(key in p for key in held) and ("gone", 0) not in p
    first = p.victim()
    assert first in held
    p.handle(events.Released(first))
    assert len(p) == 1 and first not in p and p.victim() == (held - {first}).pop()
    p.handle(events.Released(("gone", 0)))  # an unknown key is ignored
    assert len(p) == 1
