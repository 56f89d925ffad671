"""AutoLR's record: a history file (JSON and CSV), TensorBoard scalars, and the paper's figure 2.

Figure 2 of the paper has three panels over epochs, one line per run: (a) mean organ validation Dice, (b) the
learning rate, (c) the training cross-entropy. ``plot_history`` draws the same from a history file, with the period
ends and each period's winner marked; ``scripts/plot_autolr.py`` runs it for any run folder.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

from ignite.engine import Engine, Events

from ..files import write_json_atomic, write_text_atomic
from .population import AutoLR, AutoLREvents

HISTORY_JSON, HISTORY_CSV, FIGURE = "autolr_history.json", "autolr_history.csv", "autolr.png"


def history_record(autolr: AutoLR) -> dict:
    return {"runs": autolr.schedule.runs, "factors": autolr.schedule.factors, "period": autolr.schedule.period,
            "epoch_length": autolr.schedule.epoch_length, "epochs": autolr.history, "periods": autolr.periods,
            "best": autolr.best}  # fmt: skip


def write_history(record: Mapping, folder: str) -> None:
    """``autolr_history.json`` (everything) and ``autolr_history.csv`` (one row per epoch and run; ``winner`` is
    filled on the last epoch of each period) in ``folder``, each written atomically."""
    winners = {p["epoch"]: p["winner"] for p in record["periods"]}
    write_json_atomic(Path(folder) / HISTORY_JSON, dict(record))
    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow(["epoch", "run", "lr", "train_loss", "val_dice", "diverged", "period_winner"])
    for row in record["epochs"]:
        writer.writerow([row["epoch"], row["run"], f"{row['lr']:.6g}", f"{row['train_loss']:.6g}",
                         f"{row['val_dice']:.6g}", int(row["diverged"]), winners.get(row["epoch"], "")])  # fmt: skip
    write_text_atomic(Path(folder) / HISTORY_CSV, table.getvalue())


def load_history(path: str) -> dict:
    """A history written by ``write_history``: a run folder or the JSON file; JSON nulls come back as NaN."""
    path = Path(path)
    if path.is_dir():
        path = path / HISTORY_JSON
    if not path.is_file():
        raise FileNotFoundError(f"no AutoLR history at {path}: was the run trained with AutoLR (autolr#run)?")
    record = json.loads(path.read_text())
    for row in record["epochs"]:
        for key in ("lr", "train_loss", "val_dice"):
            row[key] = math.nan if row[key] is None else row[key]
    return record


def plot_history(record: Mapping | str, path: str, title: str | None = None) -> str:
    """Figure 2 of the paper from a history (a record or the path of a run folder / history file) into ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not isinstance(record, Mapping):
        record = load_history(record)
    runs, factors = record["runs"], record["factors"]["lr"]
    fig, axes = plt.subplots(3, 1, figsize=(7, 8.5), sharex=True)
    panels = [("val_dice", "(a) mean organ validation Dice"), ("lr", "(b) learning rate"),
              ("train_loss", "(c) training cross-entropy")]  # fmt: skip
    colors = ["tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple", "tab:brown"]
    for run in range(runs):
        rows = [r for r in record["epochs"] if r["run"] == run]
        epochs = [r["epoch"] for r in rows]
        for ax, (key, _) in zip(axes, panels):
            ax.plot(epochs, [r[key] for r in rows], color=colors[run % len(colors)], lw=1.2,
                    label=f"run {run} (lambda = {factors[run]:g})")  # fmt: skip
    start = 0
    for p in record["periods"]:
        for ax in axes:
            ax.axvline(p["epoch"], color="0.6", ls="--", lw=0.8)
        scores = [(r["val_dice"], r["epoch"]) for r in record["epochs"]
                  if r["run"] == p["winner"] and start < r["epoch"] <= p["epoch"] and math.isfinite(r["val_dice"])]  # fmt: skip
        if scores:
            best, epoch = max(scores)
            axes[0].plot([epoch], [best], marker="*", ms=12, color=colors[p["winner"] % len(colors)], mec="k")
        start = p["epoch"]
    for ax, (key, label) in zip(axes, panels):
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right", fontsize=8)
    axes[-1].set_xlabel("epoch (dashed: period ends; star: the period's winner and its best score)")
    fig.suptitle(title or f"AutoLR, {runs} runs, period {record['period']} epochs")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


class AutoLRHistory:
    """Handler for the ``AutoLR`` engine: after every epoch of the population, rewrite the history files in
    ``folder`` and log each run's learning rate, training loss and validation score to TensorBoard (as
    ``autolr/<quantity>/run_<i>``, with ``autolr/winner`` at period ends); at the end of training, draw
    figure 2 (``autolr.png``). Only process 0 writes."""

    def __init__(self, folder: str, tensorboard_dir: str | None = None, figure: bool = True) -> None:
        self.folder, self.tensorboard_dir, self.figure = folder, tensorboard_dir, figure
        self._writer = None

    def attach(self, engine: AutoLR) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._epoch)
        engine.add_event_handler(AutoLREvents.PERIOD_COMPLETED, self._period)
        engine.add_event_handler(Events.COMPLETED, self._completed)

    def _tensorboard(self):
        if self._writer is None and self.tensorboard_dir:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(self.tensorboard_dir)
        return self._writer

    def _epoch(self, engine: AutoLR) -> None:
        if engine.rank != 0:
            return
        write_history(history_record(engine), self.folder)
        writer = self._tensorboard()
        if writer is not None:
            epoch = engine.state.iteration
            for row in engine.history[-engine.schedule.runs :]:
                for key in ("val_dice", "lr", "train_loss"):
                    writer.add_scalar(f"autolr/{key}/run_{row['run']}", row[key], epoch)
            writer.flush()

    def _period(self, engine: AutoLR) -> None:
        writer = self._tensorboard() if engine.rank == 0 else None
        if writer is not None:
            period = engine.periods[-1]
            writer.add_scalar("autolr/winner", period["winner"], period["epoch"])
            writer.add_scalar("autolr/eta_star", period["star"]["lr"], period["epoch"])
            writer.flush()

    def _completed(self, engine: Engine) -> None:
        if engine.rank != 0:
            return
        write_history(history_record(engine), self.folder)
        if self.figure and engine.history:
            plot_history(history_record(engine), os.path.join(self.folder, FIGURE))
        if self._writer is not None:
            self._writer.close()
            self._writer = None
