"""Tabular evaluator: NB201 scores and times from the CSV, a simulated clock, and a faithfully used cache."""
import csv
import itertools
from collections import defaultdict

import pytest

from nas_integration.data import nb201_table
from nas_integration.evaluators.tabular import SyntheticPayloads, TabularEvaluator
from nas_integration.search import SearchSettings, run_search
from nas_integration.spaces import get_space
from tensorcache.config import CacheConfig
from tensorcache.evolution import Candidate
from tensorcache.tables import open_text
from tensorcache.trace import read_trace

TABLE = str(nb201_table())  # the table shipped with the package


@pytest.fixture(scope="module")
def rows():
    with open_text(TABLE) as f:
        return {r["arch_str"]: r for r in csv.DictReader(f)}


def search(tmp_path, name="run", **kw):
    kw = {"evaluator": "tabular", "table": TABLE, "run_id": "t", **kw}
    summary = run_search(SearchSettings(out=str(tmp_path / name), **kw))
    return summary, read_trace(tmp_path / name / "trace.jsonl")


def test_scores_tests_and_durations_come_from_the_table(tmp_path, rows):
    summary, trace = search(tmp_path, evals=60, population=20, sample=5, workers=1, epochs=100, cache=False)
    space = get_space("nb201")
    for r in trace:
        row = rows[space.decode(r["arch"])]
        assert r["score"] == float(row["c10_valid_200ep_mean"])
        assert r["test"] == float(row["c10_test_200ep"])
        assert r["train_s"] == pytest.approx(float(row["c10_train_time_200ep_s"]) / 2)  # 100 of 200 epochs
    best = max(trace, key=lambda r: r["score"])
    assert summary["best"]["test"] == best["test"] and summary["best"]["native"] == space.decode(best["arch"])
    # one simulated worker: the search takes exactly the sum of the durations
    assert summary["search_s"] == pytest.approx(sum(r["train_s"] for r in trace))


def test_simulated_workers_never_run_two_jobs_at_once(tmp_path):
    summary, trace = search(tmp_path, evals=400, population=30, sample=5, workers=16, cache=False)
    by_worker = defaultdict(list)
    for r in trace:
        by_worker[r["worker"]].append((r["t_start"], r["t_end"]))
    assert set(by_worker) == set(range(16))
    for spans in by_worker.values():
        spans.sort()
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in itertools.pairwise(spans))
    assert summary["search_s"] == max(r["t_end"] for r in trace)
    assert summary["search_s"] < sum(r["train_s"] for r in trace) / 8  # 16 workers overlap


def test_reaches_a_top_one_percent_architecture_within_3000_evaluations(tmp_path, rows):
    scores = sorted(float(r["c10_valid_200ep_mean"]) for r in rows.values())
    top1 = scores[int(0.99 * len(scores))]
    found = [search(tmp_path, f"s{seed}", evals=3000, workers=4, seed=seed, cache=False)[0]["best"]["score"] >= top1
             for seed in range(5)]
    assert sum(found) >= 4, found


def test_nb201_searches_transfer_compatible_layers_unless_told_otherwise(tmp_path):
    summary, trace = search(tmp_path, evals=60, population=20, sample=5)
    assert summary["settings"]["transfer"] == "compatible"
    new = [r for r in trace if not r["revisit"]]
    assert summary["new_architectures"] == len(new) and 0 < summary["new_byte_share"] <= 1
    assert summary["new_byte_share"] == pytest.approx(
        sum(r["bytes_served"] for r in new) / sum(sum(r["layer_bytes"]) for r in new))
    assert SearchSettings(out="x", evaluator="tabular", transfer="prefix").resolved().transfer == "prefix"
    assert SearchSettings(out="x").resolved().transfer == "prefix"  # attn keeps the strict prefix


