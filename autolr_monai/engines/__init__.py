"""Training glue for MONAI/Ignite engines: the patch loss and epoch-level logging and history."""

from .handlers import EpochSummary, TrainingHistory
from .losses import PatchCrossEntropyLoss
from .metrics import LocalMeanDice

__all__ = ["EpochSummary", "LocalMeanDice", "PatchCrossEntropyLoss", "TrainingHistory"]
