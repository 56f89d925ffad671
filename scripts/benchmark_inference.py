"""Whole-volume inference time and peak memory on this machine: the paper-size dual-path network with exact tiling
against MONAI's sliding-window inference over the model zoo's spleen_ct_segmentation UNet.

    python scripts/benchmark_inference.py run                               # 512 x 512 x 300, all setups
    python scripts/benchmark_inference.py run --shape "[128,128,96]" --setups "['dual_path_160','unet']"

Each setup runs in a fresh process (so peak memory is its own): the network is built with its default
initialisation (timing does not depend on the weights), a random volume of ``shape`` voxels (already on the
network's grid) is segmented into a label map (argmax over 21 classes) under ``torch.inference_mode`` on the CPU:

- ``dual_path_<T>``: ``DualPathResNet3D()`` (653,413 parameters) as ``inference.json`` runs it: channels-last
  weights, ``ExactTiledInferer(tile_size=T, channels_last=True)`` (the low path once per volume), labels only;
- ``dual_path_<T>_per_tile``: the same network seen as a plain valid-convolution network (its low path recomputed
  on every tile's margin) in the default memory format, for comparison;
- ``unet``: MONAI ``UNet(3, 1, 21, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2,
  norm="batch")`` as in spleen_ct_segmentation (21 output classes instead of 2, for this task), then
  ``sliding_window_inference(roi_size=96^3, sw_batch_size=4, overlap=0.5)`` (the spleen bundle's inferer), argmax;
- ``lcc``: MONAI ``KeepLargestConnectedComponent`` for the 20 structures (the optional post-processing) on the
  real TotalSegmentator label map of ``../shared/data/totalseg-example`` mapped to the label table and resized
  (nearest) to ``shape``;
- ``bundle``: ``python -m monai.bundle run inference`` end to end on a NIfTI of ``shape`` voxels at the training
  spacing (1 x 1 x 1.5 mm) with a paper-size ``model.pt``: loading, preprocessing, inference, largest component,
  resampling back, writing the label map (peak memory of the process tree).

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
SETUPS = ("dual_path_40", "dual_path_96", "unet", "lcc", "bundle")
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
        parameters = sum(p.numel() for p in net.parameters())
        tile = int(setup.split("_")[2])
        if setup.endswith("_per_tile"):
            inferer = ExactTiledInferer(tile_size=tile, margin=net.input_margin, alignment=net.downsample,
                                        output="labels")  # fmt: skip
            return (lambda x: inferer(x, lambda t: net(t))), parameters  # a plain callable: no shared low path
        net = net.to(memory_format=torch.channels_last_3d)
        inferer = ExactTiledInferer(tile_size=tile, output="labels", channels_last=True)
        return (lambda x: inferer(x, net)), parameters
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


def _bundle_run(shape: tuple[int, int, int], seed: int) -> dict:
    """``run inference`` in a child process on a written NIfTI; wall time and the process tree's peak memory."""
    import tempfile

    import nibabel as nib
    import numpy as np

    from autolr_monai.networks import DualPathResNet3D

    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(seed)
        volume = rng.normal(0, 200, shape).astype(np.int16)
        nib.save(nib.Nifti1Image(volume, np.diag([1.0, 1.0, 1.5, 1.0])), f"{tmp}/scan.nii.gz")
        torch.save(DualPathResNet3D(out_channels=NUM_CLASSES).state_dict(), f"{tmp}/model.pt")
        command = [sys.executable, "-m", "monai.bundle", "run", "inference", "--config_file",
                   str(REPO / "bundle" / "configs" / "inference.json"), "--input", f"{tmp}/scan.nii.gz",
                   "--output_dir", f"{tmp}/out", "--checkpoint", f"{tmp}/model.pt"]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, cwd=tmp)
        seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    return {"seconds": round(seconds, 1), "peak_rss_gib": round(peak, 2), "rss_before_gib": None,
            "parameters": 653_413, "output_shape": list(shape)}  # fmt: skip


def measure(setup: str, shape: tuple[int, int, int] = (512, 512, 300), seed: int = 0) -> None:
    """One setup in this process; prints its figures as one line of JSON."""
    torch.manual_seed(seed)
    shape = tuple(int(s) for s in shape)
    if setup == "bundle":
        result = {"setup": setup, "shape": list(shape), **_bundle_run(shape, seed), "threads": torch.get_num_threads()}
        print(json.dumps(result))
        return
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
        before = "-" if r["rss_before_gib"] is None else r["rss_before_gib"]
        print(f"| {r['setup']} | {r['parameters']:,} | {r['seconds']} | {r['peak_rss_gib']} | {before} |")


if __name__ == "__main__":
    fire.Fire({"run": run, "measure": measure})
