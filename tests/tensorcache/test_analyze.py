"""`tensorcache analyze` on a small hand-built regularized-evolution trace: report, plots, and numbers
checked against values computed by hand (comments show the arithmetic)."""
import json
import math

import pytest

from tensorcache.analyze import PLOTS, SECTIONS, STEPS, STUDY, RunFacts, analyze, findings_dict
from tensorcache.cli import main
from tensorcache.layers import LayerMap

LMAP = LayerMap.generic(4)


def rec(model_id, parent, worker, t0, t1, arch, pos, score, transfer_bytes=0):
    return {"model_id": model_id, "parent_id": parent, "donor_id": parent, "worker": worker, "t_start": t0,
            "t_end": t1, "arch": arch, "mutation_pos": pos, "score": score, "transfer_layers": 0,
            "transfer_bytes": transfer_bytes, "tier": None, "cache_s": 0.0, "train_s": t1 - t0,
            "layer_bytes": [10, 20, 30, 40], "layer_keys": [k.hex() for k in LMAP.keys("hand", arch)]}


# P = 3, two workers. Start order: a b c d e f g h (indices 0..7). Populations: e sees {a,b,c}, f {b,c,d},
# g {c,d,e}, h {d,e,f}.
TRACE = [
    rec("a", None, 0, 0, 1, [0, 0, 0, 0], None, 0.1),
    rec("b", None, 1, 0, 2, [1, 1, 1, 1], None, 0.5),
    rec("c", None, 0, 1, 3, [2, 2, 2, 2], None, 0.3),
    rec("d", None, 1, 2, 4, [3, 3, 3, 3], None, 0.2),
    rec("e", "b", 0, 3, 5, [1, 1, 0, 1], 2, 0.6, transfer_bytes=30),
    rec("f", "c", 1, 4, 6, [2, 0, 2, 2], 1, 0.55),
    rec("g", "e", 0, 5, 7, [1, 1, 0, 2], 3, 0.7),
    rec("h", "e", 1, 6, 8, [2, 1, 0, 1], 0, 0.65),
]


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return out, findings_dict(analyze(TRACE, out))


def test_report_has_four_sections_and_plots(result):
    out, _ = result
    report = (out / "report.md").read_text()
    for n, section in enumerate(SECTIONS, 1):
        assert f"## {n}. {section}" in report
    for plots in PLOTS.values():
        for png in plots:
            assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert f"]({png})" in report
    assert "population P = 3" in report  # inferred: 3 models had finished when the first child (e) started
    assert "mutations often land in the middle" in report  # the study's statement beside ours
    assert "2 workers" in report and "mutation operator: one position, uniform over positions" in report


def test_every_study_finding_gets_a_verdict_and_a_reason(result):
    out, _ = result
    report = (out / "report.md").read_text()
    verdicts = report.split("## Verdicts")[1].split("## 1.")[0]
    for claim in STUDY.values():
        row = next(line for line in verdicts.splitlines() if line.startswith(f"| {claim} |"))
        verdict, reason = row.split(" | ")[3:5]
        assert verdict.strip("* ") in ("agrees", "differs", "not measurable here")
        assert len(reason) > 20


def test_structure_numbers(result):
    _, f = result
    assert f["mutations"] == 4
    assert f["middle_third_share"] == 0.5          # positions 2,1,3,0 of 4 -> 2/3 and 1/3 are in the middle
    assert f["shared_prefix_mean"] == 1.5          # (2 + 1 + 3 + 0) / 4
    # no space named: the generic map (layer i depends on positions 0..i) for both rules, one byte per layer
    assert f["layers_transferable_prefix"] == pytest.approx(6 / 16)
    assert f["bytes_transferable_prefix"] == pytest.approx(6 / 16)
    assert f["layers_transferable_compatible"] == pytest.approx(6 / 16)
    assert f["bytes_transferred"] == pytest.approx(0.3 / 4)  # only e recorded a transfer (30 of 100 B)
    assert f["repeated_arch_share"] == 0


