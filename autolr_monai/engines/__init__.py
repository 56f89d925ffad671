"""Training glue for MONAI/Ignite engines: the patch loss, epoch-level logging and history, the run folder."""

from .handlers import AtomicCheckpointSaver, EpochSummary, TrainingHistory
from .losses import PatchCrossEntropyLoss
from .metrics import LocalMeanDice
from .run_folder import RunFolder, RunFolderError

__all__ = ["AtomicCheckpointSaver", "EpochSummary", "LocalMeanDice", "PatchCrossEntropyLoss", "RunFolder",
           "RunFolderError", "TrainingHistory"]  # fmt: skip
