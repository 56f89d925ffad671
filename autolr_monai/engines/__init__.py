"""Training glue for MONAI/Ignite engines: the patch loss and epoch-level logging and history."""

from .handlers import AtomicCheckpointSaver, EpochSummary, TrainingHistory
from .losses import PatchCrossEntropyLoss
from .metrics import LocalMeanDice

__all__ = ["AtomicCheckpointSaver", "EpochSummary", "LocalMeanDice", "PatchCrossEntropyLoss", "TrainingHistory"]
