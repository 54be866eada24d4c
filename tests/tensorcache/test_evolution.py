"""Regularized evolution: one-position mutations from tournament winners, aging, seeds, async and batch."""
import json
import statistics

import pytest

from nas_integration.data import nb201_table
from nas_integration.search import SearchSettings, run_search
from nas_integration.spaces import get_space
from tensorcache.config import CacheConfig
from tensorcache.evolution import RegularizedEvolution
from tensorcache.trace import read_trace

TABLE = str(nb201_table())  # the table shipped with the package


def score(arch) -> float:
    return float(sum(v * (i + 1) for i, v in enumerate(arch)))


def drive(evo: RegularizedEvolution, n: int) -> list:
    out = []
    for _ in range(n):
        cand = evo.ask()
        out.append(cand)
        evo.tell(cand, score(cand.arch))
    return out


def test_children_differ_from_their_parent_in_exactly_the_mutated_position():
    space = get_space("nb201")
    evo = RegularizedEvolution(space, population_size=10, sample_size=3, seed=1)
    archs = {}
    mutated = 0
    for cand in drive(evo, 200):
        archs[cand.model_id] = cand.arch
        if cand.index < 10:
            assert cand.parent_id is None and cand.mutation_pos is None  # the random initial population
            continue
        parent = archs[cand.parent_id]
        diff = [i for i, (a, b) in enumerate(zip(parent, cand.arch)) if a != b]
        assert diff == [cand.mutation_pos]
        mutated += 1
    assert mutated == 190


def test_parent_is_the_best_of_a_sample_of_the_current_population():
    evo = RegularizedEvolution(get_space("nb201"), population_size=8, sample_size=8, seed=3)
    drive(evo, 8)
    for _ in range(50):
        best = max(m.score for m in evo.population)  # S = P: the tournament sees everyone
        scores = {m.model_id: m.score for m in evo.population}
        cand = evo.ask()
        assert scores[cand.parent_id] == best
        evo.tell(cand, score(cand.arch))


def test_aging_keeps_the_last_p_models():
    evo = RegularizedEvolution(get_space("nb201"), population_size=5, sample_size=2, seed=0)
    cands = drive(evo, 23)
    assert [m for m, _ in evo.members()] == [c.model_id for c in cands[-5:]]


def test_same_seed_same_search_other_seed_other_search():
    space = get_space("nb201")
    runs = [[(c.arch, c.parent_id, c.mutation_pos) for c in drive(RegularizedEvolution(space, 10, 3, seed=s), 100)]
            for s in (7, 7, 8)]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_mutation_bias_moves_mutations_to_later_positions():
    space = get_space("nb201")
    means = []
    for bias in (0.0, 4.0):
        cands = drive(RegularizedEvolution(space, 10, 3, seed=2, mutation_bias=bias), 400)
        means.append(statistics.mean(c.mutation_pos for c in cands if c.mutation_pos is not None))
    assert means[1] > means[0] + 1.0


def test_bad_sizes_are_rejected():
    space = get_space("nb201")
    with pytest.raises(ValueError, match="sample size"):
        RegularizedEvolution(space, population_size=5, sample_size=6)
    with pytest.raises(ValueError, match="population size"):
        RegularizedEvolution(space, population_size=0, sample_size=1)


def run(tmp_path, name, **kw):
    settings = SearchSettings(out=str(tmp_path / name), evaluator="tabular", table=TABLE, evals=300,
                              population=20, sample=5, workers=8, run_id="r", **kw)
    summary = run_search(settings)
    return summary, read_trace(tmp_path / name / "trace.jsonl")


@pytest.mark.parametrize("mode", ["async", "batch"])
def test_parents_are_finished_before_their_children_start(tmp_path, mode):
    summary, trace = run(tmp_path, mode, mode=mode, cache=False, mutation_bias=0.5)
    assert summary["evaluations"] == 300 and summary["mode"] == mode
    assert summary["settings"]["mutation_bias"] == 0.5
    end = {r["model_id"]: r["t_end"] for r in trace}
    children = [r for r in trace if r["parent_id"] is not None]
    assert len(children) >= 300 - 20 - 8
    assert all(end[r["parent_id"]] <= r["t_start"] for r in children)
    if mode == "batch":  # a generation of 8 children starts together, after the previous one ended
        starts = sorted({r["t_start"] for r in trace})
        assert len(starts) == 300 // 8 + 1
        for r in trace:
            assert sum(x["t_start"] == r["t_start"] for x in trace) in (8, 300 % 8)


def test_tabular_simulation_is_reproducible_for_any_worker_count(tmp_path):
    config = CacheConfig(memory="64MB", disk="none")
    traces = [run(tmp_path, f"run{i}", seed=5, cache_config=config)[1] for i in range(2)]
    strip = [[{k: v for k, v in r.items() if k != "cache_s"} for r in t] for t in traces]
    assert strip[0] == strip[1]
    assert json.dumps(strip[0]) != json.dumps(run(tmp_path, "other", seed=6, cache=False)[1])
