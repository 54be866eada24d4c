import gc

import pytest

from nas_integration.collector import fewer_full_collections
from nas_integration.data import nb201_table
from nas_integration.search import SearchSettings, run_search


def test_full_collections_are_rarer_inside_and_thresholds_come_back_even_after_an_error():
    before = gc.get_threshold()
    with pytest.raises(RuntimeError):
        with fewer_full_collections(10):
            assert gc.get_threshold() == (before[0], before[1], before[2] * 10)
            raise RuntimeError("the search failed")
    assert gc.get_threshold() == before


@pytest.mark.parametrize("factor", [0, -1, 1.5, True, "10"])
def test_a_bad_factor_is_refused_by_name(factor):
    with pytest.raises(ValueError, match="factor"):
        with fewer_full_collections(factor):
            pass


def test_run_search_collects_fully_less_often_while_it_runs_and_restores_the_thresholds(tmp_path):
    before, seen = gc.get_threshold(), set()
    settings = SearchSettings(out=str(tmp_path / "run"), evaluator="tabular", table=str(nb201_table()), evals=20,
                              population=5, sample=2, workers=2)
    run_search(settings, on_record=lambda tally, dropped: seen.add(gc.get_threshold()))
    assert seen == {(before[0], before[1], before[2] * 10)}
    assert gc.get_threshold() == before
