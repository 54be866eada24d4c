"""Evolution-aware's expected reuses and victims against the model written out by hand: every member a parent
with weight P(donor) x remaining life, one mutation at an observed-frequency position to another seen value."""
from bisect import bisect_left, bisect_right

import pytest
from hypothesis import given, settings, strategies as st

from tensorcache.policies import EvolutionAware

WIDTH = 3


def expected_reuse(archs, scores, hist, sample, deps):
    """Sum over members of P(donor) x remaining life x P(one mutation of it has arch values ``deps`` picks)."""
    n, ranked = len(archs), sorted(scores)
    mutations = sum(hist)
    seen = [{a[j] for a in archs} for j in range(WIDTH)]
    where = [(hist[j] + 1) / (mutations + WIDTH) for j in range(WIDTH)]
    total = 0.0
    for life, (arch, score) in enumerate(zip(archs, scores), start=1):
        lo, hi = bisect_left(ranked, score), bisect_right(ranked, score)
        weight = ((hi / n) ** sample - (lo / n) ** sample) / (hi - lo) * life
        differ = [j for j, v in deps.items() if arch[j] != v]
        if not differ:
            total += weight * (1 - sum(where[j] for j in deps))
        elif len(differ) == 1:
            j = differ[0]
            total += weight * where[j] / max(len(seen[j]) - 1, 1)
    return total


@pytest.mark.parametrize("offset", [0, 300])
@settings(max_examples=60, deadline=None)
@given(archs=st.lists(st.tuples(*[st.integers(0, 2)] * WIDTH), min_size=1, max_size=8, unique=True),
       score_pool=st.lists(st.sampled_from([0.1, 0.5, 0.9, None]), min_size=8, max_size=8),
       hist=st.lists(st.integers(0, 4), min_size=WIDTH, max_size=WIDTH), sample=st.integers(1, 4))
def test_reuse_of_every_prefix_layer_matches_the_model_by_hand(offset, archs, score_pool, hist, sample):
    """Tied and missing scores, repeated prefixes across members, every depth of every member's run; arch
    values past a byte (``offset``) are compared another way than small ones and must value alike."""
    archs = [tuple(a + offset for a in arch) for arch in archs]
    p = EvolutionAware(refresh=1)
    ids = [f"m{i}" for i in range(len(archs))]
    for m, arch in zip(ids, archs):
        p.on_model(m, arch, "prefix", WIDTH)
        for depth in range(WIDTH):
            p.on_insert((m, depth), 10, m, tuple(range(depth + 1)))
    for j, count in enumerate(hist):
        for _ in range(count):
            p.on_mutation(j)
    scores = score_pool[: len(archs)]
    p.on_population(list(zip(ids, scores)), population_size=len(archs), sample_size=sample)
    ranked = [float("-inf") if s is None else s for s in scores]
    for m, arch in zip(ids, archs):
        for depth in range(WIDTH):
            want = expected_reuse(archs, ranked, hist, sample, {j: arch[j] for j in range(depth + 1)})
            assert p.rerank_and_reuse((m, depth)) == pytest.approx(want, rel=1e-9, abs=1e-12), (m, depth)


def test_ranking_is_due_every_tenth_of_the_population_by_default():
    """No ``refresh`` given: values and ranks are rebuilt once P // 10 population updates have passed (with
    S = 1 every member is as likely a parent, so the one with the least life left goes first)."""
    p = EvolutionAware(churn=0)
    for m in "ab":
        p.on_insert((m, 0), 1, m)
    p.on_population([("a", 1.0), ("b", 1.0)], population_size=20, sample_size=1)
    assert p.victim() == ("a", 0)
    p.on_population([("b", 1.0), ("a", 1.0)], population_size=20, sample_size=1)
    assert p.victim() == ("a", 0)  # one update since the ranking: not yet due
    p.on_population([("b", 1.0), ("a", 1.0)], population_size=20, sample_size=1)
    assert p.victim() == ("b", 0)  # two (= 20 // 10): re-ranked


@pytest.mark.parametrize("seed", range(6))
def test_victims_match_a_plain_reading_of_the_rule(seed):
    """Random puts of whole prefix-mode models, hits, donations, mutations and releases (gaps included), a
    population update before each victim (so it is named from a fresh ranking), layers put in any order: the victim is the entry of
    least value per byte of its layer and every deeper layer of its unbroken run (layers past a gap worth
    nothing), ties by fewer hits, least recently used model, deepest layer, latest insert, read plainly.
    Valued entries whose plain values differ by float rounding only may go either way; worthless ones are
    ordered exactly."""
    import random

    rng = random.Random(seed)
    p = EvolutionAware(refresh=1, churn=0)
    archs: dict[str, tuple[int, ...]] = {}
    held: dict[tuple[str, int], int] = {}  # key -> size
    hits: dict[tuple[str, int], int] = {}
    seq: dict[tuple[str, int], int] = {}
    touch: dict[str, int] = {}
    hist = [0] * WIDTH
    clock = 0

    def plain_priorities(scores, sample):
        ids = list(archs)
        value = {}
        for (m, depth) in held:
            value[m, depth] = expected_reuse([archs[i] for i in ids], scores, hist, sample,
                                             {j: archs[m][j] for j in range(depth + 1)})
        out = {}
        for (m, depth), size in held.items():
            run = 0
            while (m, run) in held:
                run += 1
            if depth > run:
                rank = -1.0
            else:
                deeper = range(depth, run)
                rank = sum(value[m, k] for k in deeper) / sum(max(held[m, k], 1) for k in deeper)
            out[m, depth] = (rank, hits[m, depth], touch[m], -depth, -seq[m, depth])
        return out

    for step in range(100):
        op = rng.random()
        clock += 1
        if op < 0.3 or not held:
            m = f"m{len(archs)}"
            archs[m] = (len(archs),) + tuple(rng.randrange(3) for _ in range(WIDTH - 1))  # no two share a layer
            p.on_model(m, archs[m], "prefix", WIDTH)
            for depth in rng.sample(range(WIDTH), WIDTH):  # in any order: the deepest is not always the latest
                clock += 1
                key = (m, depth)
                held[key], hits[key], seq[key], touch[m] = rng.randrange(0, 50), 0, clock, clock
                p.on_insert(key, held[key], m, tuple(range(depth + 1)))
        elif op < 0.5:
            key = rng.choice(sorted(held))
            hits[key] += 1
            touch[key[0]] = clock
            p.on_hit(key)
        elif op < 0.6:
            m = rng.choice(sorted(archs))
            if any(k[0] == m for k in held):
                touch[m] = clock
            p.on_donation(m)
        elif op < 0.7:
            j = rng.randrange(WIDTH)
            hist[j] += 1
            p.on_mutation(j)
        elif op < 0.8:
            key = rng.choice(sorted(held))
            del held[key]
            p.on_release(key)
        else:
            scores = [rng.choice([0.1, 0.5, 0.9, None]) for _ in archs]
            sample = rng.randrange(1, 5)
            p.on_population(list(zip(archs, scores)), population_size=len(archs), sample_size=sample)
            victim = p.victim()
            plain = plain_priorities([float("-inf") if s is None else s for s in scores], sample)
            least = min(rank for rank, *_ in plain.values())
            if least == -1.0:
                assert victim == min(plain, key=plain.__getitem__), step
            else:
                assert plain[victim][0] == pytest.approx(least, rel=1e-9, abs=1e-12), step
            del held[victim]
            p.on_release(victim)
