import numpy as np
import pytest
import torch
from torch import nn

from tensorcache import LayerMap, LayerSpec, TensorCache, TransferError
from tensorcache.payload import encode
from tensorcache.transfer import copy_into, copy_layers


def net(hidden: int = 3) -> nn.Module:
    return nn.Sequential(nn.Linear(4, hidden), nn.BatchNorm1d(hidden), nn.Linear(hidden, 2))


LMAP = LayerMap((LayerSpec("fc0", ("0.weight", "0.bias"), (0,)),
                 LayerSpec("bn", ("1.weight", "1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked"), (0, 1)),
                 LayerSpec("fc1", ("2.weight", "2.bias"), (0, 1, 2))))


def test_warm_start_copies_the_donor_tensors_exactly():
    torch.manual_seed(0)
    donor, child = net(), net()
    cache = TensorCache(memory="1MB")
    cache.put("d", [3, 1, 2], donor.state_dict(), layer_map=LMAP)
    report = cache.warm_start(child, [3, 1, 0], layer_map=LMAP)
    assert report.layers == 2 and report.donor == "d" and report.tier == "memory"
    for name in ("0.weight", "0.bias", "1.running_var"):
        assert torch.equal(child.state_dict()[name], donor.state_dict()[name])
    assert not torch.equal(child[2].weight, donor[2].weight)  # last layer depends on the mutated position


def test_mismatch_changes_nothing_and_names_the_reason():
    cache = TensorCache(memory="1MB")
    cache.put("d", [3, 1, 2], net(3).state_dict(), layer_map=LMAP)
    hit = cache.lookup([3, 1, 2], layer_map=LMAP)
    other = net(5)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(TransferError, match=r"0\.weight: shape \(3, 4\) does not match the module's \(5, 4\)"):
        hit.apply(other, strict=True)
    report = hit.apply(other)  # not strict: the misfit and every layer after it are left out and named
    assert report.layers == 0 and report.skipped[0].startswith("0.weight: shape (3, 4)")
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())


def test_unknown_names_and_dtypes_are_rejected_before_copying():
    m = net()
    before = m[0].weight.clone()
    good = (np.ones((3, 4), np.float32), "float32")
    with pytest.raises(TransferError, match="no such parameter"):
        copy_into(m, {"0.weight": good, "nope": good})
    with pytest.raises(TransferError, match="dtype int64 does not match the module's float32"):
        copy_into(m, {"0.weight": good, "0.bias": (np.ones(3, np.int64), "int64")})  # integers are never cast
    assert torch.equal(m[0].weight, before)


