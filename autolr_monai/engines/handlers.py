"""Ignite handlers for the training engine."""

from __future__ import annotations

import torch
from ignite.engine import Engine, Events


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
