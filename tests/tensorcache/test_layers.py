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


def test_layer_keys_stay_those_stores_were_written_with():
    # prefix contexts (none, 0..1), a set of positions (2 and 0), a single later position: keys a shared store
    # written by an earlier version holds, so every way of working them out must give these bytes
    lmap = LayerMap((LayerSpec("stem", (), ()), LayerSpec("a", (), (0, 1)), LayerSpec("b", (), (2, 0)),
                     LayerSpec("head", (), (1,))))
    for _ in range(2):
        assert [k.hex() for k in lmap.keys("space", (3, 1, 4))] == [
            "ec78f2919c8291e1ed8e74fc6a95f880", "cc97022361c7996252e1df81cee45e8f",
            "9d0ed9c05d45e3c81c863a42159e9db1", "cd4b888b1472bddb300deb17b17d495c"]
