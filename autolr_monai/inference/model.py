"""Loading trained weights for inference, on whatever device this machine has."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn


def _weights(checkpoint: object, path: Path) -> dict[str, torch.Tensor]:
    """The network weights inside a checkpoint: ``model.pt`` is the bare ``state_dict``; a single run's full
    checkpoint keeps it under ``"model"``."""
    if isinstance(checkpoint, dict) and "autolr" in checkpoint:
        raise ValueError(f"{path} is an AutoLR population checkpoint (every run's training state); for inference "
                         "use model.pt in the run folder, the best weights of the population")  # fmt: skip
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("model"), dict):
        checkpoint = checkpoint["model"]
    if not isinstance(checkpoint, dict) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise ValueError(f"{path}: expected network weights (a state_dict of tensors), got {type(checkpoint).__name__}")
    return checkpoint


def _check_finite(state: dict[str, torch.Tensor], path: Path) -> None:
    """Raise ``ValueError`` naming the first tensor with NaN or infinite values: such weights give NaN logits,
    whose argmax is background everywhere, and the run would end with empty label maps and no error."""
    for name, tensor in state.items():
        if tensor.is_floating_point() or tensor.is_complex():
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                raise ValueError(f"{path}: weights {name} hold {bad} NaN or infinite values (of {tensor.numel()}): "
                                 "the training that wrote them diverged; use a checkpoint from before")  # fmt: skip


def load_model(
    network: nn.Module, checkpoint: str, device: torch.device | str = "cpu", channels_last: bool = False
) -> nn.Module:
    """``network`` with the weights of ``checkpoint``, on ``device``, in eval mode; with ``channels_last`` its
    weights in ``torch.channels_last_3d`` layout, which oneDNN and cuDNN convolve faster (pair it with the tiled
    inferer's ``channels_last``).

    The file is read with ``weights_only=True`` (no arbitrary unpickling) and mapped to the CPU first, so a
    checkpoint saved on a GPU loads on a CPU-only machine. Written instead of MONAI's ``CheckpointLoader`` handler
    to fail before any scan is read, naming the file and what does not fit: a missing file, a population
    checkpoint, weights of another network configuration (a model trained with ``demo.json`` needs the same
    overlay for inference), or weights that are not finite.
    """
    path = Path(str(checkpoint)).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist: pass --checkpoint with a model.pt written by "
                                "training (runs/<run_name>/model.pt)")  # fmt: skip
    try:
        state = _weights(torch.load(path, map_location="cpu", weights_only=True), path)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        raise ValueError(f"{path} is not a readable weights-only PyTorch checkpoint: {e}") from None
    own = network.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    reshaped = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or reshaped:
        groups = (("missing", missing), ("unexpected", unexpected), ("other shape", reshaped))
        details = "; ".join(f"{name}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}" for name, keys in groups
                            if keys)  # fmt: skip
        raise ValueError(f"checkpoint {path} does not fit the configured network_def ({details}): load it with the "
                         "config overlays it was trained with, e.g. bundle/configs/demo.json for the demo")  # fmt: skip
    _check_finite(state, path)
    network.load_state_dict(state)
    network = network.to(device).eval()
    return network.to(memory_format=torch.channels_last_3d) if channels_last else network
