"""Eviction policies: exact victim orders on hand-made sequences, the registry, donor-window windows,
the evolution-aware value model and its donor-window fallback, Belady, and held-key invariants."""
import random

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tensorcache import events
from tensorcache.policies import registry as policy_registry
from tensorcache.policies import (LFU, LRU, POLICIES, Belady, DonorWindow, EvolutionAware, FIFO, Policy,
                                  make_policy, register_policy)


def drain(policy):
    """Evict everything, returning the victims in order (as a tier does: victim, then on_release)."""
    out = []
    while len(policy):
        key = policy.victim()
        policy.on_release(key)
        out.append(key)
    return out


def insert_model(policy, model, sizes, deps=None):
    for i, size in enumerate(sizes):
        policy.on_insert((model, i), size, model, tuple(range(i + 1)) if deps is None else deps[i])


# ------------------------------------------------------------------------------- baselines
def test_fifo_ignores_hits_and_reinsert_moves_to_the_back():
    p = FIFO()
    for k in "abc":
        p.on_insert(k, 1, "m")
    p.on_hit("a")
    p.on_insert("b", 1, "m")
    assert drain(p) == ["a", "c", "b"]


def test_lru_hits_refresh_recency():
    p = LRU()
    for k in "abcd":
        p.on_insert(k, 1, "m")
    p.on_hit("a")
    p.on_hit("c")
    p.on_hit("zz")  # not held: ignored
    assert drain(p) == ["b", "d", "a", "c"]


def test_lfu_counts_hits_and_breaks_ties_by_recency():
    p = LFU()
    for k in "abcd":
        p.on_insert(k, 1, "m")
    for k in "acdac":  # a: 2, b: 0, c: 2 (last hit later than a's), d: 1
        p.on_hit(k)
    assert drain(p) == ["b", "d", "a", "c"]


def test_lfu_reinsert_resets_the_count():
    p = LFU()
    p.on_insert("a", 1, "m")
    p.on_insert("b", 1, "m")
    p.on_hit("a")
    p.on_insert("a", 1, "m")
    assert drain(p) == ["b", "a"]  # both at 0 hits; b is the less recent


@pytest.mark.parametrize("name", ["fifo", "lru", "lfu", "donor-window", "evolution-aware"])
def test_empty_policy_raises_lookup_error(name):
    p = make_policy(name)
    with pytest.raises(LookupError, match=name):
        p.victim()
    p.on_insert(("m", 0), 1, "m")
    p.on_release(("m", 0))
    p.on_release(("m", 0))  # removing twice is harmless
    assert len(p) == 0 and ("m", 0) not in p
    with pytest.raises(LookupError):
        p.victim()
    with pytest.raises(ValueError, match="-5"):
        p.on_insert(("m", 1), -5, "m")


# ---------------------------------------------------------------------------- donor window
def test_donor_window_evicts_least_popular_model_deepest_layer_first():
    p = DonorWindow()
    insert_model(p, "x", [1, 1, 1])
    insert_model(p, "y", [1, 1])
    insert_model(p, "z", [1])
    p.on_donation("y")
    assert p.victim() == ("x", 2)
    assert drain(p) == [("x", 2), ("x", 1), ("x", 0), ("z", 0), ("y", 1), ("y", 0)]


@pytest.mark.parametrize("touch", ["hit", "insert", "donation"])
def test_donor_window_ties_go_to_the_least_recently_touched_model(touch):
    p = DonorWindow()
    insert_model(p, "x", [1, 1])
    insert_model(p, "z", [1])
    p.on_donation("w")  # w holds nothing; x and z both have popularity 0... until x is touched:
    if touch == "hit":
        p.on_hit(("x", 0))
    elif touch == "insert":
        p.on_insert(("x", 2), 1, "x")
    else:
        p.on_donation("x")
        p.on_donation("z")  # equal popularity again; z's donation is the more recent
        assert drain(p) == [("x", 1), ("x", 0), ("z", 0)]
        return
    assert drain(p)[0] == ("z", 0)


