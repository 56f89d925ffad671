"""Draw the paper's figure 2 (validation Dice, learning rate and training loss of each AutoLR run) for a run folder.

    python scripts/plot_autolr.py bundle/runs/demo                 # writes bundle/runs/demo/autolr.png
    python scripts/plot_autolr.py bundle/runs/demo --out fig2.png --title "AutoLR + isample, demo"
"""

from __future__ import annotations

import os

import fire

from autolr_monai.autolr import plot_history
from autolr_monai.autolr.history import FIGURE


def main(run_dir: str, out: str | None = None, title: str | None = None) -> str:
    path = plot_history(run_dir, out or os.path.join(run_dir, FIGURE), title=title)
    print(path)
    return path


if __name__ == "__main__":
    fire.Fire(main)
