"""Benchmark isample's patch-centre draws and error-map refresh on this machine; prints Markdown tables.

Draws: a 256 x 256 x 200 label map with 21 classes (20 ellipsoids of random sizes in background) and error maps
of mean 0.5, 0.05 and 0.005 (uniform on [0, 2m]); draws per second of
- the exact sampler (``RandErrorWeightedCentresd``, mode "exact") with 4 and with 1,000 draws per call,
- the paper's literal accept/reject loop (mode "rejection"),
- MONAI's ``RandWeightedCropd`` on the same distribution (weight map E / n_class, 4 crops of 16^3 per call),
and the time to rebuild the exact sampler's tables after a map refresh (once per worker and refresh).

Refresh: the time of one error-map refresh (whole-volume inference + E = 1 - p(true class)) of one phantom case,
for the demo setup and for the paper-size network at 1 x 1 x 1.5 mm (minutes on a CPU; skip with
``--paper_refresh False``).

    python scripts/benchmark_isample.py
"""

from __future__ import annotations

import os
import platform
import tempfile
import time

import fire
import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import RandWeightedCropd
from monai.utils import set_determinism

from autolr_monai.data import ClassIndexd
from autolr_monai.sampling import ErrorMapRefresher, ErrorMapStore, RandErrorWeightedCentresd, accepted_mass
from benchmark_training import bundle_parser  # scripts/ is on the path when run as a script

SHAPE = (256, 256, 200)
NUM_CLASSES = 21


def label_map(rng: np.random.Generator) -> np.ndarray:
    label = np.zeros(SHAPE, dtype=np.uint8)
    grid = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    for k in range(1, NUM_CLASSES):
        centre = rng.uniform(30, np.array(SHAPE) - 30)
        radii = rng.uniform(4, 40, size=3)
        inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1.0
        label[inside] = k
    return label


def rate(call, draws_per_call: int, min_seconds: float = 2.0) -> float:
    call()  # warm-up (and table build)
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds:
        call()
        calls += 1
    return calls * draws_per_call / (time.perf_counter() - start)


def draw_rates(seconds: float) -> list[dict]:
    rng = np.random.default_rng(0)
    label = label_map(rng)
    item = ClassIndexd(num_classes=NUM_CLASSES)({"label": MetaTensor(torch.as_tensor(label[None]))})
    item["case_index"] = 0
    counts = np.diff(item["class_index_offsets"])
    class_size = counts[label.reshape(-1)].reshape(SHAPE).astype(np.float32)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        store = ErrorMapStore(folder, 1)
        store.register(0, SHAPE)
        for mean in (0.5, 0.05, 0.005):
            error = (rng.random(SHAPE, dtype=np.float32) * 2 * mean).astype(np.float16)
            store.write(0, (slice(None),) * 3, error)
            store.commit(0, accepted_mass(error, label))
            exact4 = RandErrorWeightedCentresd(num_samples=4, store=store)
            start = time.perf_counter()
            exact4(item)  # builds the tables
            build_s = time.perf_counter() - start
            exact1000 = RandErrorWeightedCentresd(num_samples=1000, store=store)
            rejection = RandErrorWeightedCentresd(num_samples=4, store=store, mode="rejection")
            weights = MetaTensor(torch.as_tensor(error.astype(np.float32) / class_size)[None])
            data = {"image": MetaTensor(torch.zeros(1, *SHAPE)), "weights": weights}
            monai_crop = RandWeightedCropd(keys="image", w_key="weights", spatial_size=(16, 16, 16), num_samples=4)
            rows.append({
                "mean error": mean,
                "exact, 4 per call": rate(lambda: exact4(item), 4, seconds),
                "exact, 1000 per call": rate(lambda: exact1000(item), 1000, seconds),
                "rejection loop": rate(lambda: rejection(item), 4, seconds),
                "MONAI RandWeightedCropd": rate(lambda: monai_crop(data), 4, seconds),
                "table rebuild (s)": build_s,
            })  # fmt: skip
    return rows


def refresh_seconds(setup: str) -> dict:
    """Time of one error-map refresh of the first training phantom for a bundle setup."""
    parser = bundle_parser(setup, num_workers=0, run_dir=tempfile.mkdtemp())
    dataset = parser.get_parsed_content("train#dataset")
    refresher: ErrorMapRefresher = parser.get_parsed_content("train#isample_handlers")[0]
    refresher.network.eval()
    start = time.perf_counter()
    mean_error = refresher.refresh(0)
    seconds = time.perf_counter() - start
    shape = tuple(dataset._cache[0]["label"].shape[1:])
    return {"setup": setup, "grid": " x ".join(map(str, shape)), "voxels": int(np.prod(shape)),
            "tile": parser["inference_tile"], "seconds": seconds, "mean error": mean_error}  # fmt: skip


def main(seconds: float = 2.0, paper_refresh: bool = True) -> None:
    set_determinism(0)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    rows = draw_rates(seconds)
    print(f"\nPatch-centre draws per second, {' x '.join(map(str, SHAPE))} map, {NUM_CLASSES} classes:\n")
    print("| mean error | exact, 4 per call | exact, 1000 per call | rejection loop | MONAI RandWeightedCropd | "
          "exact / rejection | exact (4) / RandWeightedCropd | table rebuild (s) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mean error']} | {r['exact, 4 per call']:,.0f} | {r['exact, 1000 per call']:,.0f} | "
              f"{r['rejection loop']:,.0f} | {r['MONAI RandWeightedCropd']:,.0f} | "
              f"{r['exact, 4 per call'] / r['rejection loop']:.1f}x | "
              f"{r['exact, 4 per call'] / r['MONAI RandWeightedCropd']:.1f}x | {r['table rebuild (s)']:.2f} |")  # fmt: skip
    refreshes = [refresh_seconds("demo")] + ([refresh_seconds("paper")] if paper_refresh else [])
    print("\nError-map refresh of one training case (exact tiled inference + E = 1 - p(true class)):\n")
    print("| setup | cached grid | voxels | tile | seconds | mean error (untrained) |")
    print("|---|---|---|---|---|---|")
    for r in refreshes:
        print(f"| {r['setup']} | {r['grid']} | {r['voxels']:,} | {r['tile']}^3 | {r['seconds']:.1f} | "
              f"{r['mean error']:.3f} |")  # fmt: skip


if __name__ == "__main__":
    fire.Fire(main)