def test_donor_window_expiry_a_donor_popular_long_ago_loses_to_a_recent_one():
    p = DonorWindow(window=3)
    p.on_insert(("a", 0), 1, "a")
    p.on_insert(("b", 0), 1, "b")
    p.on_donation("a")
    p.on_donation("a")
    p.on_evaluation()
    p.on_evaluation()
    p.on_donation("b")
    assert (p.popularity("a"), p.popularity("b")) == (2, 1)
    assert p.victim() == ("b", 0)
    p.on_evaluation()  # clock 3: the donations of evaluation 0 are still among the last 3
    assert p.victim() == ("b", 0)
    p.on_evaluation()  # clock 4: they expire
    assert (p.popularity("a"), p.popularity("b")) == (0, 1)
    assert p.victim() == ("a", 0)
    for _ in range(2):
        p.on_evaluation()
    assert p.popularity("b") == 0
    assert p.victim() == ("a", 0)  # tie at 0: a was touched least recently


def test_donor_window_size_aware_ranks_donations_per_held_byte():
    def run(size_aware):
        p = DonorWindow(size_aware=size_aware)
        insert_model(p, "a", [500, 500])
        p.on_insert(("b", 0), 300, "b")
        for m in "aab":
            p.on_donation(m)
        return drain(p)

    assert run(False) == [("b", 0), ("a", 1), ("a", 0)]
    # a: 2 donations / 1000 B < b: 1 / 300 B; once a holds 500 B it is worth 2/500 > 1/300
    assert run(True) == [("a", 1), ("b", 0), ("a", 0)]


@pytest.mark.parametrize("size_aware", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_donor_window_victims_match_a_plain_reading_of_its_rule(size_aware, seed):
    """Random inserts, hits, donations, evaluations and evictions: every victim is the one the rule names,
    read plainly (least popular model in the window [per held byte], least recently touched; its deepest,
    then latest, layer), whether a model's rank rose (insert, hit, donation) or fell (expiry, a release)."""
    rng = random.Random(seed)
    p = DonorWindow(window=5, size_aware=size_aware)
    clock, tick = 0, 0
    held: dict[tuple[str, int], tuple[int, int]] = {}  # key -> (size, insert tick)
    touched: dict[str, int] = {}
    donations: list[tuple[int, str]] = []

    def expected():
        popularity = {m: sum(1 for c, d in donations if d == m and c >= clock - 5) for m in touched}
        nbytes = {m: sum(size for (k, _), (size, _) in held.items() if k == m) for m in touched}
        value = {m: popularity[m] / max(nbytes[m], 1) if size_aware else popularity[m] for m in touched}
        model = min(touched, key=lambda m: (value[m], touched[m]))
        return max((k for k in held if k[0] == model), key=lambda k: (k[1], held[k][1]))

    for _ in range(400):
        op = rng.random()
        model = f"m{rng.randrange(8)}"
        tick += 1
        if op < 0.4:
            key = (model, rng.randrange(4))
            held[key], touched[model] = (rng.randrange(1, 50), tick), tick
            p.on_insert(key, held[key][0], model)
        elif op < 0.55 and held:
            key = rng.choice(sorted(held))
            touched[key[0]] = tick
            p.on_hit(key)
        elif op < 0.7:
            donations.append((clock, model))
            if model in touched:
                touched[model] = tick
            p.on_donation(model)
        elif op < 0.85:
            clock += 1
            p.on_evaluation()
        elif held:
            key = p.victim() if op < 0.95 else rng.choice(sorted(held))
            del held[key]
            if not any(k[0] == key[0] for k in held):
                del touched[key[0]]
            p.on_release(key)
        if held:
            assert p.victim() == expected()


@pytest.mark.parametrize("name", ["fifo", "lru", "lfu", "donor-window", "donor-window-bytes", "evolution-aware"])
@pytest.mark.parametrize("seed", range(3))
def test_entries_found_at_once_give_the_victims_of_one_insert_each(name, seed):
    """A model's entries found held in a shared tier (``Found``, one event) leave a policy deciding exactly as
    the same entries inserted one by one: the next victim after every step, and the whole eviction order."""
    rng = random.Random(seed)
    make = (lambda: DonorWindow(window=5, size_aware=True)) if name == "donor-window-bytes" else lambda: build(name)
    one_by_one, at_once = make(), make()
    for _ in range(120):
        op, model = rng.random(), f"m{rng.randrange(10)}"
        if op < 0.4:
            layers = rng.sample(range(6), rng.randrange(1, 6))  # re-finding a held layer included
            entries = tuple(((model, layer), rng.randrange(1, 50), (layer,)) for layer in layers)
            for key, size, deps in entries:
                one_by_one.handle(events.Inserted(key, size, model, deps))
            at_once.handle(events.Found(model, entries))
        else:
            event = (events.Donated(model) if op < 0.6 else events.EvaluationDone() if op < 0.75
                     else events.LayerServed((model, rng.randrange(6))))
            if op >= 0.9 and len(one_by_one):
                event = events.Released(one_by_one.victim())
            one_by_one.handle(event)
            at_once.handle(event)
        assert len(one_by_one) == len(at_once)
        if len(one_by_one):
            assert one_by_one.victim() == at_once.victim()
    assert drain(one_by_one) == drain(at_once)


def test_donor_window_rejects_a_bad_window():
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="window"):
            DonorWindow(window=bad)


