import math

import pytest
import torch
import torch.nn.functional as F

from autolr_monai.networks import DualPathResNet3D, paper_config
from tests.conftest import TINY_NETWORK

PAPER_PARAMETERS = 649_251


def _randomise(net: torch.nn.Module) -> None:
    """Non-zero random values everywhere (the zero-initialised BN weights would hide residual branches)."""
    torch.manual_seed(0)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.2)


def test_parameter_count_matches_paper_within_one_percent():
    net = DualPathResNet3D(in_channels=1, out_channels=21)
    count = sum(p.numel() for p in net.parameters())
    assert abs(count - PAPER_PARAMETERS) / PAPER_PARAMETERS < 0.01, count


def test_paper_depth_and_path_lengths():
    net = DualPathResNet3D()
    assert net.depth == 21
    assert len(net.fc_layers) == 2
    assert net.low.weight_layers + 2 == 21
    assert net.low.weight_layers - 2 <= net.high.weight_layers < net.low.weight_layers  # deep, slightly shorter
    kinds = {type(b).__name__ + getattr(b, "kind", "") for b in [*net.high, *net.low]}
    assert {"ResidualBlockRA", "ResidualBlockRB"} <= kinds


@pytest.mark.parametrize("phase", [0, 1, 2, 3])
def test_receptive_field_is_123_measured_with_autograd(phase):
    net = DualPathResNet3D().eval()
    _randomise(net)
    assert net.receptive_field == 123
    x = torch.zeros(1, 1, *(2 * net.input_margin + 4,) * 3, requires_grad=True)
    y = net(x)
    (grad,) = torch.autograd.grad(y[0, 5, phase, phase, phase], x)
    nonzero = grad[0, 0].abs().gt(0).nonzero()
    extents = (nonzero.max(0).values - nonzero.min(0).values + 1).tolist()
    assert extents == [123, 123, 123]


def test_glorot_initialisation_and_identity_blocks():
    net = DualPathResNet3D()
    conv = net.low[1].body[2]
    fan_in, fan_out = conv.in_channels * 27, conv.out_channels * 27
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    assert conv.weight.abs().max() <= bound
    assert conv.weight.std() > bound / 3  # uniform(-b, b) has std b / sqrt(3)
    assert all(float(b.last_norm.weight.detach().abs().sum()) == 0.0 for b in [*list(net.high)[1:], *list(net.low)[1:]])


def test_weight_decay_groups_exclude_classifier_and_norms():
    net = DualPathResNet3D(**TINY_NETWORK)
    decayed, rest = net.parameter_groups(1e-4)
    assert decayed["weight_decay"] == 1e-4 and rest["weight_decay"] == 0.0
    ids = {id(p) for p in decayed["params"]}
    assert id(net.classifier.weight) not in ids
    assert id(net.fc_layers[0].weight) in ids
    assert all(id(m.weight) not in ids for m in net.modules() if isinstance(m, torch.nn.BatchNorm3d))
    assert len(decayed["params"]) + len(rest["params"]) == len(list(net.parameters()))


@pytest.mark.parametrize("out", [1, 5, 8, 13])
def test_input_sizes_for_any_output_size(out):
    net = DualPathResNet3D(**TINY_NETWORK).eval()
    sizes = net.input_sizes(out)
    x = torch.randn(1, 1, *sizes["full"])
    y = net(x)
    assert tuple(y.shape[2:]) == (out,) * 3 and y.shape[1] == 21
    xh, xl = net.split_input(x)
    assert tuple(xh.shape[2:]) == sizes["high"] and tuple(xl.shape[2:]) == sizes["low"]
    assert torch.allclose(net(xh, xl), y)
    assert net.output_size(sizes["full"]) == (out,) * 3


def test_mismatched_inputs_give_clear_error():
    net = DualPathResNet3D(**TINY_NETWORK)
    sizes = net.input_sizes(8)
    with pytest.raises(ValueError, match="low-resolution input"):
        net(torch.zeros(1, 1, *sizes["high"]), torch.zeros(1, 1, *[s + 1 for s in sizes["low"]]))
    with pytest.raises(ValueError, match="smaller than the receptive field"):
        net(torch.zeros(1, 1, 10, 10, 10))