def test_repeated_architectures_are_counted(tmp_path):
    again = rec("i", "e", 0, 7, 9, [1, 1, 0, 2], 3, 0.7)  # the same mutation of e as g: a repeat
    assert findings_dict(analyze(TRACE + [again], tmp_path))["repeated_arch_share"] == 1 / 9


def test_distribution_numbers(result):
    _, f = result
    assert f["workers"] == 2
    assert f["cross_worker_share"] == 0.75         # e (0 vs 1), f (1 vs 0), h (1 vs 0) cross; g does not
    # donor reads: b insert@2/w1 -> e@3/w0; c insert@3/w0 -> f@4/w1; e insert@5/w0 -> g@5/w0 -> h@6/w1
    assert f["same_worker_reuse"] == 0.25
    assert f["reuse_time_median"] == 1.0           # gaps 1, 1, 0, 1
    assert f["reuse_evals_median"] == 1.0


def test_popularity_numbers(result):
    _, f = result
    assert f["donors"] == 3 and f["max_donations"] == 2
    assert f["top10_share"] == 0.5                 # e took 2 of the 4 donations
    assert f["donor_fraction"] == 3 / 8
    assert f["popular_span_median"] == 2           # e donated at evaluations 6 and 7
    assert f["window_top_share"] == pytest.approx((1 + 1 / 2 + 1 / 3 + 2 / 3) / 4)  # windows of 3 evaluations


def test_quality_numbers(result):
    _, f = result
    assert math.isnan(f["low_cut"])  # 4 random initial architectures: too few for an absolute cut
    assert f["donor_percentile"] == pytest.approx((1 + 2 / 3 + 1 + 1) / 4)  # c is 2nd of {0.5, 0.3, 0.2}


def test_low_quality_uses_an_absolute_cut(tmp_path):
    f = findings_dict(analyze(TRACE, tmp_path, RunFacts(low_cut=0.275, low_cut_source="test")))
    assert f["low_cut"] == 0.275
    assert f["low_population_early"] == pytest.approx((1 + 1 / 2) / 2)  # a alone, then {a, b}
    assert f["low_population_late"] == 0.0
    assert f["low_residence"] == 3 and f["low_donations"] == 0
    # a higher bar: the last quarter's populations {e,f,g} and {f,g,h} hold 2 and 1 models below 0.65
    high = analyze(TRACE, tmp_path, RunFacts(low_cut=0.65))
    persist = next(x for x in high if x.key == "low_population_late")
    assert persist.value == pytest.approx((2 / 3 + 1 / 3) / 2) and persist.verdict == "agrees"  # 1.5 models
    assert f["best_score"] == 0.7
    assert f["eval_to_90pct_improvement"] == 7 / 8  # running best .1 .5 .5 .5 .6 .6 .7 .7 reaches .64 at 7th
    assert f["last_half_improvement"] == pytest.approx(1 / 3)


def test_cli_analyze_reads_population_from_summary(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "trace.jsonl").write_text("".join(json.dumps(r) + "\n" for r in TRACE))
    (run / "summary.json").write_text(json.dumps({"settings": {"population": 4, "sample": 2, "window": 7,
                                                                "mutation_bias": 2.0}}))
    assert main(["analyze", str(run / "trace.jsonl"), "--out", str(tmp_path / "rep")]) == 0
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "population P = 4" in report and "popularity window 7 evaluations" in report
    assert "position i drawn with weight (i+1)^2" in report
    assert main(["analyze", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "x")]) == 2


def test_empty_or_broken_trace_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no records"):
        analyze([], tmp_path)
    bad = dict(TRACE[0], layer_bytes=[1, 2])
    with pytest.raises(ValueError, match="layer keys vs 2 layer bytes"):
        analyze([bad], tmp_path)
    assert math.isnan(findings_dict(analyze(TRACE[:3], tmp_path))["shared_prefix_mean"])  # no children yet


def test_progress_hears_every_step(tmp_path):
    steps = []
    analyze(TRACE, tmp_path, progress=steps.append)
    assert len(steps) == STEPS and steps[-1] == "report"