# ------------------------------------------------------------------------- evolution aware
def test_evolution_aware_ranks_live_members_by_donor_chance_times_lifetime():
    p = EvolutionAware()
    for m in ("top", "mid", "old"):  # inserted newest-last: recency alone would evict top first
        p.on_insert((m, 0), 100, m)
    p.on_population([("old", 0.1), ("mid", 0.5), ("top", 0.9)], population_size=3, sample_size=2)
    # P(donor) with 2 draws from 3: old (1/3)^2, mid (2/3)^2-(1/3)^2, top 1-(2/3)^2; lifetimes 1, 2, 3
    assert p.rerank_and_reuse(("old", 0)) == pytest.approx(1 / 9)
    assert p.rerank_and_reuse(("mid", 0)) == pytest.approx(2 / 3)
    assert p.rerank_and_reuse(("top", 0)) == pytest.approx(5 / 3)
    assert drain(p) == [("old", 0), ("mid", 0), ("top", 0)]


def test_evolution_aware_lifetime_counts_the_free_places_of_a_filling_population():
    p = EvolutionAware()
    p.on_insert(("a", 0), 1, "a")
    p.on_population([("a", 1.0)], population_size=4, sample_size=1)
    assert p.rerank_and_reuse(("a", 0)) == pytest.approx(4.0)  # sole member, dies after 3 more arrivals + 1 step


def test_evolution_aware_splits_tied_scores_evenly():
    p = EvolutionAware()
    for m in "abc":
        p.on_insert((m, 0), 1, m)
    p.on_population([("a", 0.5), ("b", 0.5), ("c", None)], population_size=3, sample_size=2)
    # c (no score) is worst: P(c) = (1/3)^2; a and b share 1 - (1/3)^2
    assert p.rerank_and_reuse(("c", 0)) == pytest.approx(1 / 9 * 3)
    assert p.rerank_and_reuse(("a", 0)) == pytest.approx(4 / 9 * 1)
    assert p.rerank_and_reuse(("b", 0)) == pytest.approx(4 / 9 * 2)


def test_evolution_aware_evicts_a_dead_model_before_live_ones():
    p = EvolutionAware()
    p.on_insert(("b", 0), 10, "b")
    p.on_insert(("a", 0), 10, "a")
    p.on_population([("a", 0.9), ("b", 0.1)], population_size=2, sample_size=1)
    p.on_insert(("c", 0), 10, "c")
    p.on_population([("b", 0.1), ("c", 0.5)], population_size=2, sample_size=1)
    for _ in range(5):  # a is popular and recently used, but it left the population
        p.on_donation("a")
        p.on_hit(("a", 0))
    assert p.rerank_and_reuse(("a", 0)) == 0.0
    assert drain(p) == [("a", 0), ("b", 0), ("c", 0)]  # b: 1/2 x 1, c: 1/2 x 2


def test_evolution_aware_newcomers_rank_like_the_median_member_until_they_age_out():
    p = EvolutionAware()
    for m in ("c", "b", "a"):
        p.on_insert((m, 0), 1, m)
    members = [("a", 0.1), ("b", 0.5), ("c", 0.9)]
    p.on_population(members, population_size=3, sample_size=2)
    p.on_insert(("n", 0), 1, "n")  # finished after the last update: newest member, median score
    assert p.rerank_and_reuse(("n", 0)) == pytest.approx(1 / 3 * 3)
    assert [p.victim()] == [("a", 0)]
    p.on_population(members, population_size=3, sample_size=2)  # still not listed: one step older
    assert p.rerank_and_reuse(("n", 0)) == pytest.approx(1 / 3 * 2)
    p.on_population(members, population_size=3, sample_size=2)
    p.on_population(members, population_size=3, sample_size=2)
    assert p.rerank_and_reuse(("n", 0)) == 0.0
    assert drain(p) == [("n", 0), ("a", 0), ("b", 0), ("c", 0)]


