"""The offline bounds: never below what any eviction schedule serves (exhaustive search on small traces),
LP <= interval relaxation, the interval sweep equals its LP, and a trace where the Belady heuristic loses."""
import itertools
import random
from functools import lru_cache

import pytest

pytest.importorskip("scipy")

from hypothesis import given, settings, strategies as st

from tensorcache.bound import interval_bound, lp_bound, pack_intervals, pack_weighted, requests, value_bound
from tensorcache.catalog import Catalog, LayerRecord, ModelRecord
from tensorcache.replay import Workload, replay

POLICIES = ("fifo", "lru", "lfu", "donor-window", "evolution-aware", "belady")


def record(i, arch, sizes, t0, t1, deps, parent=None, score=None):
    keys = [bytes([j]) + bytes(arch[p] + 1 for p in d).ljust(15, b"\0") for j, d in enumerate(deps)]
    return {"model_id": f"m{i}", "parent_id": parent, "donor_id": None, "worker": 0, "t_start": float(t0),
            "t_end": float(t1), "arch": list(arch), "mutation_pos": None, "score": float(i if score is None else score),
            "layers_served": 0, "bytes_served": 0, "tier": None, "cache_s": 0.0, "train_s": float(t1 - t0),
            "layer_keys": [k.hex() for k in keys], "layer_bytes": list(sizes), "layer_deps": [list(d) for d in deps]}


def six_records():
    """One layer per model, sizes 4/6/4 B for archs 0/1/2; at 10 B the Belady heuristic serves 0.4 of the
    unbounded cache's bytes, lru, fifo, lfu and donor-window 0.6."""
    spec = [(0, 0, 1.5), (1, 1, 3.5), (2, 2, 3.5), (1, 3, 5.5), (0, 4, 5.5), (1, 5, 5.5)]
    size = {0: 4, 1: 6, 2: 4}
    return [record(i, [a], [size[a]], t0, t1, [[0]]) for i, (a, t0, t1) in enumerate(spec)]


def exhaustive(work: Workload, capacity: int, which: str = "all", value: bool = False) -> float:
    """Most bytes (``value``: training seconds, ``ReplayResult.value_served``) of ``which`` lookups any eviction
    schedule serves: after each insert keep any subset of the held and new entries that fits; every lookup
    takes the one donor ``Catalog.find`` picks."""
    events = work.events
    records = {e.model_id: ModelRecord(e.model_id, (), e.score, e.parent_id,
                                       tuple(LayerRecord(k, {}, d) for k, d in zip(e.keys, work.deps[e.model_id])))
               for e in work.evaluations}

    def served(held, e):
        if which != "all" and work.revisit[e.model_id] != (which == "revisit"):
            return 0
        catalog = Catalog()
        for m, j in sorted(held):
            catalog.hold(records[m], j, 0)
        found = catalog.find(e.keys, e.parent_id, work.mode)
        if found is None:
            return 0
        if value:
            return sum(work.models[e.model_id].values[c] for c, _ in found[1])
        return sum(work.sizes[found[0]][j] for _, j in found[1])

    @lru_cache(maxsize=None)
    def best(i, held):
        if i == len(events):
            return 0
        e = events[i].evaluation
        if not events[i].insert:
            return served(held, e) + best(i + 1, held)
        pool = sorted(held | {(e.model_id, j) for j in range(len(e.keys))})
        out = 0
        for n in range(len(pool) + 1):
            for keep in itertools.combinations(pool, n):
                if sum(work.sizes[m][j] for m, j in keep) <= capacity:
                    out = max(out, best(i + 1, frozenset(keep)))
        return out

    return best(0, frozenset())


