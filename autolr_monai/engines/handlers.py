"""Ignite handlers for the training engine."""

from __future__ import annotations

import math
import os

import torch
from ignite.engine import Engine, Events
from monai.handlers import CheckpointSaver

from ..files import write_json_atomic, write_text_atomic


class EpochSummary:
    """Put the epoch's mean training loss and the learning rate into ``engine.state.metrics`` at the end of each
    epoch (as ``train_loss`` and ``lr``), where MONAI's ``StatsHandler`` and ``TensorBoardStatsHandler`` log them.

    MONAI's stats handlers log the loss of single iterations only and never the learning rate.
    """

    def __init__(self, optimizer, loss_key: str = "loss") -> None:
        self.optimizer, self.loss_key = optimizer, loss_key
        self._sum, self._count = 0.0, 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._accumulate)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _reset(self, engine: Engine) -> None:
        self._sum, self._count = 0.0, 0

    def _accumulate(self, engine: Engine) -> None:
        output = engine.state.output
        item = output[0] if isinstance(output, list) else output
        loss = item[self.loss_key]
        self._sum += float(loss.detach() if isinstance(loss, torch.Tensor) else loss)
        self._count += 1

    def _write(self, engine: Engine) -> None:
        engine.state.metrics["train_loss"] = self._sum / max(self._count, 1)
        engine.state.metrics["lr"] = float(self.optimizer.param_groups[0]["lr"])


class TrainingHistory:
    """Keep one row per epoch of a single training run, ``{"epoch", "lr", "train_loss", "val_dice"}``, and rewrite
    ``history.json`` and ``history.csv`` in ``folder`` (atomically) after every epoch.

    The single-run counterpart of AutoLR's ``autolr_history.json``: the step-schedule arms of the Table 1 study
    (``scripts/reproduce.py``) read their validation curves from it. MONAI's ``StatsHandler`` only logs, and
    ``TensorBoardStatsHandler`` writes event files that need TensorBoard to read back. Attach it after
    ``EpochSummary`` and the ``ValidationHandler`` so that the epoch's loss, rate and validation score are there.
    """

    JSON, CSV = "history.json", "history.csv"

    def __init__(self, folder: str, evaluator: Engine) -> None:
        self.folder, self.evaluator = folder, evaluator
        self.epochs: list[dict] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def state_dict(self) -> dict:
        return {"epochs": [dict(row) for row in self.epochs]}

    def load_state_dict(self, state: dict) -> None:
        self.epochs = [dict(row) for row in state["epochs"]]

    def _write(self, engine: Engine) -> None:
        metrics, scores = engine.state.metrics, self.evaluator.state.metrics
        key = getattr(self.evaluator.state, "key_metric_name", None)
        validated = self.evaluator.state.epoch == engine.state.epoch and key in scores
        self.epochs.append({"epoch": engine.state.epoch, "lr": float(metrics.get("lr", math.nan)),
                            "train_loss": float(metrics.get("train_loss", math.nan)),
                            "val_dice": float(scores[key]) if validated else math.nan})  # fmt: skip
        record = {"epoch_length": engine.state.epoch_length, "max_epochs": engine.state.max_epochs,
                  "epochs": self.epochs}  # fmt: skip
        write_json_atomic(os.path.join(self.folder, self.JSON), record)
        lines = ["epoch,lr,train_loss,val_dice"]
        lines += [f"{r['epoch']},{r['lr']:.6g},{r['train_loss']:.6g},{r['val_dice']:.6g}" for r in self.epochs]
        write_text_atomic(os.path.join(self.folder, self.CSV), "\n".join(lines) + "\n")


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver`` writing every file through a temporary file and a rename, so a kill during a
    write never leaves a truncated checkpoint or ``model.pt``.

    MONAI builds its Ignite ``DiskSaver`` with ``atomic=False`` because an atomic write used to leave the file
    readable by its owner only; Ignite 0.5 adds group and others' read permission after the rename.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for checkpoint in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if checkpoint is not None:
                checkpoint.save_handler._atomic = True
