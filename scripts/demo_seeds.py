"""The quick-start demo over seeds, and the table of its spread (README, "Measured").

    python scripts/demo_seeds.py run --seeds "[0,1,2]"     # trains the seeds not yet trained, then the table
    python scripts/demo_seeds.py table --seeds "[0,1,2]"   # the table of finished runs only

Seed 0 trains into ``bundle/runs/demo`` (the quick start's run folder), seed k into ``bundle/runs/demo-seed<k>``;
the table goes to ``bundle/runs/demo_seeds.md``. Each training is the quick start's command with ``--seed k``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import fire

from autolr_monai.study.seeds import HISTORY, seed_run_dirs, seed_summary, seed_table

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "bundle" / "runs"
CONFIGS = "['bundle/configs/train.json','bundle/configs/demo.json']"


def table(seeds: list[int] = (0, 1, 2)) -> str:
    """Write and print the table of the seeds' finished runs."""
    text = seed_table({k: seed_summary(d) for k, d in seed_run_dirs(RUNS, seeds).items()})
    (RUNS / "demo_seeds.md").write_text(text)
    print(text)
    return text


def run(seeds: list[int] = (0, 1, 2)) -> None:
    """Train each seed whose run folder has no AutoLR history yet (one after the other), then write the table."""
    for seed, run_dir in seed_run_dirs(RUNS, seeds).items():
        if (run_dir / HISTORY).is_file() and (run_dir / "checkpoints" / "checkpoint_final.pt").is_file():
            print(f"seed {seed}: {run_dir} already trained")
            continue
        command = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", CONFIGS,
                   "--seed", str(seed), "--run_name", run_dir.name]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(command, cwd=REPO, check=True)
        print(f"seed {seed}: trained in {time.perf_counter() - start:.0f} s into {run_dir}")
    table(seeds)


if __name__ == "__main__":
    try:
        fire.Fire({"run": run, "table": table})
    except (FileNotFoundError, ValueError, subprocess.CalledProcessError) as error:
        sys.exit(f"demo_seeds.py: {error}")
