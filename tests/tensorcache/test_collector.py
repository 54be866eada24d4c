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


def test_what_a_paused_block_made_joins_the_oldest_generation_and_frozen_objects_stay_frozen():
    """On the way out the block's objects skip the young collections (which would walk them all, freeing
    nothing), yet stay collectable; objects the caller froze stay frozen."""
    was = gc.isenabled()
    gc.enable()
    try:
        with collector_paused():
            made = [[i] for i in range(50_000)]
            cycle = [made[0]]
            cycle.append(cycle)
        oldest = {id(o) for o in gc.get_objects(generation=2)}
        assert id(made[0]) in oldest and id(made[-1]) in oldest  # not in a young generation, waiting to be walked
        assert gc.get_freeze_count() == 0
        del cycle
        assert gc.collect() >= 1  # the dropped cycle is still found by a full collection
        gc.freeze()
        frozen = gc.get_freeze_count()
        with collector_paused():
            made += [[i] for i in range(1_000)]
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
        (gc.enable if was else gc.disable)()
