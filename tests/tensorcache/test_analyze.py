"""`tensorcache analyze` on a small hand-built regularized-evolution trace: report, plots, and numbers
checked against values computed by hand (comments show the arithmetic)."""
import json
import logging
import math

import numpy as np
import pytest

from tensorcache.analyze import PLOTS, SECTIONS, STEPS, STUDY, RunFacts, analyze, findings_dict
from tensorcache.cli import main
from tensorcache.layers import LayerMap

LMAP = LayerMap.generic(4)


def rec(model_id, parent, worker, t0, t1, arch, pos, score, bytes_served=0):
    return {"model_id": model_id, "parent_id": parent, "donor_id": parent, "worker": worker, "t_start": t0,
            "t_end": t1, "arch": arch, "mutation_pos": pos, "score": score, "layers_served": 0,
            "bytes_served": bytes_served, "tier": None, "cache_s": 0.0, "train_s": t1 - t0,
            "layer_bytes": [10, 20, 30, 40], "layer_keys": [k.hex() for k in LMAP.keys("hand", arch)]}


# P = 3, two workers. Start order: a b c d e f g h (indices 0..7). Populations: e sees {a,b,c}, f {b,c,d},
# g {c,d,e}, h {d,e,f}.
TRACE = [
    rec("a", None, 0, 0, 1, [0, 0, 0, 0], None, 0.1),
    rec("b", None, 1, 0, 2, [1, 1, 1, 1], None, 0.5),
    rec("c", None, 0, 1, 3, [2, 2, 2, 2], None, 0.3),
    rec("d", None, 1, 2, 4, [3, 3, 3, 3], None, 0.2),
    rec("e", "b", 0, 3, 5, [1, 1, 0, 1], 2, 0.6, bytes_served=30),
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
    assert f["repeated_arch_share"] == 0 and f["hit_ratio"] == 0  # no record was served a layer


@pytest.mark.parametrize("layers, hit", [(2, True), (1, False)])  # layer 0 depends on no position
def test_hits_are_counted_as_the_metrics_define_them(tmp_path, layers, hit):
    served = {**rec("i", "e", 0, 7, 9, [1, 1, 0, 2], 3, 0.7, bytes_served=30), "layers_served": layers,
              "layer_deps": [[], [0], [0, 1], [0, 1, 2]]}
    assert findings_dict(analyze(TRACE + [served], tmp_path))["hit_ratio"] == (1 / 9 if hit else 0)


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


def test_a_hand_edited_summary_with_values_of_the_wrong_kind_is_read_around_with_warnings(tmp_path, caplog):
    run = tmp_path / "run"
    run.mkdir()
    (run / "trace.jsonl").write_text("".join(json.dumps(r) + "\n" for r in TRACE))
    (run / "summary.json").write_text(json.dumps({"settings": {
        "population": "x", "sample": 2.5, "window": True, "mutation_bias": "high", "control": None,
        "transfer": "sideways", "cache_config": {"policy_options": {"window": -4}}}}))
    with caplog.at_level(logging.WARNING, logger="tensorcache"):
        assert main(["analyze", str(run / "trace.jsonl"), "--out", str(tmp_path / "rep")]) == 0  # a TypeError before
    for name, value in (("population", "'x'"), ("sample", "2.5"), ("window", "True"), ("mutation_bias", "'high'"),
                        ("transfer", "'sideways'"), ("cache_config.policy_options.window", "-4")):
        assert f"settings.{name} is {value}, not " in caplog.text
    assert "population P = 3" in (tmp_path / "rep" / "report.md").read_text()  # inferred from the trace instead


def test_empty_or_broken_trace_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no records"):
        analyze([], tmp_path)
    bad = dict(TRACE[0], layer_bytes=[1, 2])
    with pytest.raises(ValueError, match="layer keys vs 2 layer bytes"):
        analyze([bad], tmp_path)
    assert math.isnan(findings_dict(analyze(TRACE[:3], tmp_path))["shared_prefix_mean"])  # no children yet
    with pytest.raises(ValueError, match="got S=4, P=3"):
        analyze(TRACE, tmp_path, RunFacts(population_size=3, sample_size=4))


def test_progress_hears_every_step(tmp_path):
    steps = []
    analyze(TRACE, tmp_path, progress=steps.append)
    assert len(steps) == STEPS and steps[-1] == "report"


# ------------------------------------------------------------------ transferable rows follow the rule, not the trace
def nb201_trace(mode: str, n_children: int = 30, seed: int = 3) -> list[dict]:
    """An NB201 lineage of one-edge mutations whose layer keys and bytes are recorded under ``mode``."""
    import random

    from nas_integration.spaces import get_space

    space, rng = get_space("nb201"), random.Random(seed)
    archs, parents, positions = [space.sample(rng) for _ in range(4)], [None] * 4, [None] * 4
    for _ in range(n_children):
        k = rng.randrange(len(archs))
        child, pos = space.mutate(archs[k], rng)
        archs.append(child)
        parents.append(f"m{k}")
        positions.append(pos)
    out = []
    for i, (arch, parent, pos) in enumerate(zip(archs, parents, positions)):
        keys = [k.hex() for k in space.layer_map(arch, mode).keys("nb201", arch)]
        out.append({"model_id": f"m{i}", "parent_id": parent, "donor_id": parent, "worker": i % 3, "t_start": i,
                    "t_end": i + 0.5, "arch": list(arch), "mutation_pos": pos, "score": 50 + i % 7,
                    "layers_served": 0, "bytes_served": 0, "tier": None, "cache_s": 0.0, "train_s": 0.5,
                    "layer_bytes": space.layer_nbytes(arch, mode), "layer_keys": keys})
    return out


TRANSFER_ROWS = ("layers_transferable_prefix", "bytes_transferable_prefix", "layers_transferable_compatible",
                 "bytes_transferable_compatible")


def test_transferable_rows_do_not_depend_on_the_traces_rule(tmp_path):
    rows = {}
    for mode in ("prefix", "compatible"):
        run = tmp_path / mode
        run.mkdir()
        (run / "trace.jsonl").write_text("".join(json.dumps(r) + "\n" for r in nb201_trace(mode)))
        (run / "summary.json").write_text(json.dumps({"settings": {"space": "nb201", "transfer": mode,
                                                                   "population": 4}}))
        assert main(["analyze", str(run / "trace.jsonl"), "--out", str(tmp_path / f"rep-{mode}")]) == 0
        report = (tmp_path / f"rep-{mode}" / "report.md").read_text()
        rows[mode] = [line for line in report.splitlines() if "transferable from the parent" in line]
    assert len(rows["prefix"]) == 4 and rows["prefix"] == rows["compatible"]
    # a one-edge NB201 mutation keeps every layer but the changed edge's under the compatible rule
    assert "| 100.0% |" not in rows["prefix"][2] and "prefix rule" in rows["prefix"][0]


def test_compatible_rule_counts_all_but_the_mutated_edge(tmp_path):
    from nas_integration.spaces import get_space

    space = get_space("nb201")
    trace = nb201_trace("prefix", n_children=10)
    facts = RunFacts(layers=lambda arch, mode: (space.layer_map(arch, mode), space.layer_nbytes(arch, mode)))
    f = findings_dict(analyze(trace, tmp_path, facts))
    kids = [r for r in trace if r["parent_id"] is not None]
    expect = []
    for r in kids:  # layers that own no tensors (param-free ops) are not in the map
        names = [layer.name for layer in space.layer_map(r["arch"], "compatible").layers]
        sizes = dict(zip(names, space.layer_nbytes(r["arch"], "compatible")))
        moved = sum(b for name, b in sizes.items() if name != f"edge{r['mutation_pos']}")
        expect.append(moved / sum(sizes.values()))
    assert f["bytes_transferable_compatible"] == pytest.approx(sum(expect) / len(expect))
    assert f["bytes_transferable_prefix"] < f["bytes_transferable_compatible"]


# ------------------------------------------------------------------------------------------ baselines, verdicts
def lineage(workers, same_donor: bool, n: int = 60) -> list[dict]:
    """P = 4 random models, then ``n`` children; each child's donor is model 0 (same_donor) or a rotating pick."""
    out = [rec(f"r{i}", None, workers[i % len(workers)], i, i + 0.5, [i % 4] * 4, None, 0.5) for i in range(4)]
    for i in range(n):
        donor = "r0" if same_donor else f"r{i % 4}"
        w = workers[i % len(workers)]
        out.append(rec(f"c{i:03d}", donor, w, 4 + i, 4.5 + i, [0, 0, 0, i % 4], 3, 0.4))
    return out


def verdict(findings, key):
    return next(f for f in findings if f.key == key)


def test_popularity_against_uniform_donor_choice(tmp_path):
    skewed = verdict(analyze(lineage([0], same_donor=True), tmp_path, RunFacts(population_size=4)), "top10_share")
    assert skewed.value == 1.0 and skewed.baseline < 0.5 and skewed.verdict == "agrees"
    even = verdict(analyze(lineage([0], same_donor=False), tmp_path, RunFacts(population_size=4)), "top10_share")
    assert even.verdict == "differs" and even.baseline > 0


def test_worker_locality_against_a_shuffled_assignment(tmp_path):
    one = verdict(analyze(lineage([0], True), tmp_path, RunFacts(population_size=4)), "same_worker_reuse")
    assert one.verdict == "not measurable here" and "one worker" in one.reason
    # child i has donor r(i mod 4) and runs on worker i mod 4, where that donor ran: every read stays local
    f = verdict(analyze(lineage([0, 1, 2, 3], False), tmp_path, RunFacts(population_size=4)), "same_worker_reuse")
    assert f.value == 1.0 and f.baseline == pytest.approx(0.25, abs=0.05) and f.verdict == "agrees"
    spread = verdict(analyze(lineage([0, 1, 2, 3], True), tmp_path, RunFacts(population_size=4)), "same_worker_reuse")
    assert spread.verdict == "differs"


def test_mid_sequence_verdict_names_the_operator(tmp_path):
    f = verdict(analyze(lineage([0], True), tmp_path, RunFacts(population_size=4, mutation_bias=1.5)),
                "middle_third_share")
    assert f.value == 0 and f.verdict == "differs" and "(i+1)^1.5" in f.reason  # every mutation at position 3


def test_popular_span_is_not_a_finding_under_aging(tmp_path):
    f = verdict(analyze(TRACE, tmp_path), "popular_span_median")
    assert f.verdict == "not measurable here" and "P = 3" in f.reason


def test_a_trace_without_children_gives_no_verdict_on_persistence_and_no_nan_in_words(tmp_path):
    found = analyze(TRACE[:4], tmp_path, RunFacts(population_size=3, low_cut=0.15))  # random initial models only
    persist, span = verdict(found, "low_population_late"), verdict(found, "popular_span_median")
    assert persist.verdict == "not measurable here" and "no mutated children" in persist.reason
    assert "nan" not in span.reason and "no model donated twice" in span.reason


def test_workers_sort_numerically():
    from tensorcache.analyze import Trace

    records = [dict(TRACE[k], worker=w) for k, w in enumerate([9, 63, 8, 10, 62, 7, 1, 0])]
    assert Trace(records).workers == [0, 1, 7, 8, 9, 10, 62, 63]
    assert Trace([dict(r, worker=str(r["worker"])) for r in records]).workers[-2:] == ["62", "63"]


# ------------------------------------------------------------------------------------------------ figures
def many_workers(n_workers: int, per_worker: int = 2) -> list[dict]:
    out = [rec(f"r{i}", None, i % n_workers, i, i + 3, [i % 4] * 4, None, 0.1 * (i % 7)) for i in range(8)]
    for i in range(n_workers * per_worker):
        out.append(rec(f"c{i:05d}", f"r{i % 8}", i % n_workers, 8 + i / n_workers, 10 + i / n_workers,
                       [i % 4, 1, 2, 3], i % 4, 0.5, bytes_served=10 * (i % 2)))
    return out


@pytest.mark.parametrize("n_workers", [1, 8, 64, 1024])
def test_timeline_is_readable_for_any_worker_count(tmp_path, n_workers):
    from PIL import Image

    analyze(many_workers(n_workers), tmp_path, RunFacts(population_size=8))
    width, height = Image.open(tmp_path / "worker_timeline.png").size
    assert 1000 <= width <= 1200 and 280 <= height <= 1300, (width, height)
    report = (tmp_path / "report.md").read_text()
    assert plural_ok(report, n_workers)


def plural_ok(report: str, n: int) -> bool:
    return ("1 worker," in report and "1 workers" not in report) if n == 1 else f"{n} workers" in report


def test_count_axes_have_integer_ticks(tmp_path, monkeypatch):
    import tensorcache.analyze.plots as plots

    figures = []
    real = plots.save_figure
    monkeypatch.setattr(plots, "save_figure", lambda fig, out, name: (figures.append(fig), real(fig, out, name)))
    analyze(TRACE, tmp_path)  # counts of 0..2: matplotlib's default locator would tick 0.25, 0.5, ...
    counted = [ax for fig in figures for ax in fig.axes
               if ax.get_ylabel() in ("children", "count", "evaluations running") or ax.get_ylabel().startswith("donations")]
    assert len(counted) >= 5
    for ax in counted:
        ticks = [t for t in ax.get_yticks() if ax.get_ylim()[0] <= t <= ax.get_ylim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), (ax.get_ylabel(), ticks)


def test_progress_bar_appears_only_on_long_runs(capsys):
    from tensorcache.cli import LazyBar

    with LazyBar("analyze", 2, after_s=3600) as bar:  # a quick run: never drawn
        bar.step("a")
        bar.step("b")
        assert not bar.shown
    assert capsys.readouterr().err == ""
    with LazyBar("analyze", 2, after_s=0) as bar:  # a long one: drawn
        bar.step("a")
        assert bar.shown
        bar.step("b")


def test_whole_number_histograms_centre_each_bar_on_its_value():
    from tensorcache.analyze.plots import integer_bins

    assert integer_bins(np.array([0, 1, 5])).tolist() == [-0.5, 0.5, 1.5, 2.5, 3.5, 4.5, 5.5]
    assert integer_bins(np.array([3])).tolist() == [2.5, 3.5]


def test_legends_sit_beside_the_data():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from tensorcache.analyze.plots import legend_outside

    fig = Figure()
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], label="a")
    legend_outside(ax)
    renderer = FigureCanvasAgg(fig).get_renderer()
    assert ax.get_legend().get_window_extent(renderer).x0 >= ax.get_window_extent(renderer).x1


