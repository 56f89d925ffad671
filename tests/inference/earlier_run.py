"""Files as an earlier inference run wrote them (marked as autolr-monai's), and as a user might name theirs."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.uid import ExplicitVRLittleEndian, SegmentationStorage, generate_uid

from autolr_monai.inference.marks import MANUFACTURER, SERIES_DESCRIPTION
from autolr_monai.inference.marks import NIFTI_MARK


def nifti(path: Path, descrip: str = "", shape=(8, 9, 10)) -> Path:
    """A NIfTI volume whose header's ``descrip`` is ``descrip``: a user's own file unless it carries the mark."""
    image = nib.Nifti1Image(np.zeros(shape, np.uint8), np.diag([2.0, 2.0, 3.0, 1.0]))
    image.header["descrip"] = descrip
    nib.save(image, path)
    return path


def nifti_output(path: Path) -> Path:
    """A label map as ``SaveNiftid`` marks it."""
    return nifti(path, f"{NIFTI_MARK} 0.1.0 seg")


def seg_header(path: Path, manufacturer: str = MANUFACTURER, description: str = SERIES_DESCRIPTION) -> Path:
    """A DICOM SEG file (header only) with the Manufacturer and SeriesDescription ``write_dicom_seg`` gives it."""
    ds = pydicom.Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = SegmentationStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.Modality, ds.Manufacturer, ds.SeriesDescription = "SEG", manufacturer, description
    ds.save_as(path, enforce_file_format=True)
    return path