def test_evolution_aware_mutation_histogram_decides_which_layers_survive():
    def order(position):
        p = EvolutionAware()
        p.on_insert(("m", 0), 10, "m", (0,))
        p.on_insert(("m", 1), 30, "m", (3,))  # deeper and bigger
        p.on_population([("m", 1.0)], population_size=1, sample_size=1)
        for _ in range(20):
            p.on_mutation(position)
        return drain(p)

    assert order(0) == [("m", 0), ("m", 1)]  # (1 - 21/24) / 10 B < (1 - 1/24) / 30 B
    assert order(3) == [("m", 1), ("m", 0)]


def test_evolution_aware_equally_worthless_layers_go_biggest_first():
    p = EvolutionAware()
    for i, size in enumerate([10, 30, 20]):
        p.on_insert(("m", i), size, "m", (0, i + 1))
    p.on_population([("m", 1.0)], population_size=1, sample_size=1)
    for _ in range(50):
        p.on_mutation(0)  # every child breaks every layer: equal (small) reuse, so bytes decide
    covers = {p.rerank_and_reuse(("m", i)) for i in range(3)}
    assert len(covers) == 1 and covers.pop() == pytest.approx(1 - 52 / 54)
    assert drain(p) == [("m", 1), ("m", 2), ("m", 0)]


def test_evolution_aware_counts_repeated_dependencies_once():
    p = EvolutionAware()
    p.on_insert(("m", 0), 1, "m", (1, 1, 1))
    p.on_insert(("m", 1), 1, "m", (1,))
    p.on_population([("m", 1.0)], population_size=1, sample_size=1)
    assert p.rerank_and_reuse(("m", 0)) == p.rerank_and_reuse(("m", 1)) == pytest.approx(1 / 2)


def test_evolution_aware_layer_depending_on_every_position_is_worth_nothing():
    p = EvolutionAware()
    insert_model(p, "m", [1, 1, 1])  # prefix deps: the last layer depends on positions 0..2
    p.on_population([("m", 1.0)], population_size=1, sample_size=1)
    assert p.rerank_and_reuse(("m", 2)) == 0.0 and p.rerank_and_reuse(("m", 0)) == pytest.approx(2 / 3)
    assert drain(p) == [("m", 2), ("m", 1), ("m", 0)]


def test_evolution_aware_ties_follow_hits_then_recency_updated_after_a_ranking():
    p = EvolutionAware()
    p.on_insert(("d1", 0), 1, "d1")
    p.on_insert(("d2", 0), 1, "d2")
    p.on_insert(("d3", 0), 1, "d3")
    p.on_population([("d1", 1.0), ("d2", 1.0), ("d3", 1.0)], 3, 1)
    p.on_population([("live", 1.0)], 3, 1)  # all three are dead now: value 0, ties by hits, recency
    assert p.victim() == ("d1", 0)  # ranks everything
    p.on_hit(("d1", 0))
    assert p.victim() == ("d2", 0)
    p.on_donation("d2")
    assert p.victim() == ("d3", 0)
    p.on_insert(("d3", 1), 1, "d3")  # inserted after the ranking, into the same tie; d3 is now newest
    assert drain(p) == [("d2", 0), ("d3", 1), ("d3", 0), ("d1", 0)]


FULL = (0, 1, 2)  # deps of a layer that depends on every position of a 3-position arch


def described(p, model, arch, sizes=(1, 1), deps=((), FULL), mode="prefix"):
    """Describe ``model`` and insert one layer per size (stem first, as a cache put does)."""
    p.on_model(model, arch, mode, len(sizes))
    insert_model(p, model, sizes, deps)


def test_evolution_aware_values_an_architecture_a_member_can_mutate_back_into():
    p = EvolutionAware()
    described(p, "near", (0, 0, 1))  # one mutation away from the member
    described(p, "far", (2, 2, 2))  # three away: no single mutation recreates it
    described(p, "m", (0, 0, 0))
    p.on_population([("m", 1.0)], population_size=1, sample_size=1)
    for _ in range(10):
        p.on_mutation(2)
    # P(mutation at position 2) = 11/13, then value 1 among the 2 others seen there (0, 1, 2 seen): 1/2
    assert p.rerank_and_reuse(("near", 1)) == pytest.approx(11 / 13 / 2)
    assert p.rerank_and_reuse(("far", 1)) == 0.0
    assert p.rerank_and_reuse(("m", 1)) == 0.0  # a child never equals its parent
    assert p.victim() in {("far", 1), ("m", 1)} and ("near", 1) not in drain(p)[:2]


