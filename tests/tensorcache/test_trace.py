"""TraceWriter appends flushed JSON lines; read_trace reads them back and tolerates a torn last line."""
import json

import pytest

from tensorcache.trace import FIELDS, TraceWriter, read_trace


def record(i: int) -> dict:
    r = {f: None for f in FIELDS}
    r.update(model_id=f"m{i}", arch=[i, 1], score=50.0 + i, layer_bytes=[4, 8], layer_keys=["ab", "cd"])
    return r


def test_records_are_readable_before_close(tmp_path):
    path = tmp_path / "sub" / "trace.jsonl"
    writer = TraceWriter(path)
    writer.write(record(0))
    writer.write(record(1))
    got = read_trace(path)  # flushed per record: visible while the writer is still open
    assert [r["model_id"] for r in got] == ["m0", "m1"]
    assert got[1]["layer_bytes"] == [4, 8] and got[1]["score"] == 51.0
    writer.close()


def test_appends_to_an_existing_trace(tmp_path):
    path = tmp_path / "trace.jsonl"
    with TraceWriter(path) as w:
        w.write(record(0))
    with TraceWriter(path) as w:
        w.write(record(1))
    assert [r["model_id"] for r in read_trace(path)] == ["m0", "m1"]


def test_missing_fields_are_named(tmp_path):
    bad = record(0)
    del bad["layer_keys"], bad["tier"]
    with TraceWriter(tmp_path / "t.jsonl") as w, pytest.raises(ValueError, match="layer_keys"):
        w.write(bad)


def test_torn_last_line_is_skipped_but_a_bad_middle_line_is_an_error(tmp_path):
    path = tmp_path / "trace.jsonl"
    good = json.dumps(record(0))
    path.write_text(good + "\n" + good[: len(good) // 2])  # a crash mid-write
    assert len(read_trace(path)) == 1
    path.write_text(good + "\n{not json\n" + good + "\n")
    with pytest.raises(ValueError, match=":2:"):
        read_trace(path)
