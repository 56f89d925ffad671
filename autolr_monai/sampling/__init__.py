"""Patch sampling: where training patches are centred (Algorithm 2) and how both network paths' inputs are cut."""

from .patches import IGNORE_LABEL, RandClassBalancedCentresd, RandDualPathPatchd

__all__ = ["IGNORE_LABEL", "RandClassBalancedCentresd", "RandDualPathPatchd"]
