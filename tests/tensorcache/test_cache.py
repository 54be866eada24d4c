"""TensorCache end to end on real tiers: API, lookup correctness, capacities, corruption, sharing."""
import gc
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import lmdb

from tensorcache import LayerMap, TensorCache
from tensorcache.keys import namespace_key
from tensorcache.payload import encode


def layer_tensors(model: int, arch, width: int = 4):
    """One {name: tensor} per position whose values identify (model, position)."""
    return [{f"w{i}": np.full(width, model * 1000 + i, dtype=np.float32)} for i in range(len(arch))]


def shared_prefix(a, b) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def test_api_as_documented(tmp_path):
    cache = TensorCache(memory="2MB", disk=tmp_path / "cache.lmdb", disk_capacity="20MB", policy="donor-window",
                        namespace="my-search")
    cache.put("m17", [1, 2, 3], layer_tensors(17, [1, 2, 3]), score=0.91)
    cache.put("m18", [1, 2, 0], layer_tensors(18, [1, 2, 0]), score=0.95, parent="m17")
    hit = cache.lookup([1, 2, 4], parent="m17")
    assert hit.donor == "m17" and hit.prefix_len == 2 and hit.indices == [0, 1]
    assert [sorted(layer) for layer in hit.layers] == [["w0"], ["w1"]]
    assert hit.layers[1]["w1"][0] == 17001
    assert cache.lookup([1, 2, 4]).donor == "m18"  # no parent given: better score wins the tie
    assert cache.lookup([0, 2, 3]) is None
    stats = cache.stats()
    assert stats["hits"] == 2 and stats["misses"] == 1 and stats["tiers"]["lmdb"]["used_bytes"] > 0
    cache.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(models=st.lists(st.tuples(st.lists(st.integers(0, 2), min_size=5, max_size=5), st.floats(0, 1)),
                       min_size=1, max_size=12),
       child=st.lists(st.integers(0, 2), min_size=5, max_size=5), parent_pick=st.integers(0, 20))
def test_lookup_returns_longest_prefix_single_donor(models, child, parent_pick):
    cache = TensorCache(memory="64MB", namespace="prop")
    for m, (arch, score) in enumerate(models):
        cache.put(f"m{m}", arch, layer_tensors(m, arch), score=score)
    parent = f"m{parent_pick}" if parent_pick < len(models) else None
    best = max(shared_prefix(arch, child) for arch, _ in models)
    hit = cache.lookup(child, parent=parent)
    if best == 0:
        assert hit is None
        return
    assert hit.prefix_len == best and hit.indices == list(range(best))
    donor = int(hit.donor[1:])
    assert shared_prefix(models[donor][0], child) == best
    tied = [m for m, (arch, _) in enumerate(models) if shared_prefix(arch, child) == best]
    if parent is not None and int(parent[1:]) in tied:
        assert donor == int(parent[1:])
    else:
        assert models[donor][1] == max(models[m][1] for m in tied)
    for i, layer in enumerate(hit.layers):  # one donor's tensors only, each at its own position
        assert np.all(layer[f"w{i}"] == donor * 1000 + i)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.tuples(st.lists(st.integers(0, 3), min_size=4, max_size=4), st.integers(1, 3000),
                              st.booleans()), min_size=1, max_size=40),
       policy=st.sampled_from(["fifo", "lru", "lfu", "donor-window", "evolution-aware"]))
@pytest.mark.parametrize("device_memory", [0, 8_000])
def test_capacities_are_never_exceeded_and_hits_are_genuine(tmp_path_factory, ops, policy, device_memory):
    path = tmp_path_factory.mktemp("cap") / "c.lmdb"
    cache = TensorCache(memory=20_000, disk=path, disk_capacity=60_000, policy=policy, namespace="cap",
                        device_memory=device_memory, device="cpu")
    stored = {}
    for n, (arch, width, do_lookup) in enumerate(ops):
        if do_lookup:
            hit = cache.lookup(arch)
            if hit is not None:
                donor_arch = stored[hit.donor]
                assert shared_prefix(donor_arch, arch) >= hit.prefix_len
                d = int(hit.donor[1:])
                for i, layer in zip(hit.indices, hit.layers):  # torch tensors when served by the device tier
                    assert np.all(np.asarray(layer[f"w{i}"]) == d * 1000 + i)
        cache.put(f"m{n}", arch, layer_tensors(n, arch, width), score=n)
        stored[f"m{n}"] = arch
        cache.notify_evaluation()
        for name, tier in cache.stats()["tiers"].items():
            assert tier["used_bytes"] <= tier["capacity"], name
        assert cache.check_invariants() == []  # books, residency, policies and kept layers agree
    cache.close()