def test_every_panel_has_a_title_and_a_fraction_is_labelled_as_one(tmp_path, monkeypatch):
    import tensorcache.analyze.plots as plots

    drawn = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, out, name: drawn.append((name, fig)))
    run = tmp_path / "run"
    run.mkdir()
    (run / "trace.jsonl").write_text("".join(json.dumps(r) + "\n" for r in TRACE))
    assert main(["analyze", str(run / "trace.jsonl"), "--out", str(tmp_path / "rep")]) == 0
    for name, fig in drawn:
        for ax in fig.axes:
            assert ax.get_title(), f"{name}: a panel without a title"
            assert "time" not in ax.get_xlabel() or "(s" in ax.get_xlabel() or "seconds" in ax.get_xlabel(), name
    (prefix,) = [fig for name, fig in drawn if name == "shared_prefix.png"]
    assert [ax.get_xlabel() for ax in prefix.axes][1:] == ["fraction of the child's bytes"] * 2


def test_cli_analyze_shows_the_fidelity_check_of_a_search_with_a_control_set(tmp_path):
    from nas_integration.search import SearchSettings, run_search

    summary = run_search(SearchSettings(out=str(tmp_path / "run"), evaluator="tabular", evals=80, population=10,
                                        sample=3, control=0.5, run_id="f"))
    assert main(["analyze", summary["trace"], "--out", str(tmp_path / "rep")]) == 0
    report = (tmp_path / "rep" / "report.md").read_text()
    n = summary["scratch"]["control"]["n"]
    # the table's scores do not depend on training: warm and scratch agree exactly
    assert n > 0 and f"{n} controls: warm - scratch +0.00 [+0.00, +0.00]" in report and "ceiling" in report
    assert main(["analyze", str(tmp_path / "run" / "trace.jsonl"), "--out", str(tmp_path / "rep2"),
                 "--population", "10"]) == 0
    (tmp_path / "run" / "controls.jsonl").unlink()
    assert main(["analyze", summary["trace"], "--out", str(tmp_path / "rep3")]) == 0
    assert "ran with `--control 0.5`, yet no control record" in (tmp_path / "rep3" / "report.md").read_text()
    (tmp_path / "run" / "summary.json").unlink()
    assert main(["analyze", summary["trace"], "--out", str(tmp_path / "rep4")]) == 0
    assert "No control set (run the search with `run_search --control F`" in \
        (tmp_path / "rep4" / "report.md").read_text()


