"""Per-structure accuracy of one case: Dice and the 95% Hausdorff distance, on the label map's own grid."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch
from monai.data import MetaTensor
from monai.metrics import compute_dice, compute_hausdorff_distance
from monai.transforms import Orientation
from nibabel.orientations import aff2axcodes

from autolr_monai.data.labels import LABELS, Structure
from autolr_monai.data.transforms import GRID_TOLERANCE_MM


def _source(x: torch.Tensor) -> str:
    return str(x.meta.get("filename_or_obj", "?")) if isinstance(x, MetaTensor) else "?"


def _affine(x: torch.Tensor) -> np.ndarray:
    return np.asarray(x.affine.cpu() if isinstance(x, MetaTensor) else np.eye(4), dtype=np.float64)


def on_prediction_grid(label: torch.Tensor, pred: torch.Tensor, atol_mm: float = GRID_TOLERANCE_MM) -> torch.Tensor:
    """``label`` (channel first) on the voxel grid of ``pred``: as it is, or reoriented when it was stored with
    other axis directions. Raises ``ValueError`` naming both files when the grids differ otherwise."""
    if tuple(label.shape) != tuple(pred.shape) or not np.allclose(_affine(label), _affine(pred), atol=atol_mm):
        label = Orientation(axcodes="".join(aff2axcodes(_affine(pred))), labels=None)(label)
    if tuple(label.shape) != tuple(pred.shape) or not np.allclose(_affine(label), _affine(pred), atol=atol_mm):
        raise ValueError(f"label {_source(label)} is not on the grid of its image {_source(pred)}: shape "
                         f"{tuple(label.shape[1:])} vs {tuple(pred.shape[1:])}, affines\n{_affine(label)}\nvs\n"
                         f"{_affine(pred)}")  # fmt: skip
    return label


def voxel_spacing(x: torch.Tensor) -> tuple[float, ...]:
    """Voxel size in mm along each array axis, from the affine."""
    return tuple(float(s) for s in np.linalg.norm(_affine(x)[:3, :3], axis=0))


def structure_metrics(
    pred: torch.Tensor, label: torch.Tensor, spacing: Iterable[float], structures: Iterable[Structure] = LABELS[1:]
) -> dict[str, tuple[float, float]]:
    """``{structure name: (dice, hd95 in mm)}`` between two label maps of the same grid (channel first).

    A structure absent from both is not scored (NaN, NaN). Present in one only: Dice 0 and HD95 infinite (the
    distance to an empty set). Otherwise MONAI's ``compute_dice`` and ``compute_hausdorff_distance`` (95th
    percentile, symmetric, in mm with ``spacing``) on the structure's binary masks, one structure at a time so that
    memory stays at two masks whatever the number of classes.
    """
    pred, label = torch.as_tensor(pred).cpu(), torch.as_tensor(label).cpu()
    spacing = list(spacing)
    scores: dict[str, tuple[float, float]] = {}
    for structure in structures:
        p, g = (pred == structure.value)[None], (label == structure.value)[None]
        in_pred, in_label = bool(p.any()), bool(g.any())
        if not (in_pred or in_label):
            scores[structure.name] = (math.nan, math.nan)
        elif not (in_pred and in_label):
            scores[structure.name] = (0.0, math.inf)
        else:
            dice = compute_dice(p, g, include_background=True, ignore_empty=False)
            hd95 = compute_hausdorff_distance(p, g, include_background=True, percentile=95, spacing=spacing)
            scores[structure.name] = (float(dice), float(hd95))
    return scores