def test_evolution_aware_keeps_one_copy_of_a_repeated_architecture():
    p = EvolutionAware()
    described(p, "old", (0, 0, 1))
    described(p, "new", (0, 0, 1))  # the same architecture evaluated again: the same layer contents
    described(p, "m", (0, 0, 0))
    p.on_population([("m", 1.0)], population_size=1, sample_size=1)
    assert p.rerank_and_reuse(("old", 1)) == 0.0 and p.rerank_and_reuse(("new", 1)) > 0  # the older copy is spare
    assert drain(p)[:2] == [("old", 1), ("old", 0)]


def test_evolution_aware_compatible_mode_keeps_whole_models_not_scattered_layers():
    p = EvolutionAware()
    described(p, "old", (0, 0, 1), mode="compatible")
    described(p, "new", (0, 0, 1), mode="compatible")  # the same arch: "old" is spare as a whole
    described(p, "other", (0, 2, 1), mode="compatible")  # shares the stem content but is another donor
    described(p, "m", (0, 0, 0), mode="compatible")
    p.on_population([("m", 1.0)], population_size=1, sample_size=1)
    assert p.rerank_and_reuse(("old", 0)) == p.rerank_and_reuse(("old", 1)) == 0.0
    assert p.rerank_and_reuse(("new", 0)) == p.rerank_and_reuse(("new", 1)) > 0  # m can mutate into (0, 0, 1): all its layers serve
    assert p.rerank_and_reuse(("m", 0)) > 0 == p.rerank_and_reuse(("m", 1))  # m's children take its stem; its last layer changes
    # "other" shares the stem content with everyone but is a donor of its own: not spare, only worth 0 now
    assert sorted(drain(p)[:2]) == [("old", 0), ("old", 1)]


def test_evolution_aware_prefix_layers_after_a_gap_are_worthless():
    p = EvolutionAware()
    described(p, "a", (0, 0, 1), sizes=(1, 1, 1), deps=((), (0,), FULL))
    described(p, "m", (0, 0, 0), sizes=(1, 1, 1), deps=((), (0,), FULL))
    p.on_population([("m", 1.0), ("a", 1.0)], population_size=2, sample_size=1)
    p.on_release(("a", 1))  # "a" lost its middle layer: its last one can no longer be served
    assert p.rerank_and_reuse(("a", 2)) == 0.0 and p.victim() == ("a", 2)
    compat = EvolutionAware()  # compatible mode serves layers wherever they sit
    described(compat, "a", (0, 0, 1), sizes=(1, 1, 1), deps=((), (0,), FULL), mode="compatible")
    described(compat, "m", (0, 0, 0), sizes=(1, 1, 1), deps=((), (0,), FULL), mode="compatible")
    compat.on_population([("m", 1.0), ("a", 1.0)], population_size=2, sample_size=1)
    compat.on_release(("a", 1))
    assert compat.rerank_and_reuse(("a", 2)) > 0


def test_evolution_aware_does_not_evict_a_model_while_its_layers_arrive():
    p = EvolutionAware()
    described(p, "m", (0, 0, 0), sizes=(1, 1, 1), deps=((), (0,), FULL))
    p.on_population([("m", 1.0)], population_size=2, sample_size=1)
    p.on_model("n", (0, 0, 1), "prefix", 3)
    p.on_insert(("n", 0), 1, "n", ())  # the stem arrives first; "m" holds the same stem with a longer run
    assert p.rerank_and_reuse(("n", 0)) > 0 and p.victim() != ("n", 0)


def test_evolution_aware_rejects_a_bad_refresh():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="refresh"):
            EvolutionAware(refresh=bad)


def random_ops(seed, n=600):
    rng = random.Random(seed)
    ops = []
    for _ in range(n):
        m, layer = f"m{rng.randrange(12)}", rng.randrange(4)
        ops.append((rng.choice(["insert", "insert", "hit", "donate", "eval", "remove", "evict"]), m, layer,
                    rng.randint(1, 100)))
    return ops


def apply(policy, op, m, layer, size):
    """One random operation; returns the victim for 'evict' (None when empty)."""
    key = (m, layer)
    if op == "insert":
        policy.on_insert(key, size, m, tuple(range(layer + 1)))
    elif op == "hit":
        policy.on_hit(key)
    elif op == "donate":
        policy.on_donation(m)
    elif op == "eval":
        policy.on_evaluation()
    elif op == "remove":
        policy.on_release(key)
    elif len(policy):
        victim = policy.victim()
        policy.on_release(victim)
        return victim
    return None


