"""Deterministic preprocessing steps that MONAI does not provide (all cacheable by ``CacheDataset``).

The rest of the section 4.1 preprocessing is MONAI's own (``LoadImaged``, ``Orientationd``, ``Spacingd``,
``ScaleIntensityRanged``) and is declared in ``bundle/configs/train.json``.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform


logger = logging.getLogger("autolr_monai.data")

#: How far (mm) two affines may differ and still describe one voxel grid (image and label, prediction and scan).
GRID_TOLERANCE_MM = 1e-2


def _source(data: Mapping, key: Hashable) -> str:
    value = data[key]
    meta = value.meta if isinstance(value, MetaTensor) else {}
    return str(meta.get("filename_or_obj", data.get(f"{key}_path", key)))


def _affine(value: torch.Tensor) -> np.ndarray:
    affine = value.affine if isinstance(value, MetaTensor) else torch.eye(4)
    return np.asarray(affine, dtype=np.float64)


def _say_reorientation(image: torch.Tensor, source: str) -> None:
    """Log when ``Orientationd`` turned a scan stored in another orientation (DICOM's LPS, say) to RAS: safe,
    since every output is resampled back onto the scan's own grid, but worth knowing when reading the cache."""
    original = image.meta.get("original_affine") if isinstance(image, MetaTensor) else None
    if original is None:
        return
    codes = "".join(nib.orientations.aff2axcodes(np.asarray(original, dtype=np.float64)))
    if codes != "RAS":
        logger.info("%s: stored in %s orientation, reoriented to RAS for the network", source, codes)


#: A CT with no voxel below this (HU) has no air in it, though air (about -1000 HU) surrounds every patient.
AIR_MAX_HU = -200.0
#: CT values outside these (HU) are no HU at all: the 16-bit range scanners store HU in (extended scales included).
HU_LIMITS = (-32768.0, 32767.0)
#: An image with at most this many distinct values, all non-negative integers, looks like a label map.
LABEL_MAP_MAX_VALUES = 256


def _check_one_channel(value: torch.Tensor, source: str) -> None:
    """Refuse a channel-first volume of several channels (what MONAI makes of a 4D file or an RGB image)."""
    if value.shape[0] != 1:
        raise ValueError(f"{source}: {value.shape[0]} channels of shape {tuple(value.shape[1:])} (a 4D volume or an "
                         "RGB image?); expected one 3D volume")  # fmt: skip


def _say_implausible_intensities(image: torch.Tensor, source: str) -> None:
    """Warn, naming ``source``, when the voxels of a CT do not look like HU: values far outside the HU range, a
    label map, or no air (raw stored values without their rescale, intensities already normalised, not a CT)."""
    values = torch.as_tensor(image)
    low, high = float(values.min()), float(values.max())
    if low < HU_LIMITS[0] or high > HU_LIMITS[1]:
        logger.warning("%s: values from %g to %g HU, far outside the CT range (-1024..3071 HU, %g..%g at most): a "
                       "wrong rescale slope or intercept, or not a CT?", source, low, high, *HU_LIMITS)  # fmt: skip
    elif low > AIR_MAX_HU:
        distinct = torch.unique(values)
        if len(distinct) <= LABEL_MAP_MAX_VALUES and low >= 0 and bool((distinct == distinct.round()).all()):
            shown = str([int(v) for v in distinct[:10].tolist()]) + (" ..." if len(distinct) > 10 else "")
            logger.warning("%s: only %d distinct value(s), small non-negative integers %s: a label map passed as the "
                           "CT image?", source, len(distinct), shown)  # fmt: skip
        else:
            logger.warning("%s: no voxel below %g HU (values %g to %g), though air is about -1000 HU: raw stored "
                           "values without their rescale (NIfTI scl_slope/scl_inter, DICOM Rescale Slope/Intercept), "
                           "intensities already normalised, or not a CT?", source, AIR_MAX_HU, low, high)  # fmt: skip


class CheckImageLabeld(MapTransform):
    """Fail early, naming the files, when an image/label pair cannot be trained on.

    Checks: the image is one 3D volume (channel-first: 4 dims, 1 channel) with finite voxels; the label is one
    volume too, with the image's shape and affine (after both went through the same orientation step) and integer
    values in ``[0, num_classes)``.
    A scan stored in another orientation than RAS is fine (``Orientationd`` turned it): that is logged, not refused.
    Image values that do not look like HU (no air, a label map, far outside the HU range) are warned about, not
    refused: the check runs before intensity scaling, on the values as read.
    ``MapTransform`` subclass because MONAI has no pair-consistency check with file names in its errors.
    """

    def __init__(
        self, image_key: str = "image", label_key: str | None = "label", num_classes: int = 21,
        atol_mm: float = GRID_TOLERANCE_MM
    ) -> None:
        super().__init__([image_key] + ([label_key] if label_key else []))
        self.image_key, self.label_key, self.num_classes, self.atol_mm = image_key, label_key, num_classes, atol_mm

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        image, image_file = d[self.image_key], _source(d, self.image_key)
        if image.ndim != 4 or min(image.shape[1:]) < 2:
            raise ValueError(f"{image_file}: expected a 3D volume (channel, x, y, z) with every axis >= 2 voxels, "
                             f"got shape {tuple(image.shape)}")  # fmt: skip
        _check_one_channel(image, image_file)
        if not torch.isfinite(torch.as_tensor(image)).all():
            raise ValueError(f"{image_file}: image contains NaN or infinite voxels")
        _say_implausible_intensities(image, image_file)
        _say_reorientation(image, image_file)
        if self.label_key is None:
            return d
        label, label_file = d[self.label_key], _source(d, self.label_key)
        _check_one_channel(label, label_file)
        if tuple(label.shape[1:]) != tuple(image.shape[1:]):
            raise ValueError(f"image {image_file} and label {label_file} have different shapes: "
                             f"{tuple(image.shape[1:])} vs {tuple(label.shape[1:])}")  # fmt: skip
        if not np.allclose(_affine(image), _affine(label), atol=self.atol_mm):
            raise ValueError(f"image {image_file} and label {label_file} are not on the same voxel grid: affines\n"
                             f"{_affine(image)}\nvs\n{_affine(label)}")  # fmt: skip
        values = torch.unique(torch.as_tensor(label))
        bad = [int(v) if v == int(v) else v for v in values.tolist() if v != int(v) or not 0 <= v < self.num_classes]
        if bad:
            raise ValueError(f"label {label_file}: values {bad[:10]} are not in the label table "
                             f"(expected integers 0..{self.num_classes - 1}; see autolr_monai/data/labels.py)")  # fmt: skip
        return d


class BoxSmoothd(MapTransform):
    """Low-resolution context source: the image averaged over 3x3x3 voxel boxes, written to ``output_key``.

    Sampling it every ``downsample`` voxels gives exactly ``avg_pool3d(kernel=3, stride=downsample)``, the input
    the dual-path network builds for its low path; caching it lets the training pipeline read a low-resolution
    patch directly (``ceil(S/f) + 2 l`` voxels per axis) instead of a full-resolution context 123 voxels wide.
    Edges are replicated, as the tiled inferer pads volumes.
    """

    def __init__(self, keys: KeysCollection = "image", output_key: str = "image_smooth") -> None:
        super().__init__(keys)
        self.output_key = output_key

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            x = torch.as_tensor(d[key], dtype=torch.float32)[None]
            d[self.output_key] = F.avg_pool3d(F.pad(x, (1,) * 6, mode="replicate"), 3, stride=1)[0]
        return d


class ClassIndexd(MapTransform):
    """Voxel indices grouped by class, for drawing patch centres class by class (Algorithm 2, lines 5-6).

    Writes ``{prefix}_order``: int32 flat voxel indices sorted by class (4 bytes per voxel, half of MONAI's
    ``ClassesToIndicesd`` int64 lists, and one contiguous array that per-class cumulative sums can share), and
    ``{prefix}_offsets``: ``offsets[k]:offsets[k+1]`` is the slice of class ``k``.
    """

    def __init__(self, keys: KeysCollection = "label", num_classes: int = 21, prefix: str = "class_index") -> None:
        super().__init__(keys)
        self.num_classes, self.prefix = num_classes, prefix

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            dtype = np.uint8 if self.num_classes <= 256 else np.int32  # uint8: numpy's stable sort is a radix sort
            flat = np.asarray(torch.as_tensor(d[key])[0].reshape(-1)).astype(dtype)
            d[f"{self.prefix}_order"] = np.argsort(flat, kind="stable").astype(np.int32)
            counts = np.bincount(flat, minlength=self.num_classes)[: self.num_classes]
            d[f"{self.prefix}_offsets"] = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return d
