"""Learning-rate control: the step schedules of section 4.1 (AutoLR, Algorithm 1, builds on them)."""

from .schedules import step_decay_milestones, warmup_milestones

__all__ = ["step_decay_milestones", "warmup_milestones"]
