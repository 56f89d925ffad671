"""The paper's Table 1 experiment: six arms (Sched A, Sched B, AutoLR, each with and without isample) over seeds,
run with the bundle's own configs, summarized as Table 1 with its claims checked, and drawn as figures 2 and 3."""

from .arms import ARMS, Arm, select_arms
from .curves import Curve, load_curve
from .figures import figure3_dice, figure3_lr
from .runner import PROFILES, Study, report, run_study
from .summary import claims, markdown, summarize, updates_to_reach, value_at

__all__ = ["ARMS", "PROFILES", "Arm", "Curve", "Study", "claims", "figure3_dice", "figure3_lr", "load_curve",
           "markdown", "report", "run_study", "select_arms", "summarize", "updates_to_reach", "value_at"]  # fmt: skip
