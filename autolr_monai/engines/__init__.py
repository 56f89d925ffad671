"""Training glue for MONAI/Ignite engines: the patch loss, epoch-level logging and history, the run folder."""

from .handlers import AtomicCheckpointSaver, EpochSummary, TrainingHistory
from .losses import PatchCrossEntropyLoss
from .metrics import LocalMeanDice
from .resume import BestModelState, GradScalerState, RandomStreams, ResumeView
from .run_folder import RunFolder, RunFolderError

__all__ = ["AtomicCheckpointSaver", "BestModelState", "EpochSummary", "GradScalerState", "LocalMeanDice",
           "PatchCrossEntropyLoss", "RandomStreams", "ResumeView", "RunFolder", "RunFolderError", "TrainingHistory"]  # fmt: skip
