"""Voxel grids: DICOM's and ITK's LPS world against MONAI's and NIfTI's RAS, and how far apart two affines place
one volume."""

from __future__ import annotations

import numpy as np

#: LPS (DICOM, ITK) to RAS (NIfTI, MONAI) world coordinates, and back (its own inverse).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def corner_offsets_mm(a: np.ndarray, b: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The 8 corner voxels of a volume of ``shape`` (8 x 3) and how far apart (mm) the voxel-to-world affines ``a``
    and ``b`` place each: the largest is how far the two grids disagree anywhere in the volume."""
    corners = np.array([[i, j, k] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)])
    homogeneous = np.c_[corners, np.ones(len(corners))].T
    return corners, np.linalg.norm(((np.asarray(a) - np.asarray(b)) @ homogeneous)[:3], axis=0)
