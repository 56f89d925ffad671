"""Where inference outputs go and what they must be: one name per scan, the scan's own grid, and a warning when a
label map of a body holds no structure at all."""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Mapping
from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import FolderLayoutBase, MetaTensor
from monai.transforms import MapTransform

from autolr_monai.data.transforms import GRID_TOLERANCE_MM

from .inputs import scan_stem

logger = logging.getLogger("autolr_monai.inference")


class OutputWriteError(OSError):
    """An output file could not be written completely; the message names the file and why."""


def cannot_write(path: str | os.PathLike, error: OSError) -> OutputWriteError:
    """``OutputWriteError`` naming ``path`` and why ``error`` stopped its writing (the errno where there is one)."""
    why = f"{error.strerror}, errno {error.errno}" if error.errno is not None and error.strerror else str(error)
    return OutputWriteError(f"{path}: cannot write ({why})")


class ScanFolderLayout(FolderLayoutBase):
    """Output files ``<output_dir>/<folders below data_root_dir>/<scan name>_<postfix><extension>``, for MONAI's
    ``SaveImaged(folder_layout=...)`` and for ``SaveDicomSegd``.

    MONAI's ``FolderLayout`` cuts the last dotted part of every name (``os.path.splitext``): DICOM series folders
    named by UID (``1.2.840...5``, ``1.2.840...6``) would all be written to one file. Here a scan is named as
    ``find_scans`` names it (``scan_stem``), which it checks to be unique.
    """

    def __init__(self, output_dir: str | os.PathLike, postfix: str, extension: str,
                 data_root_dir: str | os.PathLike | None = None, makedirs: bool = True) -> None:  # fmt: skip
        if not str(output_dir).strip():  # Path("") is the current folder
            raise ValueError("output_dir is empty: pass --output_dir with a folder (one that does not exist yet is "
                             "created)")  # fmt: skip
        self.output_dir, self.postfix, self.extension = Path(output_dir), postfix, extension
        self.data_root_dir, self.makedirs = data_root_dir, makedirs

    def path(self, subject: str | os.PathLike) -> Path:
        """The output file of scan ``subject``, without creating its folder."""
        root = self.data_root_dir if self.data_root_dir is not None else os.path.dirname(os.path.abspath(subject))
        return self.output_dir / f"{scan_stem(subject, root)}_{self.postfix}{self.extension}"

    def filename(self, subject: str | os.PathLike = "scan", idx=None, **kwargs) -> Path:
        path = self.path(subject)
        if self.makedirs:
            path.parent.mkdir(parents=True, exist_ok=True)
        return path


class CheckOriginalGridd(MapTransform):
    """Raise ``ValueError`` naming the scan unless each prediction is on the scan's original grid: the shape and
    affine its reader recorded (``spatial_shape``, ``original_affine``). MONAI's ``Invertd`` leaves a prediction on
    the network's grid with only a warning when it cannot invert it; a label map that does not overlay its scan must
    not be written."""

    def __init__(
        self, keys: KeysCollection = "pred", image_key: str = "image", atol_mm: float = GRID_TOLERANCE_MM
    ) -> None:
        super().__init__(keys)
        self.image_key, self.atol_mm = image_key, atol_mm

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        meta = d[self.image_key].meta if isinstance(d[self.image_key], MetaTensor) else {}
        source = meta.get("filename_or_obj", self.image_key)
        shape = tuple(int(s) for s in np.asarray(meta.get("spatial_shape", ())))
        affine = np.asarray(torch.as_tensor(meta.get("original_affine", np.eye(4))).cpu(), dtype=np.float64)
        for key in self.key_iterator(d):
            pred = d[key]
            pred_affine = np.asarray(pred.affine.cpu(), dtype=np.float64) if isinstance(pred, MetaTensor) else None
            if tuple(pred.shape[1:]) != shape or pred_affine is None or not np.allclose(pred_affine, affine,
                                                                                         atol=self.atol_mm):  # fmt: skip
                raise ValueError(f"{source}: the prediction {key!r} is not on the scan's grid (shape "
                                 f"{tuple(pred.shape[1:])} vs {shape}, affine\n{pred_affine}\nvs\n{affine}); "
                                 "the inversion of the preprocessing failed")  # fmt: skip
        return d


class CheckForegroundd(MapTransform):
    """Log a warning naming the scan when a label map holds no structure although a good share of the scan is body
    tissue: weights that predict background everywhere (trained for other data, a broken training) or a scan not
    in Hounsfield units would otherwise go by as a plain, empty result.

    Runs on the network's grid, before the inversion: ``data[image_key]`` is the image as the preprocessing leaves
    it, ``HU / hu_scale`` (``ScaleIntensityRanged`` of ``inference.json``), and each key a label map (integer
    values, background 0). Returns the data unchanged.

    Args:
        hu_scale: the preprocessing's divisor of Hounsfield units.
        tissue_hu: voxels above this are body tissue (-500 HU: above lung, below fat).
        min_tissue_fraction: the share of body-tissue voxels from which an all-background label map is a warning.
    """

    def __init__(self, keys: KeysCollection = "pred", image_key: str = "image", hu_scale: float = 1.0,
                 tissue_hu: float = -500.0, min_tissue_fraction: float = 0.1) -> None:  # fmt: skip
        super().__init__(keys)
        self.image_key, self.hu_scale = image_key, hu_scale
        self.tissue_hu, self.min_tissue_fraction = tissue_hu, min_tissue_fraction

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        image = d[self.image_key]
        for key in self.key_iterator(d):
            if torch.as_tensor(d[key]).any():
                continue
            tissue = float((torch.as_tensor(image) > self.tissue_hu / self.hu_scale).float().mean())
            if tissue >= self.min_tissue_fraction:
                source = getattr(image, "meta", {}).get("filename_or_obj", self.image_key)
                logger.warning("%s: the label map holds no structure (all background) although %.0f%% of the scan's "
                               "voxels are body tissue (above %g HU): are the weights trained for such scans, and is "
                               "the scan in Hounsfield units?", source, 100 * tissue, self.tissue_hu)  # fmt: skip
        return d
