"""Whole-volume inference time and peak memory on this machine: the paper-size dual-path network with exact tiling
against MONAI's sliding-window inference over the model zoo's spleen_ct_segmentation UNet.

    python scripts/benchmark_inference.py run                               # 512 x 512 x 300, all setups
    python scripts/benchmark_inference.py run --shape "[128,128,96]" --setups "['dual_path_160','unet']"

Each setup runs in a fresh process (so peak memory is its own): the network is built with its default
initialisation (timing does not depend on the weights), a random volume of ``shape`` voxels (already on the
network's grid) is segmented into a label map (argmax over 21 classes) under ``torch.inference_mode`` on the CPU:

- ``dual_path_<T>``: ``DualPathResNet3D()`` (653,413 parameters), ``ExactTiledInferer(tile_size=T)``, labels only;
- ``unet``: MONAI ``UNet(3, 1, 21, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2,
  norm="batch")`` as in spleen_ct_segmentation (21 output classes instead of 2, for this task), then
  ``sliding_window_inference(roi_size=96^3, sw_batch_size=4, overlap=0.5)`` (the spleen bundle's inferer), argmax;
- ``lcc``: MONAI ``KeepLargestConnectedComponent`` for the 20 structures (the optional post-processing) on the
  real TotalSegmentator label map of ``../shared/data/totalseg-example`` mapped to the label table and resized
  (nearest) to ``shape``.

Prints a Markdown table: seconds, peak resident memory of the process, and its resident memory before inference
(libraries, network and input volume loaded).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import fire
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("AUTOLR_SHARED_DATA", REPO.parent / "shared" / "data" / "totalseg-example"))
SETUPS = ("dual_path_96", "dual_path_160", "dual_path_192", "unet", "lcc")
NUM_CLASSES = 21


def _rss_gib() -> float:
    with open("/proc/self/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return kib / 2**20


def _peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _segmenter(setup: str):
    """(callable volume -> labels, parameters) for a network setup."""
    if setup.startswith("dual_path_"):
        from autolr_monai.inference import ExactTiledInferer
        from autolr_monai.networks import DualPathResNet3D

        net = DualPathResNet3D(out_channels=NUM_CLASSES).eval()
        inferer = ExactTiledInferer(tile_size=int(setup.rsplit("_", 1)[1]), output="labels")
        return (lambda x: inferer(x, net)), sum(p.numel() for p in net.parameters())
    if setup == "unet":
        from monai.inferers import sliding_window_inference
        from monai.networks.nets import UNet

        net = UNet(spatial_dims=3, in_channels=1, out_channels=NUM_CLASSES, channels=(16, 32, 64, 128, 256),
                   strides=(2, 2, 2, 2), num_res_units=2, norm="batch").eval()  # fmt: skip

        def segment(x: torch.Tensor) -> torch.Tensor:
            logits = sliding_window_inference(x, roi_size=(96, 96, 96), sw_batch_size=4, predictor=net, overlap=0.5)
            return logits.argmax(1, keepdim=True).to(torch.uint8)

        return segment, sum(p.numel() for p in net.parameters())
    raise ValueError(f"unknown setup {setup!r}; known: {SETUPS}")


def _real_label_map(shape: tuple[int, int, int]) -> torch.Tensor:
    import numpy as np
    from monai.transforms import EnsureChannelFirst, LoadImage, MapLabelValue, Resize

    from autolr_monai.data.totalseg import totalseg_label_mapping

    label = EnsureChannelFirst()(LoadImage(reader="ITKReader", image_only=True)(SHARED / "labels_totalseg.nii.gz"))
    orig, target = totalseg_label_mapping(str(SHARED / "totalseg_label_names.json"))
    label = MapLabelValue(orig_labels=orig, target_labels=target, dtype=np.uint8)(label)
    return Resize(spatial_size=shape, mode="nearest")(label).as_tensor().to(torch.uint8)


def measure(setup: str, shape: tuple[int, int, int] = (512, 512, 300), seed: int = 0) -> None:
    """One setup in this process; prints its figures as one line of JSON."""
    torch.manual_seed(seed)
    shape = tuple(int(s) for s in shape)
    if setup == "lcc":
        from monai.transforms import KeepLargestConnectedComponent

        volume = _real_label_map(shape)
        step = KeepLargestConnectedComponent(applied_labels=list(range(1, NUM_CLASSES)), is_onehot=False)
        segment, parameters = step, 0
    else:
        segment, parameters = _segmenter(setup)
        volume = torch.randn(1, 1, *shape)
    before = _rss_gib()
    start = time.perf_counter()
    with torch.inference_mode():
        out = segment(volume)
    seconds = time.perf_counter() - start
    result = {"setup": setup, "shape": list(shape), "parameters": parameters, "seconds": round(seconds, 1),
              "peak_rss_gib": round(_peak_gib(), 2), "rss_before_gib": round(before, 2),
              "output_shape": list(out.shape), "threads": torch.get_num_threads()}  # fmt: skip
    print(json.dumps(result))


def run(setups: list[str] | tuple[str, ...] = SETUPS, shape: tuple[int, int, int] = (512, 512, 300)) -> None:
    """Every setup in its own process; prints the Markdown table."""
    results = []
    for setup in setups:
        command = [sys.executable, __file__, "measure", "--setup", setup, "--shape", json.dumps(list(shape))]
        done = subprocess.run(command, check=True, capture_output=True, text=True, cwd=REPO)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(done.stdout.strip().splitlines()[-1], flush=True)
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"volume {' x '.join(map(str, shape))}\n")  # fmt: skip
    print("| setup | parameters | seconds | peak memory (GiB) | memory before inference (GiB) |")
    print("|---|---|---|---|---|")
    for r in results:
        print(f"| {r['setup']} | {r['parameters']:,} | {r['seconds']} | {r['peak_rss_gib']} | {r['rss_before_gib']} |")


if __name__ == "__main__":
    fire.Fire({"run": run, "measure": measure})