def random_trace(rng, n, layers, positions=2, choices=2, train=False):
    recs = []
    for i in range(n):
        arch = [rng.randrange(choices) for _ in range(positions)]
        deps = [[] if j == 0 and layers > 1 else list(range(min(j, positions - 1) + 1)) for j in range(layers)]
        sizes = [rng.randint(1, 6) for _ in range(layers)]
        t0 = i + rng.random() * 0.5
        recs.append(record(i, arch, sizes, t0, t0 + rng.choice([0.7, 1.7, 2.7]), deps))
        if train:  # training seconds unlike the times in the trace, so a slow child's layers are worth more
            recs[-1]["train_s"] = rng.choice([0.0, 1.0, 10.0, 100.0])
    # one key names one tensor: give every copy of a key the size of its first copy
    first = {}
    for r in recs:
        r["layer_bytes"] = [first.setdefault(k, b) for k, b in zip(r["layer_keys"], r["layer_bytes"])]
    return recs


def test_six_record_trace_bound_is_above_every_policy_and_the_heuristic_loses():
    work = Workload(six_records(), "prefix")
    unbounded = work.unbounded.bytes_served
    got = {p: replay(work, p, 10, population_size=2, sample_size=1).bytes_served for p in POLICIES}
    assert got["belady"] / unbounded == pytest.approx(0.4) and got["lru"] / unbounded == pytest.approx(0.6)
    best = exhaustive(work, 10)
    assert max(got.values()) <= best <= lp_bound(work, 10) <= interval_bound(work, 10)
    assert best == unbounded  # keeping the 6 B arch-1 layer and one 4 B layer serves everything


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("mode", ["prefix", "compatible"])
def test_random_small_traces_bounds_dominate_exhaustive_optimum(seed, mode):
    rng = random.Random(seed)
    recs = random_trace(rng, n=6, layers=2)
    work = Workload(recs, mode)
    capacity = rng.randint(4, 12)
    for which in ("all", "transfer", "revisit"):
        best = exhaustive(work, capacity, which)
        lp, flow = lp_bound(work, capacity, which), interval_bound(work, capacity, which)
        assert best <= lp + 1e-6 <= flow + 2e-6, (which, best, lp, flow)
    for p in POLICIES:
        assert replay(work, p, capacity, population_size=3, sample_size=2).bytes_served <= interval_bound(work, capacity)


def test_single_layer_traces_lp_is_mostly_exact_and_within_a_stated_gap():
    """One layer per model, 60 random traces: the LP equals the optimum on at least 45 and is never above
    1.75x it (fractional holds of a layer that does not fit whole are the gap; measured 49 and 1.75)."""
    exact, worst = 0, 1.0
    for seed in range(60):
        rng = random.Random(100 + seed)
        work = Workload(random_trace(rng, n=7, layers=1, positions=1, choices=3), "prefix")
        capacity = rng.randint(3, 10)
        best, lp = exhaustive(work, capacity), lp_bound(work, capacity)
        assert best <= lp + 1e-6 <= interval_bound(work, capacity) + 2e-6
        exact += lp <= best + 1e-6
        worst = max(worst, lp / best if best else 1.0)
    assert exact >= 45 and worst <= 1.75 + 1e-9


@pytest.mark.parametrize("seed", range(20))
def test_interval_sweep_equals_its_lp(seed):
    import numpy as np
    from scipy.optimize import linprog

    rng = random.Random(seed)
    intervals = []
    for _ in range(rng.randint(1, 25)):
        s = rng.randint(0, 15)
        intervals.append((s, s + rng.randint(0, 8), rng.randint(1, 9)))
    capacity = rng.randint(0, 20)
    slots = range(max(e for _, e, _ in intervals))
    a = np.array([[1.0 if s <= t < e else 0.0 for s, e, _ in intervals] for t in slots]).reshape(len(slots), -1)
    res = linprog(-np.ones(len(intervals)), A_ub=a if len(slots) else None, b_ub=[capacity] * len(slots) or None,
                  bounds=[(0, size) for _, _, size in intervals], method="highs")
    assert pack_intervals(intervals, capacity) == pytest.approx(-res.fun)


def test_requests_split_into_transfer_and_revisit():
    work = Workload(six_records(), "prefix")
    every = requests(work)
    assert every and len(every) == len(requests(work, "transfer")) + len(requests(work, "revisit"))
    assert all(r.revisit for r in requests(work, "revisit")) and requests(work, "revisit")
    with pytest.raises(ValueError, match="which"):
        requests(work, "bogus")


