import gc

import pytest

from tensorcache.collector import collector_paused, fewer_full_collections


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


@pytest.mark.parametrize("enabled", [True, False])
def test_the_collector_is_paused_inside_and_left_as_it_was_after_even_after_an_error(enabled):
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        with pytest.raises(RuntimeError):
            with collector_paused():
                assert not gc.isenabled()
                raise RuntimeError("the open failed")
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()
