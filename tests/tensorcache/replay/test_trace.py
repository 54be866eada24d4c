"""Reading traces for replay: records validated into Evaluations, P inferred, settings from summary.json."""
import json

import pytest

from evolution_sim import simulate
from tensorcache.replay import infer_population_size, parse_records, trace_settings


def test_records_become_evaluations_and_bad_ones_are_named():
    records = simulate(n=5, seed=0)
    evaluations = parse_records(records)
    assert [e.model_id for e in evaluations] == [r["model_id"] for r in records]
    assert evaluations[0].keys[0] == bytes.fromhex(records[0]["layer_keys"][0]) and evaluations[0].deps is None
    broken = [dict(records[0]), {**records[1], "layer_bytes": [1]}]
    with pytest.raises(ValueError, match=r"trace record 1: trace record m1: 6 layer keys vs 1 layer bytes"):
        parse_records(broken)
    with pytest.raises(ValueError, match="model_id 'm0' appears twice"):
        parse_records([records[0], records[0]])
    # the trace module's one validator: the same messages as reading a trace file
    with pytest.raises(ValueError, match="trace record 0: trace record field revisit: expected true or false"):
        parse_records([{**records[0], "revisit": "yes"}])
    with pytest.raises(ValueError, match="trace record 0: trace record m0: t_end 0.0 < t_start 1.0"):
        parse_records([{**records[0], "t_start": 1.0, "t_end": 0.0}])
    with pytest.raises(ValueError, match=r"trace record 0 \(m0\): a layer key is not hex"):
        parse_records([{**records[0], "layer_keys": ["zz"] * 6}])


@pytest.mark.parametrize("workers", [1, 4])
def test_population_size_inferred_from_trace(workers):
    records = simulate(n=70, population=12, workers=workers, seed=5)
    assert infer_population_size(parse_records(records)) == 12


def test_settings_come_from_the_summary_beside_the_trace(tmp_path):
    trace = tmp_path / "trace.jsonl"
    assert trace_settings(trace) == {}
    (tmp_path / "summary.json").write_text(json.dumps({"settings": {"population": 20, "transfer": "compatible"}}))
    assert trace_settings(trace) == {"population": 20, "transfer": "compatible"}
    (tmp_path / "summary.json").write_text("[1, 2]")
    assert trace_settings(trace) == {}
    (tmp_path / "summary.json").write_text(json.dumps({"settings": {"population": "20", "sample": 0, "transfer": 1,
                                                                    "space": "nb201"}}))
    assert trace_settings(trace) == {"space": "nb201"}  # values of the wrong kind are left out, each with a warning
