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


@torch.no_grad()
def test_metatensor_input_gives_a_metatensor_with_its_metadata(net):
    """As MONAI's inferers: ``Invertd`` skips (with a mere warning) a prediction that is not a MetaTensor."""
    from monai.data import MetaTensor

    affine = torch.diag(torch.tensor([2.0, 3.0, 4.0, 1.0], dtype=torch.float64))
    volume = MetaTensor(torch.randn(1, 1, 9, 10, 11), affine=affine, meta={"filename_or_obj": "scan.nii.gz"})
    labels = ExactTiledInferer(tile_size=8, output="labels")(volume, net)
    assert isinstance(labels, MetaTensor) and labels.dtype == torch.uint8
    assert torch.equal(labels.affine, affine) and labels.meta["filename_or_obj"] == "scan.nii.gz"
    assert not isinstance(ExactTiledInferer(tile_size=8)(volume.as_tensor(), net), MetaTensor)


class _PlainValidNet(torch.nn.Module):
    """A valid-convolution network without the two-resolution interface: the generic tiling path."""

    input_margin = 2

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3), torch.nn.ReLU(), torch.nn.Conv3d(4, 3, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@torch.no_grad()
@pytest.mark.parametrize("channels_last", [False, True])
def test_generic_valid_network_and_channels_last(volume, channels_last):
    torch.manual_seed(0)
    plain = _PlainValidNet().eval()
    direct = plain(F.pad(volume, (2,) * 6, mode="replicate"))
    tiled = ExactTiledInferer(tile_size=(8, 5, 7), alignment=1, channels_last=channels_last)(volume, plain)
    assert torch.allclose(tiled, direct, atol=1e-5)


@torch.no_grad()
def test_two_resolution_path_with_channels_last_weights_equals_direct_forward(net, volume):
    direct = net(F.pad(volume, (net.input_margin,) * 6, mode="replicate"))
    fast = DualPathResNet3D(**TINY_NETWORK).eval()
    fast.load_state_dict(net.state_dict())
    fast = fast.to(memory_format=torch.channels_last_3d)
    tiled = ExactTiledInferer(tile_size=8, channels_last=True, low_tile_size=3)(volume, fast)
    assert torch.allclose(tiled, direct, atol=1e-5)


@torch.no_grad()
def test_wrong_margin_tile_size_or_alignment_is_refused(net, volume):
    with pytest.raises(ValueError, match="margin 40 is not its per-side loss of voxels"):
        ExactTiledInferer(tile_size=8, margin=40)(volume, net)
    with pytest.raises(ValueError, match="one or three positive multiples"):
        ExactTiledInferer(tile_size=(8, 8))(volume, net)
    with pytest.raises(ValueError, match="alignment 6 must be a multiple of the network's downsample 4"):
        ExactTiledInferer(tile_size=12, alignment=6)(volume, net)


@torch.no_grad()
def test_low_resolution_path_runs_once_per_volume_not_per_tile(net, volume):
    calls = []
    handle = net.low.register_forward_hook(lambda module, args, out: calls.append(tuple(args[0].shape)))
    try:
        ExactTiledInferer(tile_size=4, low_tile_size=64)(volume, net)
    finally:
        handle.remove()
    assert len(calls) == 1  # 8 x 6 x 5 = 240 tiles of 4^3, one low-resolution pass
