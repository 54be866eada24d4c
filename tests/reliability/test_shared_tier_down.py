"""With the shared tier (Redis) unreachable, a put still reaches the node-local LMDB tier, so the models
outlive the process; the cache counts the puts the shared tier dropped."""
import numpy as np

from tensorcache import TensorCache

DOWN = "redis://127.0.0.1:1/0"  # nothing listens on port 1


def layers(model: int) -> list[dict[str, np.ndarray]]:
    return [{f"w{i}": np.full(64, model * 10 + i, dtype=np.float32)} for i in range(3)]


def test_models_go_to_lmdb_when_redis_is_unreachable(tmp_path):
    disk = str(tmp_path / "node.lmdb")
    with TensorCache(memory="1MB", disk=disk, redis=DOWN, namespace="down") as cache:
        for model in range(4):
            cache.put(f"m{model}", (model, 1, 2), layers(model))
        stats = cache.stats()
    assert stats["dropped_puts"] == 4
    tiers = stats["tiers"]
    assert tiers["lmdb"]["entries"] == 12 and tiers["memory"]["entries"] == 12 and tiers["redis"]["entries"] == 0
    with TensorCache(memory=0, disk=disk, namespace="down") as again:  # a later process on the node
        hit = again.lookup((3, 1, 2))
        assert hit is not None and hit.donor == "m3" and hit.prefix_len == 3
        assert np.all(hit.layers[2]["w2"] == 32)


def test_without_a_shared_tier_lmdb_takes_the_write_through_as_before(tmp_path):
    with TensorCache(memory="1MB", disk=str(tmp_path / "d.lmdb"), namespace="plain") as cache:
        cache.put("m0", (0, 1, 2), layers(0))
        assert cache.stats()["tiers"]["lmdb"]["entries"] == 3 and cache.stats()["dropped_puts"] == 0