def test_a_promotion_whose_evictions_cascade_onto_its_own_copy_keeps_the_catalog_whole(tmp_path):
    # Found by the test above: promoting m6 from LMDB into the device tier demotes down the tiers until
    # LMDB evicts m6's own copy; the model must stay known and every tier's bookkeeping exact.
    cache = TensorCache(memory=20_000, disk=tmp_path / "c.lmdb", disk_capacity=60_000, policy="fifo",
                        namespace="cap", device_memory=8000, device="cpu")
    widths = [1, 1, 1, 94, 110, 510, 2964, 356]
    archs = [[0, 0, 0, 0]] * 6 + [[1, 0, 0, 0], [0, 0, 0, 0]]
    for n, (arch, width) in enumerate(zip(archs, widths)):
        cache.put(f"m{n}", arch, layer_tensors(n, arch, width), score=n)
    hit = cache.lookup([1, 0, 0, 0])
    assert hit.donor == "m6" and all(np.all(np.asarray(layer[f"w{i}"]) == 6000 + i)
                                     for i, layer in zip(hit.indices, hit.layers))
    assert cache.check_invariants() == []
    cache.put("m9", [0, 0, 0, 0], layer_tensors(9, [0, 0, 0, 0], 787), score=9)  # raised KeyError before
    cache.close()


