"""Validation metrics that stay within one process."""

from __future__ import annotations

from collections.abc import Callable

import torch
from monai.handlers import IgniteMetricHandler
from monai.metrics import DiceMetric


class _LocalDiceMetric(DiceMetric):
    """``DiceMetric`` that aggregates this process's buffers only (MONAI's ``_sync`` all-gathers across ranks)."""

    def _sync(self) -> None:
        if self._synced or self._buffers is None:
            return
        self._synced_tensors = [torch.stack(b, dim=0) for b in self._buffers]
        self._synced = True


class LocalMeanDice(IgniteMetricHandler):
    """MONAI's ``MeanDice`` handler without the cross-process all-gather; same arguments.

    Under ``torchrun`` MONAI's metrics gather every rank's results before averaging. In an AutoLR population each
    process is a different run validating the same volumes, so gathering would score every run with the average of
    all of them; each run must be scored on its own predictions.
    """

    def __init__(
        self,
        include_background: bool = True,
        reduction: str = "mean",
        num_classes: int | None = None,
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
        return_with_label: bool | list[str] = False,
    ) -> None:
        metric_fn = _LocalDiceMetric(include_background=include_background, reduction=reduction,
                                     num_classes=num_classes, return_with_label=return_with_label)  # fmt: skip
        super().__init__(metric_fn=metric_fn, output_transform=output_transform, save_details=save_details)
