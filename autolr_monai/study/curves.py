"""Validation curves of finished training runs, one ``Curve`` per arm and seed, read from the runs' own records:
``history.json`` (``TrainingHistory``, a single run) or ``autolr_history.json`` (``AutoLRHistory``, a population).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from ..autolr.history import HISTORY_JSON, load_history
from ..engines.handlers import TrainingHistory


@dataclass
class Curve:
    """Per epoch: the number of SGD updates per run so far, the validation Dice of the arm's model and the learning
    rate that sets the arm's schedule.

    For AutoLR both come from the run with factor 1: after every swap it continues from the winner's weights at the
    winner's rate (eta*), so it is the one model that follows the schedule AutoLR found. ``best_of_runs`` is the
    best validation Dice of all its runs at each epoch, a selection among ``runs`` models that a step schedule does
    not get; it is reported apart. An arm's compute is ``runs`` times its updates.
    """

    epochs: list[int]
    updates: list[int]
    dice: list[float]
    lr: list[float]
    runs: int = 1
    periods: list[dict] | None = None
    best_of_runs: list[float] | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def load_curve(run_dir: str | Path) -> Curve:
    """The curve of a finished run folder: AutoLR's history if there is one, else the single run's."""
    run_dir = Path(run_dir)
    if (run_dir / HISTORY_JSON).is_file():
        return autolr_curve(load_history(str(run_dir)), run_dir / HISTORY_JSON)
    path = run_dir / TrainingHistory.JSON
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: neither {HISTORY_JSON} nor {TrainingHistory.JSON}; is it a training run "
                                "folder of this bundle (train.json with or without sched_a/sched_b.json)?")  # fmt: skip
    record = json.loads(path.read_text())
    rows = record["epochs"]
    return Curve(
        epochs=[r["epoch"] for r in rows],
        updates=[r["epoch"] * record["epoch_length"] for r in rows],
        dice=[math.nan if r["val_dice"] is None else r["val_dice"] for r in rows],
        lr=[math.nan if r["lr"] is None else r["lr"] for r in rows],
    )


def autolr_curve(record: dict, source: str | Path = "the AutoLR history") -> Curve:
    """The curve of an AutoLR history (``load_history``); a diverged run's scores never count as the best."""
    if "epoch_length" not in record:
        raise ValueError(f"{source}: no 'epoch_length'; it was written by an older version, train the run again")
    factors = record["factors"]["lr"]
    continuing = factors.index(1.0) if 1.0 in factors else len(factors) // 2
    epochs = sorted({r["epoch"] for r in record["epochs"]})
    dice, lr, best = [], [], []
    for epoch in epochs:
        rows = {r["run"]: r for r in record["epochs"] if r["epoch"] == epoch}
        scores = [r["val_dice"] for r in rows.values() if math.isfinite(r["val_dice"]) and not r["diverged"]]
        best.append(max(scores) if scores else math.nan)
        dice.append(math.nan if rows[continuing]["diverged"] else rows[continuing]["val_dice"])
        lr.append(rows[continuing]["lr"])
    return Curve(epochs=epochs, updates=[e * record["epoch_length"] for e in epochs], dice=dice, lr=lr,
                 runs=record["runs"], periods=record["periods"], best_of_runs=best)  # fmt: skip
