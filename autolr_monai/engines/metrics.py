"""Validation metrics that stay within one process."""

from __future__ import annotations

import torch
from monai.handlers import MeanDice
from monai.metrics import DiceMetric


class _LocalDiceMetric(DiceMetric):
    """``DiceMetric`` that aggregates this process's buffers only (MONAI's ``_sync`` all-gathers across ranks)."""

    def _sync(self) -> None:
        if self._synced or self._buffers is None:
            return
        self._synced_tensors = [torch.stack(b, dim=0) for b in self._buffers]
        self._synced = True


class LocalMeanDice(MeanDice):
    """MONAI's ``MeanDice`` handler without the cross-process all-gather.

    Under ``torchrun`` MONAI's metrics gather every rank's results before averaging. In an AutoLR population each
    process is a different run validating the same volumes, so gathering would score every run with the average of
    all of them; each run must be scored on its own predictions. Same arguments as ``MeanDice``.
    """

    def __init__(self, include_background: bool = True, reduction="mean", num_classes: int | None = None, **kwargs) -> None:
        super().__init__(include_background=include_background, reduction=reduction, num_classes=num_classes, **kwargs)
        self.metric_fn = _LocalDiceMetric(include_background=include_background, reduction=reduction,
                                          num_classes=num_classes,
                                          return_with_label=kwargs.get("return_with_label", False))  # fmt: skip
