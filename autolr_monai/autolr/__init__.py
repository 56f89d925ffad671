"""Learning-rate control: AutoLR (Algorithm 1) and the step schedules of section 4.1 it is compared with."""

from .bundle import members_from_config
from .checkpoints import checkpoint_to_load, latest_checkpoint
from .fingerprint import fingerprint_differences, training_fingerprint
from .history import AutoLRHistory, plot_history
from .population import AutoLR, AutoLREvents, Member
from .schedules import step_decay_milestones, warmup_milestones
from .selection import AutoLRSchedule, PopulationDivergedError, best_score, select_winner

__all__ = [
    "AutoLR",
    "AutoLREvents",
    "AutoLRHistory",
    "AutoLRSchedule",
    "Member",
    "PopulationDivergedError",
    "best_score",
    "checkpoint_to_load",
    "fingerprint_differences",
    "latest_checkpoint",
    "members_from_config",
    "plot_history",
    "select_winner",
    "step_decay_milestones",
    "training_fingerprint",
    "warmup_milestones",
]