def test_key_with_two_sizes_is_named():
    recs = six_records()
    recs[3]["layer_bytes"] = [7]
    with pytest.raises(ValueError, match=recs[3]["layer_keys"][0]):
        interval_bound(Workload(recs, "prefix"), 10)


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("mode", ["prefix", "compatible"])
def test_value_bound_dominates_the_exhaustive_optimum_of_training_seconds(seed, mode):
    rng = random.Random(500 + seed)
    work = Workload(random_trace(rng, n=6, layers=2, train=True), mode)
    capacity = rng.randint(4, 12)
    for which in ("all", "transfer", "revisit"):
        best = exhaustive(work, capacity, which, value=True)
        assert best <= value_bound(work, capacity, which) * (1 + 1e-9) + 1e-9, (which, best)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), n=st.integers(2, 9), layers=st.integers(1, 3), capacity=st.integers(0, 20),
       mode=st.sampled_from(["prefix", "compatible"]))
def test_value_bound_is_above_every_policy_on_random_traces(seed, n, layers, capacity, mode):
    rng = random.Random(seed)
    work = Workload(random_trace(rng, n=n, layers=layers, train=True), mode)
    bound = {which: value_bound(work, capacity, which) for which in ("all", "transfer", "revisit")}
    for p in POLICIES:
        got = replay(work, p, capacity, population_size=min(3, n), sample_size=1)
        assert got.value_served <= bound["all"] * (1 + 1e-9) + 1e-9, p
        assert got.transfer_value_served <= bound["transfer"] * (1 + 1e-9) + 1e-9, p
        assert got.revisit_value_served <= bound["revisit"] * (1 + 1e-9) + 1e-9, p


@pytest.mark.parametrize("seed", range(20))
def test_weighted_packing_with_bytes_as_values_is_the_exact_sweep(seed):
    rng = random.Random(seed)
    intervals = []
    for _ in range(rng.randint(1, 25)):
        s = rng.randint(0, 15)
        intervals.append((s, s + rng.randint(0, 8), rng.randint(0, 9)))
    capacity = rng.randint(0, 20)
    assert pack_weighted([(s, e, size, float(size)) for s, e, size in intervals], capacity) == \
        pytest.approx(pack_intervals(intervals, capacity))


def test_weighted_packing_keeps_the_dearer_interval_where_bytes_tie():
    """Two 5 B intervals overlap in a 5 B tier: bytes cannot choose, the values can (3 s beats 1 s)."""
    assert pack_intervals([(0, 4, 5), (2, 6, 5)], 5) == 5
    assert pack_weighted([(0, 4, 5, 1.0), (2, 6, 5, 3.0)], 5) == pytest.approx(3.0)
    assert pack_weighted([(0, 4, 5, 1.0), (4, 6, 5, 3.0), (3, 3, 9, 2.0)], 5) == pytest.approx(6.0)
    with pytest.raises(ValueError, match="values"):
        pack_weighted([(0, 1, 1, -1.0)], 5)


def test_replay_values_are_training_seconds_shared_by_bytes():
    """A child served its whole 2-layer model from its revisited parent gets all of its training seconds."""
    recs = [record(0, [0], [1, 3], 0, 1, [[], [0]]), record(1, [0], [1, 3], 2, 3, [[], [0]], parent="m0")]
    recs[1]["train_s"] = 8.0
    result = replay(Workload(recs, "prefix"), "lru", 100, population_size=1, sample_size=1)
    assert result.revisit_value_served == pytest.approx(8.0) and result.transfer_value_served == 0.0
    recs[1]["train_s"] = 0.5  # what it trained, not the time it ran (1 s)
    result = replay(Workload(recs, "prefix"), "lru", 100, population_size=1, sample_size=1)
    assert result.value_served == pytest.approx(0.5) and result.revisit_value_yield == pytest.approx(1.0)