def test_fully_convolutional_translation_consistency():
    """A larger input gives the same values on the shared output region (aligned to the low-res grid)."""
    net = DualPathResNet3D(**TINY_NETWORK).eval()
    _randomise(net)
    m, f = net.input_margin, net.downsample
    big = torch.randn(1, 1, *(2 * m + 16,) * 3)
    with torch.no_grad():
        whole = net(big)
        part = net(big[..., f:, f:, f:][..., : 2 * m + 8, : 2 * m + 8, : 2 * m + 8])
    assert torch.allclose(whole[..., f : f + 8, f : f + 8, f : f + 8], part, atol=1e-5)


def test_paper_config_is_a_copy():
    a = paper_config()
    a["high_blocks"].append(["RA", 99])
    assert paper_config()["high_blocks"][-1] != ["RA", 99]


def test_training_step_reduces_loss():
    net = DualPathResNet3D(**TINY_NETWORK, out_channels=3)
    sizes = net.input_sizes(4)
    torch.manual_seed(0)
    x = torch.randn(8, 1, *sizes["full"])
    target = (x[:, 0, net.input_margin : -net.input_margin, net.input_margin : -net.input_margin,
                net.input_margin : -net.input_margin] > 0).long()  # fmt: skip
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.8, nesterov=True)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = F.cross_entropy(net(x), target)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.7 * losses[0]


def test_documented_layer_table_matches_the_network():
    from tests.conftest import REPO

    docs = (REPO / "bundle" / "docs" / "README.md").read_text()
    net = DualPathResNet3D()
    for row in net.layer_table(16):
        assert row in docs, row
    assert f"{sum(p.numel() for p in net.parameters()):,} parameters" in docs


# torch >= 2.10 deprecates TorchScript, but MONAI's ckpt_export still scripts by default
jit_deprecation = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")


@jit_deprecation
@pytest.mark.parametrize(
    "network, out",
    [(TINY_NETWORK, 8), (TINY_NETWORK, (5, 6, 7)), ({}, 4), ({}, (5, 6, 7))],
    ids=["tiny-cube", "tiny-non-cubic", "paper-cube", "paper-non-cubic"],
)
def test_torchscript_matches_eager(network, out):
    net = DualPathResNet3D(**network).eval()
    _randomise(net)
    scripted = torch.jit.script(net)
    x = torch.randn(1, 1, *net.input_sizes(out)["full"])
    xh, xl = net.split_input(x)
    with torch.no_grad():
        expected = net(x)
        assert tuple(expected.shape[2:]) == ((out,) * 3 if isinstance(out, int) else out)
        for _ in range(3):  # the profiling executor optimises the graph after the first runs
            assert torch.allclose(scripted(x), expected, atol=1e-5)
            assert torch.allclose(scripted(xh, xl), expected, atol=1e-5)


@jit_deprecation
def test_saved_torchscript_model_matches_eager(tmp_path):
    net = DualPathResNet3D(**TINY_NETWORK).eval()
    _randomise(net)
    torch.jit.save(torch.jit.script(net), tmp_path / "model.ts")
    loaded = torch.jit.load(tmp_path / "model.ts")
    x = torch.randn(2, 1, *net.input_sizes((5, 6, 7))["full"])
    with torch.no_grad():
        assert torch.allclose(loaded(x), net(x), atol=1e-5)
        assert torch.allclose(loaded(*net.split_input(x)), net(x), atol=1e-5)


@jit_deprecation
def test_torchscript_model_rejects_mismatched_inputs():
    net = DualPathResNet3D(**TINY_NETWORK)
    scripted = torch.jit.script(net)
    sizes = net.input_sizes(8)
    with pytest.raises(torch.jit.Error, match="low-resolution input"):
        scripted(torch.zeros(1, 1, *sizes["high"]), torch.zeros(1, 1, *[s + 1 for s in sizes["low"]]))
    with pytest.raises(torch.jit.Error, match="smaller than the receptive field"):
        scripted(torch.zeros(1, 1, 10, 10, 10))