@pytest.mark.parametrize("seed", range(3))
def test_evolution_aware_without_population_state_behaves_like_donor_window(seed):
    ref, p = DonorWindow(window=5), EvolutionAware(window=5)
    ops = random_ops(seed)
    for op in ops[:300]:
        assert apply(p, *op) == apply(ref, *op)
    p.on_population([("m1", 0.3), ("m2", 0.7)], population_size=4, sample_size=2)
    differ = 0
    for op in ops[300:450]:  # the population takes over; both evict its choice to stay comparable
        if op[0] == "evict" and len(p):
            own, theirs = p.victim(), ref.victim()
            differ += own != theirs
            op = ("remove", *own, 0)
        apply(p, *op)
        apply(ref, *op)
    assert differ > 0
    p.on_population([], population_size=4, sample_size=2)  # state withdrawn: back to the fallback
    for op in ops[450:]:
        assert apply(p, *op) == apply(ref, *op)


def test_evolution_aware_rejects_bad_state():
    p = EvolutionAware()
    with pytest.raises(ValueError, match="exceed"):
        p.on_population([("a", 1.0), ("b", 2.0)], population_size=1, sample_size=1)
    with pytest.raises(ValueError, match="sample_size"):
        p.on_population([("a", 1.0)], population_size=2, sample_size=0)
    for bad in (-1, 2.5, "3"):
        with pytest.raises(ValueError, match="mutation position"):
            p.on_mutation(bad)
    with pytest.raises(ValueError, match="deps.*-2"):
        p.on_insert(("a", 0), 1, "a", (0, -2))
    p.on_mutation(np.int64(2))  # numpy ints are positions too
    p.on_insert(("a", 0), 1, "a", (np.int64(0),))
    assert len(p) == 1


# ------------------------------------------------------------------------------------ Belady
def test_belady_evicts_the_farthest_next_use_and_follows_time():
    p = Belady({"a": [5], "b": [9, 2], "c": [7], "e": [], "f": [1]})
    for key, size in [("a", 10), ("b", 10), ("c", 10), ("d", 10)]:
        p.on_insert(key, size, "m")
    assert p.victim() == "d"  # never requested
    p.on_release("d")
    assert p.victim() == "c"  # next uses: a 5, b 2, c 7
    p.on_clock(3)
    assert p.victim() == "b"  # b's next use is now 9
    p.on_release("b")
    p.on_clock(6)
    assert p.victim() == "a"  # a is never requested again; c at 7
    p.on_clock(7)
    assert p.victim() == "a"  # c's use at 7 is still ahead ("at or after t")
    p.on_clock(8)
    p.on_insert("e", 5, "m")
    p.on_insert("f", 50, "m")
    p.on_insert("g", 5, "m")
    assert drain(p) == ["f", "a", "c", "e", "g"]  # all never again: bigger first, then inserted earlier
    with pytest.raises(ValueError, match="back"):
        p.on_clock(2)


def test_belady_is_a_registered_policy():
    p = make_policy("belady", next_uses={("m", 0): [3]})
    assert isinstance(p, Belady) and p.name == "belady"
    p.on_insert(("m", 0), 1, "m")
    p.on_hit(("m", 0))
    p.on_donation("m")
    p.on_evaluation()
    assert len(p) == 1 and ("m", 0) in p and drain(p) == [("m", 0)]


# ---------------------------------------------------------------------------------- registry
class MRU(Policy):
    """Evicts the most recently inserted entry (a user-defined policy)."""

    name = "mru"

    def __init__(self, start=0):
        self.stack = []

    def on_insert(self, key, size, model_id, deps=()):
        self.stack.append(key)

    def on_release(self, key):
        self.stack.remove(key)

    def victim(self):
        if not self.stack:
            raise LookupError("empty")
        return self.stack[-1]

    def __len__(self):
        return len(self.stack)

    def __contains__(self, key):
        return key in self.stack


@pytest.fixture
def registry(monkeypatch):
    monkeypatch.setattr(policy_registry, "POLICIES", dict(POLICIES))
    return policy_registry.POLICIES


def test_registry_has_every_builtin():
    assert {"fifo", "lru", "lfu", "donor-window", "evolution-aware", "belady"} <= set(POLICIES)
    assert all(POLICIES[name].name == name for name in POLICIES)


