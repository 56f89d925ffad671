"""Training glue for MONAI/Ignite engines: the patch loss and epoch-level logging."""

from .handlers import EpochSummary
from .losses import PatchCrossEntropyLoss

__all__ = ["EpochSummary", "PatchCrossEntropyLoss"]
