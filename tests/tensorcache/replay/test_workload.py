"""The workload: the merged event stream, models prepared once, the unbounded reference and the request
stream Belady's next uses are counted on."""
import pytest

from evolution_sim import simulate
from tensorcache.replay import Workload, merge_events, parse_records


def test_events_insert_before_lookup_and_only_finished_models_donate():
    records = simulate(n=40, workers=4, seed=3)
    events = merge_events(parse_records(records))
    assert [(e.time, not e.insert) for e in events] == sorted((e.time, not e.insert) for e in events)
    work = Workload(records)
    end = {r["model_id"]: r["t_end"] for r in records}
    start = {r["model_id"]: r["t_start"] for r in records}
    donors = [(s.model_id, s.donor) for s in work.unbounded.served if s.donor is not None]
    assert donors and all(end[d] <= start[m] for m, d in donors)


def test_the_reference_is_made_from_a_whole_workload():
    """Regression: the reference used to be replayed inside ``__init__`` before the workload was complete,
    so its own unbounded counters stayed 0 and its yields were NaN."""
    work = Workload(simulate(n=40, seed=1))
    ref = work.unbounded
    assert ref.bytes_served > 0 and ref.bytes_unbounded == ref.bytes_served
    assert ref.total_yield == ref.object_hit_ratio == 1.0 and ref.evictions == 0
    assert ref.lookups == 40 and len(ref.served) == 40


def test_models_are_prepared_with_their_policy_events():
    records = simulate(n=6, seed=2)
    work = Workload(records)
    model = work.models["m3"]
    assert [ev.key for ev in model.inserts] == [("m3", i) for i in range(6)]
    assert [ev.size for ev in model.inserts] == records[3]["layer_bytes"] == list(model.evaluation.sizes)
    assert model.deps[2] == (0, 1, 2)  # no recorded deps: prefix mode depends on every earlier position
    assert model.described.arch == tuple(records[3]["arch"]) and model.described.score == records[3]["score"]
    assert Workload(records, "compatible").models["m3"].deps[2] == ()
    with pytest.raises(ValueError, match="unknown transfer mode 'suffix'"):
        Workload(records, "suffix")


def test_request_stream_names_the_newest_copy_and_counts_the_clock():
    records = simulate(n=50, seed=4)
    work = Workload(records)
    inserted = sum(len(r["layer_bytes"]) for r in records)
    requested = sum(len(s.pairs) for s in work.requested)
    assert work.clock[0] == 0 and work.clock[-1] == inserted + requested and work.clock == sorted(work.clock)
    assert sum(s.nbytes for s in work.requested) == work.unbounded.bytes_served
    uses = work.next_uses()
    assert sum(len(v) for v in uses.values()) == requested
    admitted = {(ev.evaluation.model_id, i): work.clock[ev.index] + i
                for ev in work.events if ev.insert for i in range(len(ev.evaluation.sizes))}
    assert all(admitted[entry] < positions[0] and positions == sorted(positions) for entry, positions in uses.items())
    end = {r["model_id"]: r["t_end"] for r in records}
    keys = {r["model_id"]: r["layer_keys"] for r in records}
    for unb, req in zip(work.unbounded.served, work.requested):  # the newest copy of the same layers
        assert [c for c, _ in unb.pairs] == [c for c, _ in req.pairs]
        if unb.donor is not None:
            assert end[req.donor] >= end[unb.donor]
            assert [keys[req.donor][j] for _, j in req.pairs] == [keys[unb.donor][j] for _, j in unb.pairs]
