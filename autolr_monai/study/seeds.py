"""The demo over seeds: one AutoLR training per seed, summarised as the distribution a user's own run falls in.

A population's path is bit-identical on one machine and software, but another CPU or GPU gives other last bits
in the network's arithmetic, and AutoLR's selections amplify them into other winners; so the demo is reported as a
spread over seeds (``scripts/demo_seeds.py``), not as one trajectory.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..autolr.history import load_history

HISTORY = "autolr_history.json"


def seed_summary(run_dir: str | Path) -> dict:
    """Best validation Dice (with its run and epoch), the period winners and the last eta* of one AutoLR run."""
    path = Path(run_dir) / HISTORY
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no AutoLR history (expected a finished AutoLR training in {run_dir})")
    record = load_history(str(path))
    scored = [row for row in record["epochs"] if math.isfinite(row["val_dice"])]
    if not scored:
        raise ValueError(f"{path}: epochs: no finite validation Dice (expected at least one validated epoch)")
    best = max(scored, key=lambda row: (row["val_dice"], -row["epoch"], -row["run"]))
    periods = record["periods"]
    return {"run_dir": str(run_dir), "best_dice": best["val_dice"], "best_run": best["run"], "best_epoch": best["epoch"],
            "winners": [p["winner"] for p in periods], "last_star": periods[-1]["star"]["lr"] if periods else math.nan,
            "final_rates": list(periods[-1]["next"]["lr"]) if periods else []}  # fmt: skip


def seed_table(summaries: Mapping[int, Mapping]) -> str:
    """Markdown: one row per seed, then the mean and range of the best Dice."""
    lines = ["| seed | best validation Dice | run, epoch | winners per period | eta* of the last period |",
             "|---|---|---|---|---|"]  # fmt: skip
    for seed, s in sorted(summaries.items()):
        winners = ", ".join(map(str, s["winners"]))
        lines.append(f"| {seed} | {s['best_dice']:.4f} | {s['best_run']}, {s['best_epoch']} | {winners} | "
                     f"{s['last_star']:.4g} |")  # fmt: skip
    best = [s["best_dice"] for s in summaries.values()]
    sd = statistics.stdev(best) if len(best) > 1 else math.nan
    lines.append(f"| mean ± SD (range) | {statistics.fmean(best):.4f} ± {sd:.4f} ({min(best):.4f}-{max(best):.4f}) | | | |")
    return "\n".join(lines) + "\n"


def seed_run_dirs(runs_root: str | Path, seeds: Sequence[int], name: str = "demo") -> dict[int, Path]:
    """The run folder of each seed: ``<runs_root>/<name>`` for seed 0 (the quick start's), else ``<name>-seed<k>``."""
    return {int(k): Path(runs_root) / (name if int(k) == 0 else f"{name}-seed{int(k)}") for k in seeds}
