"""Training patches for the dual-path network: cutting both paths' inputs around the drawn centres.

``RandDualPathPatchd`` cuts, around each centre drawn by ``RandErrorWeightedCentresd`` (``isample.py``), the
full-resolution input, the low-resolution input and the label, under one random rotation and spacing jitter
(section 4.1), reading the low-resolution input directly at low resolution from the cached box-smoothed image.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.data.utils import affine_to_spacing
from monai.transforms import MapTransform, MultiSampleTrait, Randomizable

IGNORE_LABEL = 255  # label value of patch voxels outside the volume: no ground truth there


def rotation_matrix(angles_deg: Sequence[float]) -> np.ndarray:
    """Rotation about axes 0, 1 and 2 by the given angles (degrees), applied in that order."""
    matrix = np.eye(3)
    for axis, angle in enumerate(np.deg2rad(angles_deg)):
        c, s = math.cos(angle), math.sin(angle)
        i, j = [a for a in range(3) if a != axis]
        r = np.eye(3)
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        matrix = r @ matrix
    return matrix


def _axis_offsets(start: int, count: int, step: int = 1) -> torch.Tensor:
    """Offsets of a ``count^3`` grid (per axis ``start + step * i``), as an ``(count^3, 3)`` float tensor."""
    axis = start + step * torch.arange(count, dtype=torch.float32)
    return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)


class RandDualPathPatchd(Randomizable, MapTransform, MultiSampleTrait):
    """Cut one training sample per patch centre for ``DualPathResNet3D``: a list of ``len(centres)`` dictionaries.

    Each dictionary holds ``image`` (``(C, S+2h)^3``: the full-resolution input), ``low_key`` (``(C, ceil(S/f)+2l)^3``:
    the low-resolution input, sampled every ``f`` voxels from ``smooth_key``), ``label`` (``(1, S^3)`` uint8, with
    ``IGNORE_LABEL`` where the patch leaves the volume), and the patch centre and class. Geometry follows the
    network: output voxel ``k`` sits at offset ``k - S//2`` from the centre, low-resolution voxel ``j`` at
    ``f (j - l) - S//2``.

    One random rotation (uniform in ``+-rotate_range`` degrees about axes 0, 1, 2) and spacing jitter (uniform in
    ``+-spacing_jitter`` mm per axis, section 4.1) per patch is applied in millimetres, about the centre, to all
    three grids; images are interpolated trilinearly (edges replicated, as the tiled inferer pads), labels by
    nearest neighbour. Written here because MONAI's ``RandAffined`` resamples whole images around their centre and
    cannot produce a strided low-resolution grid consistent with the full-resolution one; only the other keys'
    patches are returned, never copies of the cached volumes.
    """

    def __init__(
        self,
        patch_size: int,
        high_margin: int,
        low_margin: int,
        downsample: int = 4,
        image_key: str = "image",
        smooth_key: str = "image_smooth",
        label_key: str = "label",
        low_key: str = "image_low",
        centres_key: str = "patch_centres",
        classes_key: str = "patch_classes",
        spacing_jitter: float = 0.1,
        rotate_range: Sequence[float] = (10.0, 4.0, 4.0),
    ) -> None:
        if patch_size < 1 or high_margin < 0 or low_margin < 0 or downsample < 1:
            raise ValueError(f"invalid patch geometry: patch_size={patch_size}, high_margin={high_margin}, "
                             f"low_margin={low_margin}, downsample={downsample}")  # fmt: skip
        super().__init__([image_key, smooth_key, label_key])
        self.image_key, self.smooth_key, self.label_key, self.low_key = image_key, smooth_key, label_key, low_key
        self.centres_key, self.classes_key = centres_key, classes_key
        self.patch_size, self.spacing_jitter = patch_size, spacing_jitter
        self.rotate_range = np.asarray(rotate_range, dtype=np.float64)
        half = patch_size // 2
        self.high_size = patch_size + 2 * high_margin
        self.low_size = math.ceil(patch_size / downsample) + 2 * low_margin
        self._high = _axis_offsets(-half - high_margin, self.high_size)
        self._low = _axis_offsets(-downsample * low_margin - half, self.low_size, downsample)
        self._label = _axis_offsets(-half, patch_size)
        self._angles = np.zeros((0, 3))
        self._jitter = np.zeros((0, 3))

    def randomize(self, num_patches: int) -> None:
        self._angles = self.R.uniform(-1.0, 1.0, size=(num_patches, 3)) * self.rotate_range
        self._jitter = self.R.uniform(-self.spacing_jitter, self.spacing_jitter, size=(num_patches, 3))

    def _voxel_maps(self, spacing: np.ndarray) -> torch.Tensor:
        """Per patch, the 3x3 map from grid offsets (target voxels) to volume voxels: diag(1/p) R diag(p + jitter)."""
        maps = [np.diag(1.0 / spacing) @ rotation_matrix(a) @ np.diag(spacing + j) for a, j in zip(self._angles, self._jitter)]
        return torch.as_tensor(np.stack(maps), dtype=torch.float32)

    @staticmethod
    def _positions(offsets: torch.Tensor, centres: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        return centres[:, None, :] + torch.einsum("nij,pj->npi", maps, offsets)  # (patches, points, 3)

    @staticmethod
    def _interpolate(volume: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Trilinear samples of ``volume`` (C, X, Y, Z) at voxel ``positions`` (N, P, 3); edges replicated."""
        size = torch.tensor(volume.shape[1:], dtype=torch.float32)
        grid = (2.0 * positions / (size - 1).clamp(min=1) - 1.0).flip(-1)  # grid_sample wants (z, y, x) order
        out = F.grid_sample(volume[None], grid[None, :, :, None, :], mode="bilinear", padding_mode="border",
                            align_corners=True)  # fmt: skip
        return out[0, :, :, :, 0].permute(1, 0, 2)  # (N, C, P)

    def __call__(self, data: Mapping) -> list[dict]:
        image = torch.as_tensor(data[self.image_key], dtype=torch.float32)
        smooth = torch.as_tensor(data[self.smooth_key], dtype=torch.float32)
        label = torch.as_tensor(data[self.label_key])
        centres_np = np.asarray(data[self.centres_key])
        self.randomize(len(centres_np))
        spacing = np.asarray(affine_to_spacing(data[self.image_key].affine), dtype=np.float64)
        maps = self._voxel_maps(spacing)
        centres = torch.as_tensor(centres_np, dtype=torch.float32)
        n, channels = len(centres_np), image.shape[0]

        high = self._interpolate(image, self._positions(self._high, centres, maps))
        low = self._interpolate(smooth, self._positions(self._low, centres, maps))
        nearest = torch.round(self._positions(self._label, centres, maps)).long()
        size = torch.tensor(label.shape[1:])
        inside = ((nearest >= 0) & (nearest < size)).all(-1)
        clamped = torch.minimum(nearest.clamp(min=0), size - 1)
        labels = label[0][clamped[..., 0], clamped[..., 1], clamped[..., 2]].to(torch.uint8)
        labels[~inside] = IGNORE_LABEL

        s, hs, ls = self.patch_size, self.high_size, self.low_size
        classes = data.get(self.classes_key)
        return [
            {
                self.image_key: high[i].reshape(channels, hs, hs, hs),
                self.low_key: low[i].reshape(channels, ls, ls, ls),
                self.label_key: labels[i].reshape(1, s, s, s),
                self.centres_key: centres_np[i],
                self.classes_key: int(classes[i]) if classes is not None else -1,
            }
            for i in range(n)
        ]
