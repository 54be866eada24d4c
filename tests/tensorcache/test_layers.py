"""LayerMap.generic: one shared immutable map per length and mode."""
import pytest

from tensorcache import LayerMap
from tensorcache.layers import LayerSpec


def test_generic_maps_are_shared_and_match_a_map_built_by_hand():
    built = LayerMap(tuple(LayerSpec(str(i), (), tuple(range(i + 1))) for i in range(3)), "compatible")
    assert LayerMap.generic(3, "compatible") is LayerMap.generic(3, mode="compatible")
    assert LayerMap.generic(3, "compatible") == built
    assert LayerMap.generic(3) != built and LayerMap.generic(3).mode == "prefix"


def test_generic_with_an_unknown_mode_names_it_every_time():
    for _ in range(2):
        with pytest.raises(ValueError, match="unknown transfer mode 'sideways'"):
            LayerMap.generic(2, "sideways")
