"""layer_map_of: a LayerMap for an ordinary nn.Module, on ResNet-18-like models built from torch.nn."""
import pytest
import torch
from torch import nn

from tensorcache import LayerMap, TensorCache, layer_map_of


class Block(nn.Module):
    """torchvision's BasicBlock: two 3x3 convolutions with batch norm and a projection when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    """ResNet-18's layout (stem, four stages of BasicBlocks, pooled linear head) with chosen widths and depths."""

    def __init__(self, widths=(8, 16, 32, 64), depths=(2, 2, 2, 2), classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        cin = widths[0]
        for i, (width, depth) in enumerate(zip(widths, depths)):
            blocks = [Block(cin if j == 0 else width, width, 2 if i and j == 0 else 1) for j in range(depth)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            cin = width
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return self.fc(x.mean((2, 3)))


def test_every_state_dict_entry_lands_in_one_layer_per_owning_module_in_definition_order():
    model = ResNet()
    lmap = layer_map_of(model)
    assert isinstance(lmap, LayerMap) and lmap.mode == "compatible"
    assert [p for layer in lmap.layers for p in layer.params] == list(model.state_dict())
    owners = [layer.params[0].rpartition(".")[0] for layer in lmap.layers]
    assert owners[:3] == ["conv1", "bn1", "layer1.0.conv1"] and owners[-1] == "fc"
    assert len(lmap) == 1 + 1 + 4 * 2 * 4 + 3 * 2 + 1   # stem conv+bn, 8 blocks of 4, 3 projections, head
    assert layer_map_of(nn.DataParallel(model)).layers == lmap.layers   # wrapper prefixes removed


def test_warm_start_between_resnets_of_other_widths_and_depths_copies_the_layers_that_fit():
    torch.manual_seed(0)
    donor = ResNet(widths=(8, 16, 32, 64), depths=(2, 2, 2, 2))
    donor(torch.randn(2, 3, 32, 32))   # trained running statistics differ from a fresh model's
    child = ResNet(widths=(8, 16, 48, 64), depths=(2, 1, 2, 2))  # wider stage 3, shallower stage 2
    cache = TensorCache(memory="64MB")
    cache.put("resnet18-narrow", (0,), donor.state_dict(), score=0.7, layer_map=layer_map_of(donor))
    before = {k: v.clone() for k, v in child.state_dict().items()}
    report = cache.warm_start(child, (1,), layer_map=layer_map_of(child))
    assert report.donor == "resnet18-narrow" and not report.skipped
    theirs, mine = donor.state_dict(), child.state_dict()
    fitting = [layer for layer in layer_map_of(child).layers   # a module whose every tensor has the donor's shape
               if all(p in theirs and theirs[p].shape == mine[p].shape for p in layer.params)]
    fits = [p for layer in fitting for p in layer.params]
    copied = [k for k in mine if not torch.equal(mine[k], before[k])]
    assert set(copied) <= set(fits) and all(torch.equal(mine[k], theirs[k]) for k in fits)
    assert {"conv1.weight", "layer1.1.conv2.weight", "layer2.0.conv1.weight", "layer4.1.bn2.running_var",
            "fc.weight"} <= set(fits)
    assert "layer3.0.conv1.weight" not in fits and "layer3.0.bn1.num_batches_tracked" not in fits
    assert "layer2.1.conv1.weight" not in mine and report.layers == len(fitting) == 25
    assert torch.isfinite(child(torch.randn(1, 3, 32, 32))).all()


@pytest.mark.parametrize("mode", ["prefix", "compatible"])
def test_a_module_map_in_either_mode_round_trips_a_model(mode):
    donor, child = ResNet(depths=(1, 1, 1, 1)), ResNet(depths=(1, 1, 1, 1))
    cache = TensorCache(memory="64MB")
    cache.put("d", (0,), donor.state_dict(), layer_map=layer_map_of(donor, mode))
    report = cache.warm_start(child, (0,), layer_map=layer_map_of(child, mode))
    assert report.layers == len(layer_map_of(child)) and all(
        torch.equal(a, b) for a, b in zip(child.state_dict().values(), donor.state_dict().values()))