def test_a_search_with_a_control_fraction_but_no_warm_child_is_not_told_to_add_one(tmp_path):
    from nas_integration.search import SearchSettings, run_search

    summary = run_search(SearchSettings(out=str(tmp_path / "run"), evaluator="tabular", evals=2, population=2,
                                        sample=1, control=1.0, cache=False, run_id="f"))  # no child warm-started
    assert main(["analyze", summary["trace"], "--out", str(tmp_path / "rep")]) == 0
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "ran with `--control 1`" in report and "run the search with `run_search --control F`" not in report


@pytest.fixture(scope="module")
def tournament_trace(tmp_path_factory):
    """A tabular regularized-evolution search (P 20, S 10): strong selection, uniform mutation positions."""
    from nas_integration.search import SearchSettings, run_search
    from tensorcache.trace import read_trace

    out = tmp_path_factory.mktemp("tournament") / "run"
    summary = run_search(SearchSettings(out=str(out), evaluator="tabular", evals=400, population=20, sample=10,
                                        seed=5, run_id="t", cache=False))
    return read_trace(summary["trace"])


def test_donor_popularity_is_tested_against_tournaments_of_the_same_S(tournament_trace, tmp_path):
    def verdict(facts):
        return next(f for f in analyze(tournament_trace, tmp_path, facts) if f.key == "top10_share")

    uniform = verdict(RunFacts(population_size=20))
    tournament = verdict(RunFacts(population_size=20, sample_size=10))
    assert uniform.value == tournament.value
    assert uniform.verdict == "agrees" and "uniform pick" in uniform.reason  # the weak null is beaten
    # tournaments alone explain the concentration: the null the algorithm implies
    assert tournament.verdict == "differs" and "tournament selection alone" in tournament.reason
    assert tournament.baseline > uniform.baseline


