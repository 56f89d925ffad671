"""Patch sampling: isample's error maps and centre draws (Algorithm 2), and dual-path patch extraction."""

from .error_maps import ErrorMapStore, InitErrorMapd
from .isample import ErrorWeightedImageSampler, RandErrorWeightedCentresd, accepted_mass, algorithm2_rejection
from .patches import IGNORE_LABEL, RandDualPathPatchd
from .refresh import ErrorMapRefresher, ISampleTensorBoard

__all__ = [
    "IGNORE_LABEL", "ErrorMapStore", "InitErrorMapd", "ErrorWeightedImageSampler", "RandErrorWeightedCentresd",
    "RandDualPathPatchd", "ErrorMapRefresher", "ISampleTensorBoard", "accepted_mass", "algorithm2_rejection",
]  # fmt: skip