def test_make_policy_by_name_class_and_object():
    assert isinstance(make_policy("lru"), LRU)
    assert make_policy("donor-window", window=7, size_aware=True).window == 7
    assert isinstance(make_policy(LFU), LFU)
    obj = EvolutionAware()
    assert make_policy(obj) is obj
    with pytest.raises(ValueError, match="window"):
        make_policy(obj, window=3)
    with pytest.raises(TypeError):
        make_policy("lru", window=3)


def test_unknown_names_and_bad_specs_are_rejected():
    with pytest.raises(ValueError) as err:
        make_policy("nope")
    assert "'nope'" in str(err.value)
    assert all(name in str(err.value) for name in ("fifo", "lru", "lfu", "donor-window", "belady"))
    for bad in (42, dict, None):
        with pytest.raises(TypeError):
            make_policy(bad)
    with pytest.raises(TypeError):
        Policy()


def test_user_defined_policy_registered_by_name(registry):
    register_policy("mru", MRU)
    with pytest.raises(ValueError, match="already taken by MRU.*replace=True"):
        register_policy("mru", MRU)  # one rule for every duplicate, the same class included
    register_policy("mru", MRU, replace=True)
    assert registry["mru"] is MRU
    p = make_policy("mru", start=1)
    for k in "abc":
        p.on_insert(k, 1, "m")
    assert drain(p) == ["c", "b", "a"]
    with pytest.raises(ValueError, match="already taken"):
        register_policy("fifo", MRU)
    with pytest.raises(TypeError, match="Policy subclass"):
        register_policy("dict", dict)
    with pytest.raises(ValueError, match="non-empty"):
        register_policy("", MRU)
    assert "dict" not in registry and "" not in registry


def test_a_policy_written_for_the_old_on_remove_name_still_works_with_a_deprecation_warning():

    with pytest.warns(DeprecationWarning, match="on_release"):
        class OldStyle(Policy):
            def __init__(self):
                self.keys = []

            def on_insert(self, key, size, model_id, deps=()):
                self.keys.append(key)

            def on_remove(self, key):
                self.keys.remove(key)

            def victim(self):
                return self.keys[0]

            def __len__(self):
                return len(self.keys)

            def __contains__(self, key):
                return key in self.keys

    p = OldStyle()
    p.handle(events.Inserted("a", 1, "m"))
    p.handle(events.Released("a"))
    assert len(p) == 0
    with pytest.warns(DeprecationWarning, match="Released"):
        assert events.Removed is events.Released


# -------------------------------------------------------------------------------- invariants
NEXT_USES = {(f"m{m}", l): sorted({(m * 7 + l * 3 + k * 11) % 40 for k in range(3)})
             for m in range(6) for l in range(4)}


def build(name):
    return make_policy(name, next_uses=NEXT_USES) if name == "belady" else make_policy(name)


OP = st.tuples(st.sampled_from(["insert", "insert", "hit", "donate", "eval", "remove", "evict", "population",
                                "mutation", "time"]),
               st.integers(0, 5), st.integers(0, 3), st.integers(0, 50))


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(["fifo", "lru", "lfu", "donor-window", "evolution-aware", "belady"]),
       ops=st.lists(OP, max_size=80))
def test_victim_is_always_a_held_key_and_len_tracks_the_entries(name, ops):
    p = build(name)
    sizes, t = {}, 0
    for op, m, layer, x in ops:
        model, key = f"m{m}", (f"m{m}", layer)
        if op == "population":
            p.on_population([(f"m{i}", float(i * x % 7)) for i in range(m)], 6, 1 + x % 3)
        elif op == "mutation":
            p.on_mutation(layer)
        elif op == "time":
            t += x
            p.on_clock(t)
        else:
            victim = apply(p, op, model, layer, x)
            if op == "insert":
                sizes[key] = x
            elif op == "remove":
                sizes.pop(key, None)
            elif victim is not None:
                assert victim in sizes
                del sizes[victim]
        assert len(p) == len(sizes) and all(k in p for k in sizes)
        if not sizes:
            with pytest.raises(LookupError):
                p.victim()
            continue
        victim = p.victim()
        assert victim in sizes
        if isinstance(p, EvolutionAware) and p.has_population:  # lowest expected reuse per byte
            per_byte = {k: p.rerank_and_reuse(k) / max(s, 1) for k, s in sizes.items()}
            assert per_byte[victim] <= min(per_byte.values()) + 1e-12


def test_evolution_aware_rejects_a_bad_churn():
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="churn"):
            EvolutionAware(churn=bad)


