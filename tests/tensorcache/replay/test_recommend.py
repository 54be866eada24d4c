"""``tensorcache replay --recommend`` and ``replay.recommend``: the pick is the policy that served the most
training seconds, its margin and interval are about that pick, and what cannot be a candidate is refused."""
import json

import numpy as np
import pytest

pytest.importorskip("scipy")

from evolution_sim import simulate
from tensorcache.bound import value_bound
from tensorcache.cli import main
from tensorcache.replay import Workload, replay
from tensorcache.replay.recommend import CANDIDATES, overall, per_lookup, recommend, verdict


@pytest.fixture(scope="module")
def work():
    records = simulate(n=80, seed=3)
    for i, r in enumerate(records):
        r["train_s"] = float(1 + i % 7)  # children of unlike cost: seconds rank policies unlike bytes
    return Workload(records, "prefix")


def test_the_pick_served_the_most_seconds_and_the_margin_is_over_the_runner_up(work):
    capacity = work.total_bytes // 20
    (v,) = recommend(work, [capacity], 6, 2, resamples=300)
    assert set(v.scores) == set(CANDIDATES)
    for name in CANDIDATES:  # each score is that policy's replay, as a search sets it (W = 4P)
        kwargs = {"window": 24} if name in ("donor-window", "evolution-aware") else None
        assert v.scores[name] == pytest.approx(replay(work, name, capacity, population_size=6, sample_size=2,
                                                      policy_options=kwargs).value_served)
    ranked = sorted(v.scores, key=v.scores.get, reverse=True)
    assert v.best == ranked[0] and v.runner_up == ranked[1]
    assert v.margin == pytest.approx(v.scores[ranked[0]] - v.scores[ranked[1]]) and v.margin >= 0
    assert v.low <= v.high and 0 <= v.wins <= 1
    assert max(v.scores.values()) <= v.bound * (1 + 1e-9) == value_bound(work, capacity) * (1 + 1e-9)


def test_the_interval_is_about_the_lookups_and_one_candidate_has_no_margin(work):
    capacity = work.total_bytes // 20
    results = {n: replay(work, n, capacity, population_size=6, sample_size=2) for n in ("lru", "fifo")}
    v = verdict(results, work, capacity, resamples=400, seed=1)
    gap = per_lookup(results[v.best], work, "all") - per_lookup(results[v.runner_up], work, "all")
    spread = gap.std() * np.sqrt(len(gap))  # the margin's standard error over resampled lookups
    assert v.low <= v.margin <= v.high and v.high - v.low <= 6 * spread + 1e-9
    assert v == verdict(results, work, capacity, resamples=400, seed=1)  # seeded: the same interval again
    alone = verdict({"lru": results["lru"]}, work, capacity)
    assert alone.best == "lru" and alone.runner_up is None and np.isnan(alone.margin)


def test_transfer_and_revisit_scores_split_the_seconds(work):
    result = replay(work, "lru", work.total_bytes // 10, population_size=6, sample_size=2)
    parts = [per_lookup(result, work, s).sum() for s in ("all", "transfer", "revisit")]
    assert parts[0] == pytest.approx(parts[1] + parts[2])
    assert parts[1] == pytest.approx(result.transfer_value_served) and parts[2] == pytest.approx(result.revisit_value_served)
    with pytest.raises(ValueError, match="score"):
        per_lookup(result, work, "bytes")


def test_overall_prefers_the_most_picks(work):
    verdicts = recommend(work, [work.total_bytes // 50, work.total_bytes // 5], 6, 2, ("lru", "evolution-aware"),
                         resamples=50)
    picks = [v.best for v in verdicts]
    assert overall(verdicts) in picks
    if picks[0] == picks[1]:
        assert overall(verdicts) == picks[0]


def test_cli_recommend_prints_the_pick_its_margin_and_json(tmp_path, capsys):
    records = simulate(n=80, seed=3)
    path = tmp_path / "trace.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    args = ["replay", str(path), "--recommend", "--capacity", "3%,30%", "--population", "6", "--sample", "2",
            "--resamples", "100"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.count("best: ") == 2 and "95% interval over resampled lookups" in out and "recommend: " in out
    assert "replay CPU s" in out
    assert main(args + ["--json", "--score", "transfer"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["score"] == "transfer" and got["recommend"] in CANDIDATES and len(got["capacities"]) == 2
    first = got["capacities"][0]
    assert first["capacity"] == "3%" and first["best"] == max(first["scores"], key=first["scores"].get)
    assert set(first["cpu_s"]) == set(CANDIDATES) and all(s > 0 for s in first["cpu_s"].values())
    assert main(["replay", str(path), "--recommend", "--policies", "lru,belady"]) == 2
    assert "belady needs the trace's future" in capsys.readouterr().err
    assert main(["replay", str(path), "--recommend", "--policies", "lru,nope"]) == 2
    assert "unknown policy 'nope'" in capsys.readouterr().err
    assert main(["replay", str(path), "--recommend", "--capacity", ","]) == 2  # not "no policy served a layer"
    assert "--capacity ',' names no capacity" in capsys.readouterr().err


def test_a_trace_that_serves_nothing_gets_no_recommendation(tmp_path, capsys):
    records = simulate(n=80, seed=3)
    for r in records:  # every model a first of its kind: no parent and no shared key, nothing to serve
        r["parent_id"] = None
        r["layer_keys"] = [f"{r['model_id']}-{j}".encode().hex().ljust(32, "0")[:32] for j in range(len(r["layer_keys"]))]
    path = tmp_path / "trace.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main(["replay", str(path), "--recommend", "--population", "6", "--sample", "2", "--resamples", "20"]) == 0
    out = capsys.readouterr().out
    assert out.count("best: none") == 3 and "recommend: none" in out
    assert main(["replay", str(path), "--recommend", "--json", "--population", "6", "--resamples", "20"]) == 0
    assert json.loads(capsys.readouterr().out)["recommend"] is None
