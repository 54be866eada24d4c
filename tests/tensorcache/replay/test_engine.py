"""The engine: progress reports, counters that add up, and stores that lose entries without reporting it."""
from collections.abc import Sequence

from evolution_sim import simulate, total_bytes
from tensorcache.catalog import Entry
from tensorcache.events import Inserted
from tensorcache.replay import Store, Workload, replay, run


def test_progress_is_reported_every_thousand_events_and_at_the_end():
    work = Workload(simulate(n=1200, seed=14))
    calls = []
    replay(work, "lru", work.total_bytes // 10, population_size=8, sample_size=3,
           progress=lambda done, total: calls.append((done, total)))
    assert calls == [(0, 2400), (1000, 2400), (2000, 2400), (2400, 2400)]


def test_counters_add_up_to_what_each_lookup_got():
    records = simulate(n=80, seed=15)
    work = Workload(records)
    result = replay(work, "lfu", int(0.1 * total_bytes(records)), population_size=8, sample_size=3)
    served = [s for s in result.served if s.donor is not None]
    assert result.lookups == len(result.served) == 80 and result.lookups_served == len(served)
    assert result.bytes_served == sum(s.nbytes for s in served) == \
        result.transfer_bytes_served + result.revisit_bytes_served
    assert result.entries_served == sum(len(s.pairs) for s in served)
    assert result.bytes_requested == total_bytes(records)
    assert result.bytes_unbounded == work.unbounded.bytes_served and result.evictions > 0


class Forgetful(Store):
    """Admits everything, but silently loses every layer of the models in ``lost``."""

    def __init__(self, lost: set[str]) -> None:
        self.lost = lost

    def insert(self, event: Inserted) -> tuple[bool, Sequence[Entry]]:
        return True, ()

    def missing(self, donor: str, layers: Sequence[int]) -> list[int]:
        return list(layers) if donor in self.lost else []


def test_entries_a_store_lost_on_its_own_are_never_served():
    work = Workload(simulate(n=60, seed=16))
    favourite = max({s.donor for s in work.unbounded.served if s.donor},
                    key=lambda d: sum(s.donor == d for s in work.unbounded.served))
    result = run(work, Forgetful({favourite}), "forgetful")
    assert favourite not in {s.donor for s in result.served}
    assert 0 < result.bytes_served < work.unbounded.bytes_served
    everything = run(work, Forgetful(set(work.models)), "forgets all")
    assert everything.lookups_served == 0 and everything.bytes_served == 0
