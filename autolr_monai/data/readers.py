"""The image reader of every pipeline (training, evaluation, inference): MONAI's ITK reader, with DICOM series
placed where their instances say they are."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import itk
import numpy as np
from monai.config import KeysCollection, PathLike
from monai.data import ImageReader, ITKReader
from monai.transforms import LoadImaged
from monai.utils import ensure_tuple

from .dicom import series_geometry
from .grids import corner_offsets_mm

logger = logging.getLogger("autolr_monai.data")

#: How far (mm) ITK's own placement of a voxel may differ from the instances' before it is reported as corrected.
PLACEMENT_TOLERANCE_MM = 1e-3


class ScanReader(ITKReader):
    """MONAI's ``ITKReader``, but a DICOM series folder is read in the slice order of ``series_geometry`` and
    placed by its instances' ``ImagePositionPatient``/``ImageOrientationPatient``.

    ITK's series reader takes part of the geometry from ``SpacingBetweenSlices`` (a negative value, as some vendors
    write it, reverses the z axis and moves the volume by its own length) and stacks tilted, unevenly spaced or
    mixed-orientation slices on a regular grid without a word. ``ITKReader`` has no hook for the geometry, hence
    this subclass: ``series_geometry`` refuses what no regular grid can hold, ITK reads the pixels of the sorted
    files, and the image gets the instances' origin, spacing and direction; where ITK's own placement differs,
    a warning says so. Files (NIfTI, NRRD, MHA) are read exactly as by ``ITKReader``.

    Args:
        kwargs: as for ``monai.data.ITKReader``; for a folder, ``series_name`` and ``series_meta`` do not apply (a
            folder must hold one series, ``series_geometry``), the others go to ``itk.imread``.
    """

    def read(self, data: Sequence[PathLike] | PathLike, **kwargs):
        names = ensure_tuple(data)
        images = []
        for name in names:  # a loop, not a comprehension: zero-argument super() needs the method's own frame
            folder = Path(str(name))
            images.append(self._read_series(folder, **kwargs) if folder.is_dir() else super().read(name, **kwargs))
        return images if len(names) > 1 else images[0]

    def _read_series(self, folder: Path, **kwargs):
        geometry = series_geometry(folder)
        image = itk.imread([str(f) for f in geometry.files], **{**self.kwargs, **kwargs})
        lps = geometry.lps_affine
        spacing = np.linalg.norm(lps[:3, :3], axis=0)
        itk_affine = np.eye(4)
        itk_affine[:3, :3] = itk.array_from_matrix(image.GetDirection()) * np.asarray(image.GetSpacing(), dtype=float)
        itk_affine[:3, 3] = np.asarray(image.GetOrigin(), dtype=float)
        offset = float(corner_offsets_mm(itk_affine, lps, geometry.shape)[1].max())
        if offset > PLACEMENT_TOLERANCE_MM:
            spacing_between = geometry.headers[0].get("SpacingBetweenSlices")
            logger.warning("%s: ITK would place the slices %.1f mm away from where their ImagePositionPatient puts "
                           "them (slice axis %s, SpacingBetweenSlices %s); placed by the instances' positions: %.3f mm "
                           "steps along %s", folder, offset, np.round(itk_affine[:3, 2], 3).tolist(), spacing_between,
                           geometry.step_mm, np.round(lps[:3, 2] / spacing[2], 4).tolist())  # fmt: skip
        image.SetOrigin(lps[:3, 3].tolist())
        image.SetSpacing(spacing.tolist())
        image.SetDirection(itk.matrix_from_array(np.ascontiguousarray(lps[:3, :3] / spacing)))
        return image


class LoadScand(LoadImaged):
    """``LoadImaged`` that reads with ``ScanReader`` and nothing else.

    Given a reader, MONAI's ``LoadImage`` still registers every default reader and, when the given one fails, tries
    them in turn: a series ``ScanReader`` refuses (tilted, unevenly spaced) would then be stacked by ``ITKReader``
    or ``PydicomReader`` after all, with only a log line at INFO level. Passing the reader at call time (public
    ``LoadImaged.__call__`` argument) uses it alone, and its error reaches the user.

    Args:
        keys: keys of the items to load.
        kwargs: as for ``monai.transforms.LoadImaged``, without ``reader``.
    """

    def __init__(self, keys: KeysCollection, **kwargs) -> None:
        self.scan_reader = ScanReader()
        super().__init__(keys, reader=self.scan_reader, **kwargs)

    def __call__(self, data, reader: ImageReader | None = None):
        return super().__call__(data, reader=reader or self.scan_reader)
