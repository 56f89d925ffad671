"""Scan checks before loading: what MONAI's readers would fail on deep inside, or read without a word."""

import shutil

import nibabel as nib
import numpy as np
import pytest
from monai.transforms import LoadImage

from autolr_monai.data.checks import check_scan


def test_a_truncated_nifti_is_refused_though_itk_would_read_it(tmp_path):
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(np.arange(40 * 30 * 20, dtype=np.int16).reshape(40, 30, 20), np.eye(4)), str(path))
    check_scan(path)  # complete: fine
    data = path.read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(data[: len(data) // 2])
    LoadImage(reader="ITKReader", image_only=True)(str(cut))  # the silent wrong answer this check prevents
    with pytest.raises(ValueError, match=r"cut\.nii\.gz: truncated or corrupt"):
        check_scan(cut)
    plain = tmp_path / "ct.nii"
    nib.save(nib.load(str(path)), str(plain))
    short = tmp_path / "short.nii"
    short.write_bytes(plain.read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"short\.nii: truncated: .* bytes, its header announces"):
        check_scan(short)
    with pytest.raises(FileNotFoundError, match="nowhere.nii.gz does not exist"):
        check_scan(tmp_path / "nowhere.nii.gz")


def test_dicom_series_with_a_missing_or_repeated_slice(shared_data, tmp_path):
    series = tmp_path / "series"
    shutil.copytree(shared_data / "dicom_ct", series)
    check_scan(series)  # the complete series
    files = sorted(series.iterdir())
    import pydicom

    by_position = sorted(files, key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]))
    gapped = tmp_path / "gapped"
    shutil.copytree(series, gapped)
    (gapped / by_position[len(by_position) // 2].name).unlink()
    with pytest.raises(ValueError, match=r"gapped: the DICOM series has a gap .* about 1 slice\(s\) missing"):
        check_scan(gapped)
