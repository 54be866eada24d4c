import gc

import pytest

from nas_integration.collector import fewer_full_collections


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
