"""TraceWriter appends flushed JSON lines; read_trace reads them back, validated by TraceRecord, and
tolerates a torn last line; version-1 lines still read, lines of an unknown version fail clearly."""
import json
from dataclasses import fields

import pytest

from tensorcache.trace import FIELDS, TRACE_VERSION, TraceRecord, TraceWriter, read_records, read_summary, read_trace


def record(i: int, arch=None, t_start=0.0, t_end=1.0) -> dict:
    return {"model_id": f"m{i}", "parent_id": None, "donor_id": None, "worker": 0, "t_start": t_start,
            "t_end": t_end, "arch": arch or [i, 1], "mutation_pos": None, "score": 50.0 + i, "layers_served": 0,
            "bytes_served": 0, "tier": None, "cache_s": 0.0, "train_s": 1.0, "layer_bytes": [4, 8],
            "layer_keys": ["ab", "cd"]}


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


def test_bad_values_are_named_on_write_and_read(tmp_path):
    with TraceWriter(tmp_path / "t.jsonl") as w, pytest.raises(ValueError, match="bytes_served.*'many'"):
        w.write(dict(record(0), bytes_served="many"))
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(record(0)) + "\n" + json.dumps(dict(record(1), arch=[1, "x"])) + "\n")
    with pytest.raises(ValueError, match=r":2: trace record field arch"):
        read_trace(path)
    path.write_text(json.dumps(dict(record(0), layer_keys=["ab"])) + "\n")
    with pytest.raises(ValueError, match="1 layer keys vs 2 layer bytes"):
        read_trace(path)


def test_torn_last_line_is_skipped_but_a_bad_middle_line_is_an_error(tmp_path):
    path = tmp_path / "trace.jsonl"
    good = json.dumps(record(0))
    path.write_text(good + "\n" + good[: len(good) // 2])  # a crash mid-write
    assert len(read_trace(path)) == 1
    path.write_text(good + "\n{not json\n" + good + "\n")
    with pytest.raises(ValueError, match=":2:"):
        read_trace(path)


def test_required_fields_are_the_record_fields_without_a_default():
    required = [f.name for f in fields(TraceRecord) if f.name in FIELDS]
    assert required == list(FIELDS) and "revisit" not in FIELDS and "version" not in FIELDS
    with pytest.raises(TypeError):
        TraceRecord(model_id="m")  # the dataclass itself requires them too


def test_a_record_round_trips_with_its_extra_values_at_the_top_level(tmp_path):
    rec = TraceRecord.from_dict(dict(record(0), device="cpu", epochs=3, tier_bytes={"memory": 12}, revisit=True,
                                     version=TRACE_VERSION))
    assert rec.extra == {"device": "cpu"} and rec.epochs == 3.0 and rec.tier_bytes == {"memory": 12} and rec.revisit
    with TraceWriter(tmp_path / "t.jsonl") as w:
        w.write(rec)
    line = json.loads((tmp_path / "t.jsonl").read_text())
    assert line["device"] == "cpu" and line["epochs"] == 3 and line["version"] == TRACE_VERSION and "extra" not in line
    assert read_records(tmp_path / "t.jsonl") == [rec]
    clashing = TraceRecord.from_dict(record(0))
    clashing.extra = {"score": 1}
    with pytest.raises(ValueError, match="shadow"):
        clashing.to_dict()


def old_names(line: dict) -> dict:
    """A line as versions 1 and 2 wrote it: ``layers_served`` and ``bytes_served`` under their old names."""
    renamed = {"layers_served": "transfer_layers", "bytes_served": "transfer_bytes"}
    return {renamed.get(k, k): v for k, v in line.items()}


def test_version_two_lines_read_under_the_new_names(tmp_path):
    path = tmp_path / "v2.jsonl"
    line = old_names(dict(record(0), layers_served=2, bytes_served=12, tier="memory", tier_bytes={"memory": 12},
                          revisit=False, version=2))
    path.write_text(json.dumps(line) + "\n")
    got = read_records(path)[0]
    assert (got.layers_served, got.bytes_served, got.version) == (2, 12, 2) and got.extra == {}
    assert "transfer_bytes" not in got.to_dict()
    with pytest.raises(ValueError, match="lacks fields.*bytes_served"):  # version 3 reads only the new names
        TraceRecord.from_dict(dict(line, version=3))


def test_version_one_lines_read_with_defaults_and_revisits_recomputed(tmp_path):
    path = tmp_path / "v1.jsonl"
    lines = [old_names(r) for r in (record(0, arch=[1, 2], t_start=0, t_end=2),
                                    record(1, arch=[1, 2], t_start=1, t_end=3),
                                    record(2, arch=[1, 2], t_start=2, t_end=4),
                                    record(3, arch=[5, 5], t_start=4, t_end=5))]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))  # no version, revisit, test or tier_bytes
    got = read_records(path)
    assert [r.version for r in got] == [1] * 4 and got[0].test is None and got[0].tier_bytes == {}
    # m1 and m2 repeat the arch of m0, which started before them (tensorcache.metrics.mark_revisits)
    assert [r.revisit for r in got] == [False, True, True, False]


def test_a_record_written_without_revisit_reads_with_it_computed(tmp_path):
    path = tmp_path / "t.jsonl"
    with TraceWriter(path) as w:
        w.write(record(0, arch=[7], t_start=0, t_end=1))
        w.write(record(1, arch=[7], t_start=2, t_end=3))
        w.write(dict(record(2, arch=[7], t_start=4, t_end=5), revisit=False))  # the writer's word is kept
    assert json.loads(path.read_text().splitlines()[0])["revisit"] is None
    assert [r.revisit for r in read_records(path)] == [False, True, False]


def test_an_unknown_version_fails_clearly(tmp_path):
    path = tmp_path / "v9.jsonl"
    path.write_text(json.dumps(dict(record(0), version=9)) + "\n")
    with pytest.raises(ValueError, match=r":1: trace record has version 9; this tensorcache reads versions 1 to 3"):
        read_trace(path)


def test_an_older_summary_reads_with_its_counts_under_their_names_now(tmp_path):
    old = {"settings": {"population": 4}, "transfer_bytes": 14, "transfer_only_bytes": 2, "revisit_bytes": 12,
           "transfer_layers": 3, "hit_ratio": 0.5}
    (tmp_path / "summary.json").write_text(json.dumps(old))
    got = read_summary(tmp_path / "trace.jsonl")
    assert got == {"settings": {"population": 4}, "bytes_served": 14, "transfer_bytes_served": 2,
                   "revisit_bytes_served": 12, "layers_served": 3, "hit_ratio": 0.5}
    new = dict(got, transfer_bytes=99)  # a newer summary's keys are taken as written
    (tmp_path / "summary.json").write_text(json.dumps(new))
    assert read_summary(tmp_path / "trace.jsonl") == new


@pytest.mark.parametrize("change, message", [
    ({"layer_bytes": [4, -8]}, "negative layer bytes"),
    ({"layer_deps": [[0]]}, "2 layer keys vs 2 layer bytes vs 1 layer_deps"),
    ({"t_start": 2.0, "t_end": 1.0}, "t_end 1.0 < t_start 2.0"),
    ({"train_s": float("inf")}, "train_s must be a finite number >= 0"),
])
def test_a_record_that_contradicts_itself_is_named(change, message):
    with pytest.raises(ValueError, match=f"trace record m0: {message}"):
        TraceRecord.from_dict(dict(record(0), **change))