def test_evolution_aware_rebuild_waits_for_enough_changes():
    """A population update marks the ranking due; victim() rebuilds only once churn x entries changed.
    With S = 1 every member is as likely a parent, so the oldest (shortest remaining life) goes first."""
    p = EvolutionAware(refresh=1, churn=0.5)
    for m in ("a", "b", "c", "d"):
        p.on_insert((m, 0), 1, m)
    p.on_population([("a", 1.0), ("b", 1.0), ("c", 1.0), ("d", 1.0)], population_size=4, sample_size=1)
    assert p.victim() == ("a", 0)
    p.on_population([("b", 1.0), ("c", 1.0), ("d", 1.0), ("a", 1.0)], population_size=4, sample_size=1)
    assert p.victim() == ("a", 0)  # due, but no entry changed since: the old ranking stands
    p.on_release(("a", 0))
    p.on_insert(("e", 0), 1, "e")  # 2 changes of 4 entries: the next victim() rebuilds
    p.on_population([("c", 1.0), ("d", 1.0), ("e", 1.0), ("b", 1.0)], population_size=4, sample_size=1)
    assert p.victim() == ("c", 0)  # the old ranking would name b


def test_evolution_aware_counts_a_child_in_flight_as_a_parent_until_it_is_old_news():
    """A child described before its layers (in flight) is a newcomer parent: the arch it can mutate back
    into gains value; after P updates without being listed it counts no more."""
    p = EvolutionAware(refresh=1)
    for m, arch in (("a", (0, 0)), ("b", (2, 2))):
        p.on_model(m, arch, "compatible", 1, 0.5)
        p.on_insert((m, 0), 1, m, (0, 1))
    members = [("a", 0.5), ("b", 0.5)]
    p.on_mutation(0)
    p.on_population(members, population_size=2, sample_size=1)
    before = p.rerank_and_reuse(("a", 0))
    p.on_model("kid", (1, 0), "compatible", 1)  # issued; a mutation of it at position 0 can make (0, 0)
    p.on_population(members, population_size=2, sample_size=1)
    assert p.rerank_and_reuse(("a", 0)) > before
    p.on_population(members, population_size=2, sample_size=1)
    assert p.rerank_and_reuse(("a", 0)) == pytest.approx(before)


@given(ops=st.lists(st.tuples(st.sampled_from(["push", "rise", "discard", "pop"]), st.integers(0, 5),
                              st.integers(0, 20)), max_size=60),
       start=st.dictionaries(st.integers(0, 5), st.integers(0, 20)))
def test_lazy_heap_rises_keep_the_smallest_current_priority_on_top(ops, start):
    """From keys given in order, pushes, lazy rises and discards in any order: the top is always the smallest
    priority last set."""
    from tensorcache.policies.base import LazyHeap

    want = {key: (priority, key) for key, priority in start.items()}
    ranked = sorted(want, key=want.__getitem__)
    heap = LazyHeap(ranked, [want[key] for key in ranked].__getitem__)  # the priorities at the start
    for op, key, priority in ops:
        if op == "push":
            heap.push(key, (priority, key))
            want[key] = (priority, key)
        elif op == "rise":
            heap.rise(key, (priority, key), want.get(key))
            want[key] = (priority, key)
        elif op == "discard":
            heap.discard(key)
            want.pop(key, None)
        elif want:
            top = heap.pop()
            assert top == (min(want.values()), min(want.values())[1])
            del want[top[1]]
        assert heap.peek() == ((min(want.values()), min(want.values())[1]) if want else None)
        assert len(heap) == len(want)


def test_evolution_aware_names_an_arriving_model_s_layer_only_when_nothing_else_is_left():
    p = EvolutionAware()
    described(p, "m", (0, 0, 0), sizes=(1, 1, 1), deps=((), (0,), FULL))
    p.on_population([("m", 1.0)], population_size=2, sample_size=1)
    p.on_model("n", (1, 1, 1), "prefix", 3)
    p.on_insert(("n", 0), 1, "n", ())
    p.on_insert(("n", 1), 1, "n", (0,))  # "n" still arriving: 2 of its 3 layers are in
    order = []
    while len(p):
        order.append(p.victim())
        p.on_release(order[-1])
    assert set(order[:3]) == {("m", 0), ("m", 1), ("m", 2)}
    assert order[3:] == [("n", 1), ("n", 0)]  # then, no longer arriving, the deeper layer of its run first
