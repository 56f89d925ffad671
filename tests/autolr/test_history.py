"""The AutoLR record: history files, the figure-2 plot and its script."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from autolr_monai.autolr import AutoLRSchedule, plot_history
from autolr_monai.autolr.history import load_history, write_history
from tests.conftest import REPO


def _record() -> dict:
    """A 3-run, 6-epoch history from the bare rule on scripted scores; run 0 diverges in epoch 2."""
    schedule = AutoLRSchedule([0.05, 0.01, 0.005], [2.0, 1.0, 0.5], period=3, epoch_length=10, warmup_epochs=1)
    rows = schedule.simulate_values(6, lambda epoch, run, lr: math.nan if (run, epoch) == (0, 1) else 0.1 * epoch + lr)
    epochs = [{"epoch": e + 1, "run": r, "lr": lr, "train_loss": math.nan if math.isnan(s) else 2.0 - s,
               "val_dice": s, "diverged": math.isnan(s)} for e, r, lr, s in rows]  # fmt: skip
    periods = [{"period": i + 1, "epoch": 3 * (i + 1), "winner": w, "best_scores": [0.5, 0.6, 0.7], "star": {"lr": 0.01},
                "next": {"lr": [0.02, 0.01, 0.005]}, "swap_seconds": 0.01} for i, w in enumerate(schedule.winners)]  # fmt: skip
    return {"runs": 3, "factors": schedule.factors, "period": 3, "epochs": epochs, "periods": periods,
            "best": {"score": 0.7, "run": 2, "epoch": 3}}  # fmt: skip


def test_history_round_trips_with_nan_and_marks_each_period_winner(tmp_path):
    record = _record()
    write_history(record, str(tmp_path))
    loaded = load_history(str(tmp_path))
    assert math.isnan(loaded["epochs"][3]["val_dice"]) and loaded["epochs"][3]["diverged"]
    assert [r["lr"] for r in loaded["epochs"]] == pytest.approx([r["lr"] for r in record["epochs"]])
    lines = (tmp_path / "autolr_history.csv").read_text().splitlines()
    winners = [line.split(",")[-1] for line in lines[1:]]
    assert winners[6:9] == [str(record["periods"][0]["winner"])] * 3 and winners[:6] == [""] * 6


def test_plot_script_draws_figure_2_for_a_run_folder(tmp_path):
    write_history(_record(), str(tmp_path))
    out = tmp_path / "figure.png"
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "plot_autolr.py"), str(tmp_path), "--out", str(out)],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000


def test_plot_of_a_folder_without_history_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="autolr_history.json"):
        plot_history(str(tmp_path), str(tmp_path / "x.png"))
