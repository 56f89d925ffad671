"""The demo over seeds: one summary per run folder, and the table of their spread."""

from __future__ import annotations

import math

import pytest

from autolr_monai.autolr.history import write_history
from autolr_monai.study.seeds import seed_run_dirs, seed_summary, seed_table


def _run(folder, scores: list[list[float]], winners: list[int]) -> None:
    folder.mkdir(parents=True)
    epochs = [{"epoch": e + 1, "run": r, "lr": 0.01, "train_loss": 1.0, "val_dice": s, "diverged": False}
              for e, row in enumerate(scores) for r, s in enumerate(row)]  # fmt: skip
    periods = [{"epoch": 2 * (i + 1), "winner": w, "star": {"lr": 0.05 / (i + 1)}, "next": {"lr": [0.1, 0.05, 0.025]}}
               for i, w in enumerate(winners)]  # fmt: skip
    write_history({"epochs": epochs, "periods": periods}, str(folder))


def test_a_seed_is_summarised_by_its_best_dice_and_its_winners(tmp_path):
    _run(tmp_path / "demo", [[0.1, 0.2, math.nan], [0.5, 0.4, 0.3], [0.6, 0.7, 0.6], [0.7, 0.65, 0.6]], [0, 1])
    summary = seed_summary(tmp_path / "demo")
    assert (summary["best_dice"], summary["best_run"], summary["best_epoch"]) == (0.7, 1, 3)  # the earliest 0.7
    assert summary["winners"] == [0, 1] and summary["last_star"] == 0.025


def test_the_table_gives_every_seed_and_the_mean_sd_and_range(tmp_path):
    for seed, best in ((0, 0.7), (1, 0.8), (2, 0.6)):
        _run(tmp_path / f"s{seed}", [[best, 0.1, 0.1]], [0])
    table = seed_table({k: seed_summary(tmp_path / f"s{k}") for k in range(3)})
    lines = table.splitlines()
    assert lines[2].startswith("| 0 | 0.7000 | 0, 1 | 0 | 0.05 |") and len(lines) == 6
    assert lines[-1] == "| mean ± SD (range) | 0.7000 ± 0.1000 (0.6000-0.8000) | | | |"


def test_seed_0_is_the_quick_starts_run_folder(tmp_path):
    assert seed_run_dirs(tmp_path, [0, 2]) == {0: tmp_path / "demo", 2: tmp_path / "demo-seed2"}


def test_a_folder_without_a_history_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere/autolr_history.json: no AutoLR history"):
        seed_summary(tmp_path / "nowhere")