def test_warm_start_skips_misfit_layers_and_stops_a_prefix_run_there():
    cache = TensorCache(memory="1MB")
    cache.put("d", [3, 1, 2], net(3).state_dict(), layer_map=LMAP)
    child = net(5)  # fc0 misfits: a prefix run stops at once
    report = cache.warm_start(child, [3, 1, 2], layer_map=LMAP)
    assert report.layers == 0 and report.skipped and "0.weight" in report.skipped[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_warm_start_goes_through_staging():
    donor = net()
    child = net().cuda()
    cache = TensorCache(memory="1MB")
    cache.put("d", [3, 1, 2], donor.state_dict(), layer_map=LMAP)
    report = cache.warm_start(child, [3, 1, 2], layer_map=LMAP)
    assert report.layers == 3
    assert torch.equal(child[2].weight.cpu(), donor[2].weight)


def test_device_tier_serves_views_of_its_own_memory():
    torch.manual_seed(0)
    donor, child = net(), net()
    cache = TensorCache(memory=0, device_memory="1MB", device="cpu")
    cache.put("d", [3, 1, 2], donor.state_dict(), layer_map=LMAP)
    hit = cache.lookup([3, 1, 2], layer_map=LMAP)
    assert hit.slowest_tier == "device" and isinstance(hit.layers[0]["0.weight"], torch.Tensor)
    again = cache.lookup([3, 1, 2], layer_map=LMAP)
    kept = again.served[0].arrays["0.weight"]
    assert kept.data_ptr() == hit.served[0].arrays["0.weight"].data_ptr()  # no copy per lookup
    assert hit.layers[0]["0.weight"].data_ptr() != kept.data_ptr()  # what a caller is handed is its own
    report = cache.warm_start(child, [3, 1, 2], layer_map=LMAP)
    assert report.layers == 3 and report.tier == "device"
    assert all(torch.equal(child.state_dict()[k], v) for k, v in donor.state_dict().items())


def test_device_tier_demotes_to_memory_and_a_hit_promotes_back():
    nets = [net() for _ in range(3)]
    one_model = sum(t.nbytes + 100 for t in nets[0].state_dict().values())  # + payload headers
    cache = TensorCache(memory="1MB", device_memory=one_model, device="cpu", policy="fifo")
    for m, n in enumerate(nets):
        cache.put(f"m{m}", [m, 0, 0], n.state_dict(), layer_map=LMAP)
    assert cache.stats()["evictions"].get("device:capacity", 0) > 0
    child = net()
    assert cache.warm_start(child, [0, 0, 0], layer_map=LMAP).tier == "memory"
    assert torch.equal(child[2].weight, nets[0][2].weight)
    assert cache.warm_start(child, [0, 0, 0], layer_map=LMAP).tier == "device"  # promoted on the first hit
    assert cache.stats()["promotions"] >= 1


def test_verify_memory_catches_a_corrupted_device_copy(caplog):
    cache = TensorCache(memory=0, device_memory="1MB", device="cpu", verify_memory=True)
    cache.put("d", [1], [{"w": np.arange(64, dtype=np.float32)}])
    view, _ = cache.tiers[0].view(encode(np.arange(64, dtype=np.float32))[0])
    view[0] += 1  # a stray write into the device copy
    assert cache.lookup([1]) is None and cache.stats()["corrupt"] == 1 and "digest mismatch" in caplog.text


def test_module_changes_after_a_warm_start_are_seen_by_the_next():
    torch.manual_seed(0)
    donor, child = net(), net()
    cache = TensorCache(memory="1MB")
    cache.put("d", [3, 1, 2], donor.state_dict(), layer_map=LMAP)
    assert cache.warm_start(child, [3, 1, 2], layer_map=LMAP).layers == 3
    child[0].weight = nn.Parameter(torch.zeros(3, 4))  # a new object under the same name
    child[1] = nn.BatchNorm1d(3)  # a new submodule on the way to five names
    assert cache.warm_start(child, [3, 1, 2], layer_map=LMAP).layers == 3
    assert torch.equal(child[0].weight, donor[0].weight) and torch.equal(child[1].running_var, donor[1].running_var)
    child[2].weight.data = torch.zeros(2, 5)  # same object, new shape
    report = cache.warm_start(child, [3, 1, 2], layer_map=LMAP)
    assert report.layers == 2 and "2.weight: shape (2, 3) does not match the module's (2, 5)" in report.skipped[0]


def test_a_name_registered_after_a_warm_start_is_found():
    lmap = LayerMap((LayerSpec("fc0", ("0.weight", "0.bias"), (0,)), LayerSpec("extra", ("extra",), (0, 1))),
                    "compatible")
    donor, child = net(), net()
    donor.register_buffer("extra", torch.arange(4.0))
    cache = TensorCache(memory="1MB")
    with pytest.warns(UserWarning, match="leaves out"):
        cache.put("d", [1, 1], donor.state_dict(), layer_map=lmap)
    report = cache.warm_start(child, [1, 1], layer_map=lmap)
    assert report.layers == 1 and "extra: no such parameter" in report.skipped[0]
    child.register_buffer("extra", torch.zeros(4))
    assert cache.warm_start(child, [1, 1], layer_map=lmap).layers == 2 and torch.equal(child.extra, donor.extra)


def test_staged_copy_packs_every_dtype_at_its_place():
    """The CUDA path's packing (one buffer, one region per dtype, views split off again), run on the CPU."""
    from tensorcache.transfer import Layer, copy_layers

    m = nn.Module()
    shapes = {"a": ((3, 5), torch.float32), "b": ((7,), torch.bfloat16), "c": ((), torch.int64),
              "d": ((2, 3), torch.bool), "e": ((3,), torch.float32), "f": ((0, 4), torch.float32)}
    for name, (shape, dtype) in shapes.items():
        m.register_buffer(name, torch.zeros(shape, dtype=dtype))
    src = {n: (torch.randn(s) * 10).to(d) for n, (s, d) in shapes.items()}
    layers = [Layer({n: src[n] for n in names}, {n: str(src[n].dtype).removeprefix("torch.") for n in names})
              for names in (("a", "b", "c"), ("d", "e", "f"))]
    report, copied = copy_layers(m, layers, staged=True)
    assert copied == [0, 1] and report.nbytes == sum(t.numel() * t.element_size() for t in src.values())
    assert all(torch.equal(getattr(m, n), src[n]) for n in shapes)


@pytest.mark.parametrize("staged", [False, True])
def test_decoded_payloads_of_mixed_dtypes_land_in_their_own_tensors(staged):
    """Views of read payloads (numpy, bfloat16 as uint16) are grouped by dtype, empty ones last, and each
    lands in the module tensor of its own name, whatever order the dtypes come in."""
    from tensorcache.payload import decode, encode
    from tensorcache.transfer import Layer, copy_layers

    m = nn.Module()
    shapes = {"z": ((4,), torch.float32), "y": ((0, 2), torch.float32), "x": ((3,), torch.bfloat16),
              "w": ((2, 2), torch.int64), "v": ((5,), torch.float32), "u": ((3,), torch.bool), "t": ((), torch.bfloat16)}
    for name, (shape, dtype) in shapes.items():
        m.register_buffer(name, torch.zeros(shape, dtype=dtype))
    src = {n: (torch.randn(s) * 10).to(d) for n, (s, d) in shapes.items()}
    decoded = {n: decode(*encode(t)[:2]) for n, t in src.items()}
    layer = Layer({n: a for n, (a, _) in decoded.items()}, {n: d for n, (_, d) in decoded.items()})
    assert layer.views().names == ["x", "t", "u", "z", "v", "w", "y"]  # by dtype name, in order met; empty last
    report, copied = copy_layers(m, [layer], staged=staged)
    assert copied == [0] and all(torch.equal(getattr(m, n), src[n]) for n in shapes)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_device_tier_warm_start_stays_on_the_gpu():
    donor = net()
    child = net().cuda()
    cache = TensorCache(memory=0, device_memory="1MB", device="cuda")
    cache.put("d", [3, 1, 2], donor.state_dict(), layer_map=LMAP)
    report = cache.warm_start(child, [3, 1, 2], layer_map=LMAP)
    assert report.layers == 3 and report.tier == "device"
    assert all(torch.equal(child.state_dict()[k].cpu(), v) for k, v in donor.state_dict().items())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("staged", [False, True])
def test_a_half_precision_donor_is_cast_into_a_float32_child_as_load_state_dict_does(dtype, staged):
    torch.manual_seed(0)
    donor = net().to(dtype)
    cache = TensorCache(memory="1MB")
    cache.put("d", [3, 1, 2], donor.state_dict(), layer_map=LMAP)
    child, expected = net(), net()
    expected.load_state_dict(donor.state_dict())  # torch's own cast
    report, _ = copy_layers(child, cache.lookup([3, 1, 2], layer_map=LMAP).served, staged=staged)
    assert report.layers == 3 and not report.skipped
    assert f"0.weight: {str(dtype)[6:]} -> float32" in report.casts
    assert len(report.casts) == 8   # every float tensor, not the int64 num_batches_tracked
    assert all(torch.equal(a, b) and a.dtype == b.dtype
               for a, b in zip(child.state_dict().values(), expected.state_dict().values()))


def test_a_cast_can_be_refused():
    donor = net().to(torch.bfloat16)
    cache = TensorCache(memory="1MB")
    cache.put("d", [3, 1, 2], donor.state_dict(), layer_map=LMAP)
    child = net()
    before = child[0].weight.clone()
    report = cache.warm_start(child, [3, 1, 2], layer_map=LMAP, cast=False)
    assert report.layers == 0 and not report.casts
    assert "0.weight: dtype bfloat16 does not match the module's float32 (cast=False)" in report.skipped
    assert torch.equal(child[0].weight, before)
    with pytest.raises(TransferError, match="cast=False"):
        cache.lookup([3, 1, 2], layer_map=LMAP).apply(child, cast=False, strict=True)
    assert cache.warm_start(child, [3, 1, 2], layer_map=LMAP).casts  # on by default


def test_a_meta_child_is_refused_not_reported_as_copied():
    cache = TensorCache(memory="1MB")
    cache.put("d", [3, 1, 2], net().state_dict(), layer_map=LMAP)
    with torch.device("meta"):
        child = net()
    report = cache.warm_start(child, [3, 1, 2], layer_map=LMAP)
    assert report.layers == 0 and report.nbytes == 0 and "meta device" in report.skipped[0]
    with pytest.raises(TransferError, match=r"0\.weight: the module's tensor is on the meta device.*to_empty"):
        cache.lookup([3, 1, 2], layer_map=LMAP).apply(child, strict=True)
    child.to_empty(device="cpu")   # materialised: now it takes the donor's tensors
    assert cache.warm_start(child, [3, 1, 2], layer_map=LMAP).layers == 3


def test_putting_a_meta_donor_is_a_clear_error_naming_it():
    with torch.device("meta"):
        donor = net()
    cache = TensorCache(memory="1MB")
    with pytest.raises(ValueError, match=r"meta device have no values to cache: \['0\.weight'"):
        cache.put("d", [3, 1, 2], donor.state_dict(), layer_map=LMAP)
    assert cache.stats()["models"] == 0


@pytest.mark.parametrize("change", ["shape", "dtype"])
def test_a_warm_start_again_sees_a_target_changed_in_place_since_the_last_one(change):
    cache = TensorCache(memory="1MB")
    donor, child = net(), net()
    cache.put("d", [3, 1, 2], donor.state_dict(), layer_map=LMAP)
    for _ in range(2):  # the second warm start of this module from these layers reuses what the first matched
        assert cache.warm_start(child, [3, 1, 2], layer_map=LMAP, cast=False).layers == 3
    with torch.no_grad():  # the same Parameter object, other data: its links to the module are unchanged
        if change == "shape":
            child[2].weight.data = torch.zeros(1, 3)  # (1, 3): the donor's (2, 3) would broadcast into (2, 3) only
        else:
            child[2].weight.data = torch.zeros(2, 3, dtype=torch.float64)
    before = child[2].weight.detach().clone()
    report = cache.warm_start(child, [3, 1, 2], layer_map=LMAP, cast=False)
    assert report.layers == 2 and "2.weight" in report.skipped[0] and torch.equal(child[2].weight, before)


def test_hit_apply_is_warm_start_s_copy_and_is_timed_alike():
    cache = TensorCache(memory="1MB")
    cache.put("d", [3, 1, 2], net().state_dict(), layer_map=LMAP)
    child, again = net(), net()
    by_hit = cache.lookup([3, 1, 2], layer_map=LMAP).apply(child)
    applied = cache.stats()["seconds"]["apply"]
    assert applied > 0 and by_hit.seconds <= applied and by_hit.donor == "d" and by_hit.layers == 3
    by_warm_start = cache.warm_start(again, [3, 1, 2], layer_map=LMAP)
    assert cache.stats()["seconds"]["apply"] > applied
    assert (by_warm_start.layers, by_warm_start.nbytes, by_warm_start.tier) == (by_hit.layers, by_hit.nbytes, by_hit.tier)
    assert all(torch.equal(a, b) for a, b in zip(child.state_dict().values(), again.state_dict().values()))
