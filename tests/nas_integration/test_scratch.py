"""A search's own from-scratch retrainings: the control set (fidelity check) and the leaders' re-evaluation."""
import json

import pytest

from nas_integration.search import SearchSettings, run_search
from nas_integration.spaces import get_space
from tensorcache.evolution import Candidate, RegularizedEvolution
from tensorcache.fidelity import fidelity, kendall_tau, read_controls
from tensorcache.trace import read_trace

SMALL = {"train_subset": 400, "evals": 8, "population": 3, "sample": 2, "device": "cpu", "seed": 2}


def test_the_control_set_measures_warm_scores_without_changing_the_search(tmp_path):
    plain = run_search(SearchSettings(out=str(tmp_path / "plain"), run_id="c", **SMALL))
    checked = run_search(SearchSettings(out=str(tmp_path / "checked"), run_id="c", control=1.0, **SMALL))
    trace = read_trace(checked["trace"])
    assert [(r["arch"], r["score"]) for r in trace] == [(r["arch"], r["score"]) for r in read_trace(plain["trace"])]
    warm = {r["model_id"]: r["score"] for r in trace if r["donor_id"] is not None}
    controls = read_controls(checked["trace"])
    assert warm and sorted((c["scratch_of"], c["scratch_seed"]) for c in controls) == \
        sorted((m, k) for m in warm for k in (0, 1))
    assert all(c["donor_id"] is None and c["purpose"] == "control" and c["revisit"] for c in controls)
    scratch = {c["scratch_of"]: c["score"] for c in controls if c["scratch_seed"] == 0}
    f = checked["scratch"]["control"]
    assert f["n"] == len(warm) == f["n_ceiling"]
    assert f["bias"][0] == pytest.approx(sum(warm[m] - scratch[m] for m in warm) / len(warm))
    assert checked["scratch"]["epochs"] == 2 * len(warm) and plain["scratch"]["control"] is None
    assert not (tmp_path / "plain" / "controls.jsonl").exists()


def test_leaders_are_re_evaluated_from_scratch_and_their_scores_replaced(tmp_path):
    summary = run_search(SearchSettings(out=str(tmp_path / "r"), evaluator="tabular", evals=120, population=10,
                                        sample=3, reeval_leaders=5, run_id="r"))
    trace = {r["model_id"]: r for r in read_trace(summary["trace"])}
    redone = read_controls(summary["trace"])
    assert redone and summary["scratch"]["reevaluated"] == len(redone) <= 120 // 5
    for c in redone:  # each one a warm-started child, retrained once without the cache
        assert c["purpose"] == "reeval" and trace[c["scratch_of"]]["donor_id"] is not None
        assert c["warm_score"] == trace[c["scratch_of"]]["score"] and c["donor_id"] is None
    assert len({c["scratch_of"] for c in redone}) == len(redone)
    assert summary["scratch"]["rescored"] == sum(c["used"] for c in redone) > 0
    assert summary["evaluations"] == 120  # the children are unchanged in number


def test_rescoring_a_member_changes_what_tournaments_pick():
    space = get_space("nb201")
    evo = RegularizedEvolution(space, 3, 3, seed=0)
    for i, score in enumerate((50.0, 90.0, 60.0)):
        evo.tell(Candidate(i, f"m{i}", space.sample(evo.rng)), score)
    assert evo.leader().model_id == "m1"
    assert evo.rescore("m1", 10.0) and evo.leader().model_id == "m2"
    assert evo.ask().parent_id == "m2"  # S = P: the tournament sees everyone
    assert not evo.rescore("gone", 1.0)


def test_fidelity_figures_and_kendall_tau():
    assert kendall_tau([1, 2, 3, 4], [1, 2, 3, 4]) == 1.0 and kendall_tau([1, 2, 3], [3, 2, 1]) == -1.0
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(2 / 3)
    scipy = pytest.importorskip("scipy.stats")
    a, b = [3, 1, 4, 1, 5, 9, 2, 6], [2, 7, 1, 8, 2, 8, 1, 8]
    assert kendall_tau(a, b) == pytest.approx(scipy.kendalltau(a, b).statistic)
    rows = [{"purpose": "control", "scratch_of": m, "scratch_seed": k, "score": s, "warm_score": w}
            for m, w, s0, s1 in (("a", 90, 80, 81), ("b", 85, 82, 80), ("c", 70, 60, 62))
            for k, s in ((0, s0), (1, s1))]
    f = fidelity(rows + [{"purpose": "reeval", "scratch_of": "a", "scratch_seed": 0, "score": 0, "warm_score": 90}])
    assert f["n"] == 3 and f["bias"][0] == pytest.approx((10 + 3 + 10) / 3)
    assert f["tau_warm_scratch"] == pytest.approx(1 / 3) and f["tau_ceiling"] == pytest.approx(1 / 3)
    assert json.dumps(f)  # summary.json takes it as is
