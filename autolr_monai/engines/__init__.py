"""Training glue for MONAI/Ignite engines: the patch loss and epoch-level logging."""

from .handlers import EpochSummary
from .losses import PatchCrossEntropyLoss
from .metrics import LocalMeanDice

__all__ = ["EpochSummary", "LocalMeanDice", "PatchCrossEntropyLoss"]
