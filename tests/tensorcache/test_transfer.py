import numpy as np
import pytest
import torch
from torch import nn

from tensorcache import LayerMap, LayerSpec, TensorCache, TransferError
from tensorcache.transfer import copy_into


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
        hit.apply(other)
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())


def test_unknown_names_and_dtypes_are_rejected_before_copying():
    m = net()
    before = m[0].weight.clone()
    good = (np.ones((3, 4), np.float32), "float32")
    with pytest.raises(TransferError, match="no such parameter"):
        copy_into(m, {"0.weight": good, "nope": good})
    with pytest.raises(TransferError, match="dtype float64"):
        copy_into(m, {"0.weight": good, "0.bias": (np.ones(3), "float64")})
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
