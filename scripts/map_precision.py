"""How much of a last-bit difference in the weights reaches isample's stored error maps, float16 versus float32.

Another CPU or GPU computes the same network with other rounding. This script imitates that: it computes a
validation case's error map ``E = 1 - p(true class)`` with a trained model's weights and again with every weight
changed in its last bit (relative 2^-23, random sign), and counts the voxels whose stored value differs when the
map is kept in float32 and in float16 (the bundle's storage).

    python scripts/map_precision.py --checkpoint bundle/runs/demo/model.pt
"""

from __future__ import annotations

import fire
import numpy as np
import torch
from monai.bundle import ConfigParser

from autolr_monai.paths import bundle_root


@torch.no_grad()
def _error_map(network: torch.nn.Module, inferer, image: torch.Tensor, label: torch.Tensor) -> np.ndarray:
    error = torch.empty(label.shape, dtype=torch.float32)
    for region, probabilities in inferer.iter_tiles(image[None], network):
        error[region] = 1.0 - probabilities[0].float().gather(0, label[region][None].long())[0]
    return error.clamp_(0.0, 1.0).numpy()


def run(checkpoint: str = "bundle/runs/demo/model.pt", overlays: list[str] = ("bundle/configs/demo.json",),
        seed: int = 0) -> None:  # fmt: skip
    """Print the share of voxels whose stored error map changes with a last-bit change of every weight."""
    parser = ConfigParser()
    parser.read_config([f"{bundle_root()}/configs/train.json", *overlays])
    network = parser.get_parsed_content("network_def").eval()
    network.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    inferer = parser.get_parsed_content("train#isample_handlers#0#inferer")
    item = parser.get_parsed_content("validate#dataset")[0]
    image, label = torch.as_tensor(item["image"]), torch.as_tensor(item["label"])[0]
    reference = _error_map(network, inferer, image, label)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in network.parameters():
            sign = torch.randint(0, 2, p.shape, generator=generator).float() * 2 - 1
            p.mul_(1 + sign * 2.0**-23)
    perturbed = _error_map(network, inferer, image, label)
    result = {
        "voxels": int(reference.size),
        "float32 differs": float(np.mean(reference != perturbed)),
        "float16 differs": float(np.mean(reference.astype(np.float16) != perturbed.astype(np.float16))),
        "largest difference": float(np.abs(reference - perturbed).max()),
    }
    for key, value in result.items():
        print(f"{key}: {value:.3g}" if isinstance(value, float) else f"{key}: {value}")


if __name__ == "__main__":
    fire.Fire(run)
