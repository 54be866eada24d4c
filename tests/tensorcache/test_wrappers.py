"""Models wrapped by nn.DataParallel (``module.``) and torch.compile (``_orig_mod.``) are put, looked up
and warm-started like the plain ones."""
import time

import pytest
import torch
import torch.distributed as dist
from torch import nn

from tensorcache import LayerMap, LayerSpec, TensorCache
from tensorcache.wrappers import unwrapped, wrapper_prefix

LMAP = LayerMap((LayerSpec("fc0", ("0.weight", "0.bias"), (0,)), LayerSpec("fc1", ("1.weight", "1.bias"), (0, 1))))
PREFIXED = LayerMap(tuple(LayerSpec(s.name, tuple(f"module.{p}" for p in s.params), s.depends_on) for s in LMAP.layers))


def net(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))


def compiled(model: nn.Module) -> nn.Module:
    """torch.compile's wrapper: it compiles on the first call only, so building it is cheap."""
    t0 = time.perf_counter()
    wrapped = torch.compile(model)
    assert time.perf_counter() - t0 < 30 and next(iter(wrapped.state_dict())).startswith("_orig_mod.")
    return wrapped


WRAPS = {"DataParallel": nn.DataParallel, "DDP": nn.parallel.DistributedDataParallel, "compile": compiled,
         "compiled DataParallel": lambda m: compiled(nn.DataParallel(m))}


@pytest.fixture(scope="module", autouse=True)
def process_group(tmp_path_factory):
    """A one-process gloo group on the CPU, which DistributedDataParallel needs."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path_factory.mktemp('pg') / 'store'}", rank=0,
                            world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("wrap", WRAPS.values(), ids=WRAPS.keys())
def test_a_wrapped_donor_is_put_and_warm_starts_plain_and_wrapped_children(wrap):
    donor = net(0)
    cache = TensorCache(memory="1MB")
    stored = cache.put("d", (1, 2), wrap(donor).state_dict(), layer_map=LMAP)
    assert stored.written > 0
    assert set(cache.get("d").state_dict()) == {"0.weight", "0.bias", "1.weight", "1.bias"}  # plain names
    for child in (net(1), wrap(net(1))):
        report = cache.warm_start(child, (1, 2), layer_map=LMAP)
        assert report.layers == 2 and not report.skipped
        assert all(torch.equal(a, b) for a, b in zip(child.state_dict().values(), donor.state_dict().values()))


@pytest.mark.parametrize("wrap", WRAPS.values(), ids=WRAPS.keys())
def test_a_plain_donor_warm_starts_a_wrapped_child_through_lookup_and_apply(wrap):
    donor, child = net(0), wrap(net(1))
    cache = TensorCache(memory="1MB")
    cache.put("d", (1, 2), donor.state_dict(), layer_map=LMAP)
    report = cache.lookup((1, 2), layer_map=LMAP).apply(child)
    assert report.layers == 2
    assert torch.equal(unwrapped(child.state_dict())["1.weight"], donor[1].weight)


class Holder(nn.Module):
    """A plain model whose only child is called ``module``: its names look like DataParallel's."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.module = net(seed)


@pytest.mark.parametrize("donor, child", [(net(0), net(1)), (Holder(0), Holder(1))], ids=["plain", "holder"])
def test_a_layer_map_naming_module_prefixed_entries_round_trips(donor, child):
    cache = TensorCache(memory="1MB")
    cache.put("d", (1, 2), donor.state_dict(), layer_map=PREFIXED)
    assert cache.warm_start(child, (1, 2), layer_map=PREFIXED).layers == 2
    assert all(torch.equal(a, b) for a, b in zip(child.state_dict().values(), donor.state_dict().values()))


def test_only_a_prefix_every_name_shares_is_a_wrapper():
    assert wrapper_prefix(["_orig_mod.module.a", "_orig_mod.module.b.c"]) == "_orig_mod.module."
    assert wrapper_prefix(["module.a", "head.b"]) == ""   # a submodule called "module" beside others
    assert wrapper_prefix(["module."]) == "" and wrapper_prefix([]) == ""
