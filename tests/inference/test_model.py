"""Loading trained weights for inference: the checkpoint formats training writes, GPU checkpoints on a CPU, errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from autolr_monai.inference import load_model
from autolr_monai.networks import DualPathResNet3D
from tests.conftest import TINY_NETWORK


def _trained() -> DualPathResNet3D:
    torch.manual_seed(0)
    net = DualPathResNet3D(**TINY_NETWORK)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.2)
    return net


@pytest.mark.parametrize("wrap", [lambda s: s, lambda s: {"model": s, "optimizer": {"state": {}, "param_groups": []}}],
                         ids=["model.pt", "single-run checkpoint"])  # fmt: skip
def test_loads_the_weights_training_writes(tmp_path, wrap):
    trained = _trained()
    torch.save(wrap(trained.state_dict()), tmp_path / "ckpt.pt")
    net = load_model(DualPathResNet3D(**TINY_NETWORK), str(tmp_path / "ckpt.pt"))
    assert not net.training
    x = torch.randn(1, 1, 70, 70, 70)
    assert torch.equal(net(x), trained.eval()(x))


def test_a_checkpoint_saved_on_a_gpu_loads_on_the_cpu(tmp_path):
    """The file is written with its storages tagged 'cuda:0', as torch.save does on a GPU."""
    path = tmp_path / "gpu.pt"
    script = (
        "import torch, torch.serialization as s\n"
        "s.register_package(-1, lambda obj: 'cuda:0' if obj.device.type == 'cpu' else None, lambda obj, loc: None)\n"
        f"from autolr_monai.networks import DualPathResNet3D\n"
        f"torch.save(DualPathResNet3D(**{TINY_NETWORK!r}).state_dict(), {str(path)!r})\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):  # the file really claims a GPU
            torch.load(path, weights_only=True)
    net = load_model(DualPathResNet3D(**TINY_NETWORK), str(path), device="cpu")
    assert all(p.device.type == "cpu" for p in net.parameters())


def test_errors_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="--checkpoint"):
        load_model(DualPathResNet3D(**TINY_NETWORK), str(tmp_path / "none.pt"))
    torch.save(_trained().state_dict(), tmp_path / "tiny.pt")
    with pytest.raises(ValueError, match=r"does not fit the configured network_def .*demo.json") as raised:
        load_model(DualPathResNet3D(), str(tmp_path / "tiny.pt"))
    assert "tiny.pt" in str(raised.value) and "other shape" in str(raised.value)
    torch.save({"autolr": {"members": []}}, tmp_path / "population.pt")
    with pytest.raises(ValueError, match="population checkpoint.*model.pt"):
        load_model(DualPathResNet3D(**TINY_NETWORK), str(tmp_path / "population.pt"))
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pt is not a readable weights-only PyTorch checkpoint"):
        load_model(DualPathResNet3D(**TINY_NETWORK), str(tmp_path / "garbage.pt"))


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_weights_that_are_not_finite_are_refused_naming_the_tensor(tmp_path, value):
    state = _trained().state_dict()
    state["head.3.weight"].view(-1)[:2] = value
    state["classifier.bias"][0] = value
    torch.save(state, tmp_path / "diverged.pt")
    with pytest.raises(ValueError, match=rf"^{tmp_path / 'diverged.pt'}: weights head.3.weight hold 2 NaN or "
                                         r"infinite values \(of 128\)"):  # fmt: skip
        load_model(DualPathResNet3D(**TINY_NETWORK), str(tmp_path / "diverged.pt"))
