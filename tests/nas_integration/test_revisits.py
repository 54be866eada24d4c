"""--revisit: traces mark every child repeating an issued architecture; ``reuse`` answers it with the earlier
score, untrained, and the trace still replays."""
import os

import pytest

from nas_integration.search import SearchSettings, run_search
from tensorcache.config import CacheConfig
from tensorcache.metrics import mark_revisits, summarize_records
from tensorcache.replay import replay
from tensorcache.trace import as_records, read_trace

DATA = os.environ.get("TENSORCACHE_DATA")
TABLE = os.path.join(DATA or "", "nb201", "nb201_combined.csv")
pytestmark = pytest.mark.skipif(not os.path.exists(TABLE), reason="needs $TENSORCACHE_DATA/nb201/nb201_combined.csv")


def search(tmp_path, revisit, mode="async"):
    out = tmp_path / revisit
    run_search(SearchSettings(out=str(out), evaluator="tabular", table=TABLE, evals=300, population=30, sample=10,
                              workers=4, mode=mode, cache_config=CacheConfig(disk="none"), run_id="r", revisit=revisit))
    return read_trace(out / "trace.jsonl")


@pytest.mark.parametrize("mode", ["async", "batch"])
def test_train_marks_revisits_and_reuse_skips_training(tmp_path, mode):
    trained = search(tmp_path, "train", mode)
    assert all(r["revisit"] == (r["arch"] in [o["arch"] for o in trained if o["model_id"] < r["model_id"]])
               for r in trained)  # model ids are in issue order
    assert 0 < sum(r["revisit"] for r in trained) < len(trained)
    reused = search(tmp_path, "reuse", mode)
    again = [r for r in reused if r.get("reused")]
    assert again and all(r["revisit"] and r["train_s"] == 0 and r["layer_keys"] == [] for r in again)
    first = {}
    for r in sorted(reused, key=lambda r: r["model_id"]):
        if not r.get("reused"):
            first.setdefault(tuple(r["arch"]), r["score"])
    assert all(r["score"] == first[tuple(r["arch"])] for r in again)
    assert len(reused) == 300 and sum(r["train_s"] for r in reused) < sum(r["train_s"] for r in trained)
    result = replay(reused, "lru", 10**9, population_size=30, sample_size=10)
    assert result.revisit_bytes_served <= result.bytes_served


def test_replay_labels_agree_with_the_recorded_flag(tmp_path):
    trace = search(tmp_path, "train")
    computed = mark_revisits((r["model_id"], r["arch"], r["t_start"], None) for r in trace)
    recorded = {r["model_id"]: r["revisit"] for r in trace}
    # by start time, a child that starts together with an earlier-issued twin may be ordered either way
    assert sum(computed[m] != recorded[m] for m in recorded) <= 0.02 * len(trace)
    split = summarize_records(as_records(trace))
    assert split.revisits == sum(recorded.values())
    assert split.transfer_bytes_served + split.revisit_bytes_served == sum(r["bytes_served"] for r in trace)