def test_mid_sequence_mutations_are_tested_against_the_drivers_operator(tournament_trace, tmp_path):
    from tensorcache.analyze.structure import operator_middle_share

    found = next(f for f in analyze(tournament_trace, tmp_path, RunFacts(population_size=20))
                 if f.key == "middle_third_share")
    assert found.baseline == pytest.approx(operator_middle_share(6, 0.0)) == pytest.approx(2 / 6)
    assert found.verdict == "differs" and "false by construction" in found.reason
    assert operator_middle_share(7, 0.0) == pytest.approx(3 / 7)
    assert operator_middle_share(6, 2.0) == pytest.approx((9 + 16) / (1 + 4 + 9 + 16 + 25 + 36))


def test_diminishing_returns_are_tested_against_random_search(tournament_trace, tmp_path):
    found = next(f for f in analyze(tournament_trace, tmp_path, RunFacts(population_size=20))
                 if f.key == "last_half_improvement")
    assert "random search" in found.reason and 0 <= found.baseline < 0.5  # a running best flattens anyway
    assert found.verdict in ("agrees", "differs", "holds by construction")


def test_locality_null_lets_a_worker_run_one_job_at_a_time(tmp_path):
    from nas_integration.search import SearchSettings, run_search
    from tensorcache.analyze.base import Trace
    from tensorcache.analyze.distribution import occupancy_same_worker, reuse_pairs
    from tensorcache.trace import read_trace

    runs = {}
    for mode in ("async", "batch"):
        s = run_search(SearchSettings(out=str(tmp_path / mode), evaluator="tabular", evals=600, population=20,
                                      sample=5, workers=16, mode=mode, run_id=mode, cache=False, seed=1))
        runs[mode] = read_trace(s["trace"])
    for mode, trace in runs.items():
        tr = Trace(trace, 20)
        null = occupancy_same_worker(tr, reuse_pairs(tr), np.random.default_rng(0), draws=5)
        found = next(f for f in analyze(trace, tmp_path / mode, RunFacts(population_size=20))
                     if f.key == "same_worker_reuse")
        assert "a random worker among those free" in found.reason and 0 <= null.mean() <= 1
        # nothing in either mode keeps donors local: the verdict is the same under the occupancy-aware null
        assert found.verdict == "differs", (mode, found.reason)
