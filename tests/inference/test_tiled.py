import pytest
import torch
import torch.nn.functional as F

from autolr_monai.inference import ExactTiledInferer
from autolr_monai.networks import DualPathResNet3D
from tests.conftest import TINY_NETWORK


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    net = DualPathResNet3D(**TINY_NETWORK).eval()
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.2)
    return net


@pytest.fixture(scope="module")
def volume():
    torch.manual_seed(1)
    return torch.randn(2, 1, 29, 22, 17)


@torch.no_grad()
@pytest.mark.parametrize("tile,per_batch", [(4, 1), (8, 3), (12, 2), (32, 1), ((8, 4, 12), 5)])
def test_tiled_equals_direct_forward(net, volume, tile, per_batch):
    direct = net(F.pad(volume, (net.input_margin,) * 6, mode="replicate"))
    tiled = ExactTiledInferer(tile_size=tile, tiles_per_batch=per_batch)(volume, net)
    assert tiled.shape == direct.shape == (2, 21, 29, 22, 17)
    assert torch.allclose(tiled, direct, atol=1e-5)


@torch.no_grad()
def test_output_modes(net, volume):
    logits = ExactTiledInferer(tile_size=8)(volume, net)
    probs = ExactTiledInferer(tile_size=8, output="probabilities")(volume, net)
    labels = ExactTiledInferer(tile_size=8, output="labels")(volume, net)
    assert torch.allclose(probs, torch.softmax(logits, 1), atol=1e-6)
    assert labels.dtype == torch.uint8 and labels.shape == (2, 1, 29, 22, 17)
    assert torch.equal(labels[:, 0].long(), logits.argmax(1))


def test_misaligned_tile_is_rejected(net, volume):
    with pytest.raises(ValueError, match="multiples of 4"):
        ExactTiledInferer(tile_size=6)(volume, net)
    with pytest.raises(ValueError, match="output must be one of"):
        ExactTiledInferer(output="onehot")
    with pytest.raises(ValueError, match="3D volumes"):
        ExactTiledInferer()(volume[0], net)
