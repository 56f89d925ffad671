"""Measure the training data pipeline and the training step of the bundle's configurations on this machine.

For each setup it builds the bundle's own training ``DataLoader``, network, loss and optimizer from the configs
and prints a Markdown table of
- patches per second delivered by the data pipeline (``num_workers`` worker processes, after a warm-up), and
- seconds per training step (forward, backward and SGD update on one batch, data already in memory).

    python scripts/benchmark_training.py                      # demo and paper setups, 2 workers
    python scripts/benchmark_training.py --setups "['demo']" --batches 30

The paper setup trains on phantoms resampled to 1 x 1 x 1.5 mm; to keep memory and caching time modest it uses a
3-case phantom dataset of its own (``bundle/data/phantoms-bench``).
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import fire
import torch
from monai.bundle import ConfigParser

CONFIGS = Path(__file__).resolve().parents[1] / "bundle" / "configs"
SETUPS = {
    "demo": ([CONFIGS / "train.json", CONFIGS / "demo.json"], {}),
    "paper": (
        [CONFIGS / "train.json"],
        {"dataset_dir": "$os.path.join(@bundle_root, 'data', 'phantoms-bench')", "phantom": {"n_cases": 3, "seed": 0}},
    ),
}


def bundle_parser(setup: str, **overrides) -> ConfigParser:
    """The bundle's configs for a setup ("demo" or "paper"), on the CPU, with ``overrides``."""
    files, setup_overrides = SETUPS[setup]
    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    parser.update({"bundle_root": str(CONFIGS.parent), "device": "$torch.device('cpu')", "amp": False,
                   **setup_overrides, **overrides})  # fmt: skip
    return parser


def measure(setup: str, num_workers: int, batches: int, steps: int) -> dict:
    parser = bundle_parser(setup, num_workers=num_workers)
    start = time.perf_counter()
    loader = parser.get_parsed_content("train#dataloader")
    cache_s = time.perf_counter() - start
    iterator = iter(loader)
    batch = next(iterator)  # workers started, first batch out
    next(iterator)
    start, patches = time.perf_counter(), 0
    kept = []
    for _ in range(batches):
        batch = next(iterator)
        patches += batch["image"].shape[0]
        if len(kept) < steps + 1:
            kept.append(batch)
    pipeline_s = time.perf_counter() - start

    network = parser.get_parsed_content("network").train()
    loss_fn = parser.get_parsed_content("loss")
    optimizer = parser.get_parsed_content("optimizer")
    times = []
    for i, b in enumerate(kept):
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(network(b["image"], b["image_low"]), b["label"])
        loss.backward()
        optimizer.step()
        if i > 0:  # the first step warms up allocators
            times.append(time.perf_counter() - t0)
    geometry = network.input_sizes(parser.get_parsed_content("patch_size"))
    return {
        "setup": setup,
        "parameters": sum(p.numel() for p in network.parameters()),
        "patch": f"out {parser['patch_size']}^3, full-res in {geometry['high'][0]}^3, low-res in {geometry['low'][0]}^3",
        "batch": kept[0]["image"].shape[0],
        "cache_s": cache_s,
        "patches_per_s": patches / pipeline_s,
        "step_s": sum(times) / max(len(times), 1),
    }


def main(setups: tuple[str, ...] = ("demo", "paper"), num_workers: int = 2, batches: int = 20, steps: int = 3) -> None:
    torch.manual_seed(0)
    rows = [measure(s, num_workers, batches, steps) for s in setups]
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {num_workers} data workers")  # fmt: skip
    print("\n| setup | parameters | patch | patches/batch | cache build (s) | pipeline patches/s | s per training step |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['setup']} | {r['parameters']:,} | {r['patch']} | {r['batch']} | {r['cache_s']:.1f} | "
              f"{r['patches_per_s']:.0f} | {r['step_s']:.2f} |")  # fmt: skip


if __name__ == "__main__":
    fire.Fire(main)