def test_cache_serves_the_shared_prefix_and_the_trace_keeps_real_bytes(tmp_path):
    summary, trace = search(tmp_path, evals=400, population=40, sample=10, workers=8, transfer="prefix",
                            cache_config=CacheConfig(memory="1GB"))
    keys = {r["model_id"]: r["layer_keys"] for r in trace}
    space = get_space("nb201")
    hits = [r for r in trace if r["donor_id"] is not None]
    positional = [r for r in hits if any(r["layer_deps"][i] for i in range(r["layers_served"]))]
    assert len(positional) > 0.5 * len(trace) and summary["hit_ratio"] == len(positional) / len(trace)
    assert summary["transfer_bytes_served"] + summary["revisit_bytes_served"] == summary["bytes_served"]
    for r in trace:
        assert r["layer_bytes"] == space.layer_nbytes(r["arch"], "prefix", 10, (3, 32, 32))  # real sizes
        assert len(r["layer_keys"]) == len(r["layer_bytes"])
    for r in hits:  # a prefix donor serves exactly the layers whose keys agree from the first one on
        common = 0
        for a, b in zip(r["layer_keys"], keys[r["donor_id"]]):
            if a != b:
                break
            common += 1
        assert r["layers_served"] == common
        assert r["bytes_served"] == sum(r["layer_bytes"][:common])
        assert r["tier"] == "memory"
    assert summary["bytes_served"] == sum(r["bytes_served"] for r in trace)
    cache = summary["cache"]
    assert cache["tiers"][0]["memory"]["capacity"] == 10**9 // 64  # capacities scaled like the payloads
    assert cache["puts"] == 400 and cache["lookups"] == 400


def test_each_transferred_byte_is_counted_under_the_tier_that_served_it(tmp_path):
    _, trace = search(tmp_path, evals=200, population=20, sample=5, workers=4, cache_config=CacheConfig(memory="8MB"))
    hits = [r for r in trace if r["bytes_served"]]
    for r in hits:
        assert sum(r["tier_bytes"].values()) == r["bytes_served"]
        assert r["tier"] in r["tier_bytes"] and set(r["tier_bytes"]) <= {"memory", "lmdb"}  # tier: the slowest
    # an 8 MB memory tier (scaled: 125 kB) evicts to LMDB, so some hits mix layers from both tiers
    assert any(set(r["tier_bytes"]) == {"memory", "lmdb"} for r in hits)


def test_a_small_cache_evicts_and_serves_less(tmp_path):
    kw = {"evals": 300, "population": 30, "sample": 5, "workers": 4, "transfer": "prefix"}
    small, _ = search(tmp_path, "small", cache_config=CacheConfig(memory="8MB", disk="none"), **kw)
    large, _ = search(tmp_path, "large", cache_config=CacheConfig(memory="1GB", disk="none"), **kw)
    assert sum(small["cache"]["evictions"].values()) > 0 and not large["cache"]["evictions"]
    assert list(small["cache"]["tiers"][0]) == ["memory"]
    assert small["bytes_served"] < large["bytes_served"] / 2


def test_synthetic_payloads_are_scaled_distinct_and_cheap():
    payloads = SyntheticPayloads(seed=0)
    a = payloads.layers("m1", [6400, 0, 64000], 1 / 64)
    b = payloads.layers("m2", [6400, 0, 64000], 1 / 64)
    assert [len(x) for x in a] == [1, 0, 1]
    assert a[0]["w"].nbytes == 100 and a[2]["w"].nbytes == 1000
    assert a[0]["w"].tobytes() != b[0]["w"].tobytes()
    assert payloads.layers("m1", [6400], 1 / 64)[0]["w"].tobytes() == a[0]["w"].tobytes()


def test_bad_table_and_dataset_are_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        TabularEvaluator(tmp_path / "missing.csv").check()
    bad = tmp_path / "bad.csv"
    bad.write_text("arch_str,score\nx,1\n")
    with pytest.raises(ValueError, match="c10_valid_200ep_mean"):
        TabularEvaluator(bad).check()
    with pytest.raises(ValueError, match="imagenet"):
        TabularEvaluator(TABLE, dataset="imagenet")
    evaluator = TabularEvaluator(TABLE)
    evaluator.setup()
    with pytest.raises(ValueError, match="not in table"):
        evaluator.start(Candidate(0, "m", (9, 9, 9, 9, 9, 9)), None)
