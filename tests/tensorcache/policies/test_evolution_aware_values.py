"""Evolution-aware's expected reuses against the model written out by hand: every member a parent with
weight P(donor) x remaining life, one mutation at an observed-frequency position to another seen value."""
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


@settings(max_examples=60, deadline=None)
@given(archs=st.lists(st.tuples(*[st.integers(0, 2)] * WIDTH), min_size=1, max_size=8, unique=True),
       score_pool=st.lists(st.sampled_from([0.1, 0.5, 0.9, None]), min_size=8, max_size=8),
       hist=st.lists(st.integers(0, 4), min_size=WIDTH, max_size=WIDTH), sample=st.integers(1, 4))
def test_reuse_of_every_prefix_layer_matches_the_model_by_hand(archs, score_pool, hist, sample):
    """Tied and missing scores, repeated prefixes across members, every depth of every member's run."""
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
