"""run_search runs full collections less often while it searches, and gives the thresholds back."""
import gc

from nas_integration.data import nb201_table
from nas_integration.search import SearchSettings, run_search


def test_run_search_collects_fully_less_often_while_it_runs_and_restores_the_thresholds(tmp_path):
    before, seen = gc.get_threshold(), set()
    settings = SearchSettings(out=str(tmp_path / "run"), evaluator="tabular", table=str(nb201_table()), evals=20,
                              population=5, sample=2, workers=2)
    run_search(settings, on_record=lambda tally, dropped: seen.add(gc.get_threshold()))
    assert seen == {(before[0], before[1], before[2] * 10)}
    assert gc.get_threshold() == before