def test_eviction_demotes_to_disk_and_hit_promotes_back(tmp_path):
    blob = 40_000  # bytes per layer, so the memory tier holds only a few layers
    cache = TensorCache(memory=100_000, disk=tmp_path / "c.lmdb", disk_capacity="10MB", policy="fifo")
    for m in range(4):
        cache.put(f"m{m}", [m, 0], [{"a": np.full(blob // 4, m, np.float32)}, {"b": np.ones(10, np.float32) * m}])
    assert cache.stats()["evictions"].get("memory:capacity", 0) > 0
    hit = cache.lookup([0, 0])
    assert hit.donor == "m0" and hit.slowest_tier == "lmdb" and hit.prefix_len == 2
    assert cache.lookup([0, 0]).slowest_tier == "memory"  # promoted on the first hit
    assert cache.stats()["promotions"] >= 1


def test_local_models_are_those_the_process_tiers_hold_now(tmp_path):
    blob = 40_000  # bytes per first layer: the memory tier holds two of them
    cache = TensorCache(memory=100_000, disk=tmp_path / "c.lmdb", disk_capacity="10MB", policy="fifo")
    assert cache.local_models() == frozenset()
    for m in range(4):
        cache.put(f"m{m}", [m, 0], [{"a": np.full(blob // 4, m, np.float32)}, {"b": np.ones(10, np.float32) * m}])
    local = cache.local_models()
    assert {"m2", "m3"} <= local and "m0" not in local  # m0's layers were all demoted to LMDB
    assert cache.lookup([0, 0]).donor == "m0"  # promoted back into memory
    assert "m0" in cache.local_models()
    cache.close()
    shared = TensorCache(memory=0, disk=tmp_path / "c.lmdb", disk_capacity="10MB", policy="fifo")
    assert shared.lookup([1, 0]).donor == "m1" and shared.local_models() == frozenset()  # LMDB is no process's own
    shared.close()


def test_corrupt_disk_payload_is_a_miss_and_is_dropped(tmp_path, caplog):
    cache = TensorCache(memory=0, disk=tmp_path / "c.lmdb", policy="lru")
    cache.put("m0", [1], [{"w": np.arange(64, dtype=np.float32)}])
    cache.close()
    digest = encode(np.arange(64, dtype=np.float32))[0]
    with lmdb.open(str(tmp_path / "c.lmdb")) as env, env.begin(write=True) as txn:
        key = namespace_key("default") + b"b" + digest  # the payload's key in the file
        raw = bytearray(txn.get(key))
        raw[-1] ^= 0xFF
        txn.put(key, bytes(raw))
    cache = TensorCache(memory=0, disk=tmp_path / "c.lmdb", policy="lru")
    assert cache.lookup([1]) is None
    assert cache.stats()["corrupt"] == 1
    assert "digest mismatch" in caplog.text
    assert cache.lookup([1]) is None  # dropped, not re-read


def test_compatible_mode_serves_matching_layers_anywhere():
    lmap = LayerMap.generic(3, mode="compatible")
    own = LayerMap(tuple(type(s)(s.name, s.params, (int(s.name),)) for s in lmap.layers), "compatible")
    cache = TensorCache(memory="1MB")
    cache.put("a", [1, 1, 1], layer_tensors(1, [1, 1, 1]), layer_map=own)
    hit = cache.lookup([2, 1, 1], layer_map=own)
    assert hit.donor == "a" and hit.indices == [1, 2] and hit.prefix_len == 0


def test_bad_input_is_rejected_with_the_bad_value():
    with pytest.raises(ValueError, match="2GiBx"):
        TensorCache(memory="2GiBx")
    with pytest.raises(ValueError, match="nope"):
        TensorCache(policy="nope")
    cache = TensorCache(memory="1MB")
    with pytest.raises(ValueError, match="arch"):
        cache.put("m", [1, -2], layer_tensors(0, [1, 2]))
    with pytest.raises(ValueError, match="3 layer dicts"):
        cache.put("m", [1, 2], layer_tensors(0, [1, 2, 3]))
    with pytest.raises(ValueError, match="arch"):
        cache.lookup(["x"])


WRITER = """
import sys, numpy as np
from tensorcache import TensorCache
path, worker = sys.argv[1], int(sys.argv[2])
cache = TensorCache(memory="1MB", disk=path, policy="lru", namespace="shared")
def layers(m, n): return [{f"w{i}": np.full(4, m * 1000 + i, dtype=np.float32)} for i in range(n)]
for m in range(10):
    cache.put(f"w{worker}m{m}", [worker, m], layers(worker * 100 + m, 2))
cache.put("same", [9, 9], layers(999, 2))  # both processes put the same donor
cache.close()
"""


def test_processes_on_one_node_share_models_through_lmdb(tmp_path):
    path = str(tmp_path / "c.lmdb")
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, path, str(w)]) for w in (1, 2)]
    for p in procs:
        assert p.wait(120) == 0
    reader = TensorCache(memory="1MB", disk=path, policy="lru", namespace="shared")
    for w in (1, 2):
        for m in range(10):
            hit = reader.lookup([w, m])
            assert hit.donor == f"w{w}m{m}" and hit.slowest_tier == "lmdb"
            assert hit.layers[1]["w1"][0] == (w * 100 + m) * 1000 + 1
    assert reader.lookup([9, 9]).prefix_len == 2
    assert reader.stats()["models"] == 21


def test_a_put_that_evicts_its_own_first_layers_keeps_the_rest():
    layer = {"w": np.zeros(1000, np.float32)}
    one = len(__import__("tensorcache.payload", fromlist=["encode"]).encode(layer["w"])[1])
    cache = TensorCache(memory=int(one * 1.5), policy="fifo")
    cache.put("m0", [0, 1], [{"w": np.zeros(1000, np.float32)}, {"w": np.ones(1000, np.float32)}])
    assert cache.stats()["tiers"]["memory"]["used_bytes"] <= int(one * 1.5)
    assert cache.lookup([0, 1]) is None  # layer 0 was evicted: no unbroken run from layer 0 remains
    assert cache.lookup([0, 1], layer_map=LayerMap.generic(2, mode="compatible")).indices == [1]


@pytest.mark.parametrize("disk", [False, True])
def test_a_held_model_leaves_the_cyclic_collector_about_one_object_per_layer(tmp_path, disk):
    # a long search holds 10^5-10^6 layers, and every full collection walks each object they keep tracked: a
    # layer record must not keep a dict, a TensorRef or a memoryview per tensor, nor each policy a tuple per entry
    cache = TensorCache(memory=1 << 30, disk=str(tmp_path / "c.lmdb") if disk else None)
    rng = np.random.default_rng(0)

    def put(i: int) -> None:
        layers = [{"w": rng.random(4, dtype=np.float32), "b": np.arange(i, i + 2)} for _ in range(10)]
        cache.put(f"m{i}", (i % 3, i % 5, i, 1, 2, 3, 4, 5, 6, 7), layers, score=0.5, parent=f"m{i - 1}")

    for i in range(20):
        put(i)
    gc.collect()
    before = {id(o) for o in gc.get_objects()}
    for i in range(20, 70):
        put(i)
    for _ in range(3):  # each collection stops tracking one more level of nested tuples of atoms
        gc.collect()
    kept = sum(id(o) not in before for o in gc.get_objects())
    assert kept <= 50 * (10 + 10), kept  # 50 models of 10 layers (two tensors each); 77 per model before


def test_a_state_dict_matching_no_layer_is_named_and_an_empty_model_is_never_a_donor():
    torch = pytest.importorskip("torch")
    cache = TensorCache(memory="1MB")
    state = torch.nn.Linear(3, 2).state_dict()
    with pytest.raises(ValueError, match=r"match no layer.*'weight', 'bias'"):
        cache.put("m", [1, 2], state)  # no layer_map: the generic map names no state-dict entry
    cache.put("real", [1, 2], layer_tensors(1, [1, 2]), score=0.1)
    assert cache.put("empty", [1, 2], [{}, {}], score=0.99).written == 0
    assert cache.lookup([1, 2]).donor == "real"


def test_served_layers_are_the_kind_and_dtype_that_was_put():
    torch = pytest.importorskip("torch")
    cache = TensorCache(memory="1MB")
    bf = torch.randn(4).to(torch.bfloat16)
    cache.put("t", [1, 2], [{"a": bf}, {"b": np.arange(3, dtype=np.int16)}])
    a, b = cache.lookup([1, 2]).layers
    assert isinstance(a["a"], torch.Tensor) and a["a"].dtype == torch.bfloat16 and torch.equal(a["a"], bf)
    assert isinstance(b["b"], np.ndarray) and b["b"].dtype == np.int16 and not b["b"].flags.writeable


def test_put_and_lookup_report_keys_bytes_dependencies_and_tiers(tmp_path):
    cache = TensorCache(memory="1MB", disk=tmp_path / "c.lmdb")
    stored = cache.put("m", [1, 2], layer_tensors(1, [1, 2]))
    assert stored.keys == LayerMap.generic(2).keys("default", [1, 2])
    assert stored.depends_on == [(0,), (0, 1)] and stored.written == 2 * sum(stored.layer_bytes)  # both tiers
    hit = cache.lookup([1, 2])
    assert hit.keys == stored.keys and hit.layer_bytes == stored.layer_bytes and hit.tiers == ["memory", "memory"]


def test_a_hit_from_a_shared_tier_is_read_in_round_trips_that_do_not_grow_with_its_layers(redis_url, monkeypatch):
    import uuid

    import redis

    trips = []
    for cls, name in ((redis.client.Pipeline, "execute"), (redis.Redis, "execute_command")):
        original = getattr(cls, name)
        monkeypatch.setattr(cls, name, lambda self, *a, _f=original, _n=name, **k: trips.append(_n) or _f(self, *a, **k))
    counts = {}
    for n_layers in (3, 24):
        with TensorCache(memory=0, redis=redis_url, namespace=f"trips-{uuid.uuid4().hex[:8]}",
                         redis_required=True) as cache:
            layers = [{"w": np.full(16, i, dtype=np.float32), "b": np.full(2, i, dtype=np.float32)}
                      for i in range(n_layers)]
            cache.put("m", list(range(n_layers)), layers)
            cache.lookup(list(range(n_layers)))  # the log followed up to now
            trips.clear()
            hit = cache.lookup(list(range(n_layers)))
            assert hit is not None and len(hit.indices) == n_layers
            assert all(np.array_equal(got["w"], want["w"]) for got, want in zip(hit.layers, layers))
            counts[n_layers] = len(trips)
    assert counts[3] == counts[24], counts  # one read of all the hit's payloads, not one per layer


def test_a_puts_layer_sizes_are_its_payloads_lengths_as_another_process_reads_them(tmp_path):
    """The stored lengths a put records from the payloads it made agree with those worked out from the record
    another cache parses from the shared tier, and with the bytes each tier counts."""
    import torch

    layers = [{"w": torch.randn(3, 4), "n": torch.tensor(7)}, {"b": torch.randn(5).to(torch.bfloat16),
                                                               "i": np.arange(6, dtype=np.int64).reshape(2, 3)}]
    expected = [sum(len(encode(t)[1]) for t in layer.values()) for layer in layers]
    with TensorCache(memory="1MB", disk=tmp_path / "c.lmdb", disk_capacity="4MB") as cache:
        stored = cache.put("m", [1, 2], layers)
        assert stored.layer_bytes == expected
        assert cache.stats()["tiers"]["memory"]["used_bytes"] == sum(expected)
        with TensorCache(memory=0, disk=tmp_path / "c.lmdb", disk_capacity="4MB") as other:
            hit = other.get("m")
            assert hit is not None and hit.layer_bytes == expected and hit.tiers == ["lmdb", "lmdb"]
            assert other.stats()["tiers"]["lmdb"]["used_bytes"] == sum(expected)
