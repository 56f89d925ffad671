"""Output names and the check that a prediction is on its scan's grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Spacingd

from autolr_monai.inference import CheckOriginalGridd, ScanFolderLayout


def test_layout_names_scans_as_find_scans_does(tmp_path):
    layout = ScanFolderLayout(tmp_path / "out", "seg", ".nii.gz", data_root_dir=tmp_path / "in")
    assert layout.filename(subject=str(tmp_path / "in" / "1.2.840.5")) == tmp_path / "out" / "1.2.840.5_seg.nii.gz"
    assert layout.filename(subject=str(tmp_path / "in" / "1.2.840.6")) == tmp_path / "out" / "1.2.840.6_seg.nii.gz"
    nested = layout.filename(subject=str(tmp_path / "in" / "s1" / "ct.nii.gz"))
    assert nested == tmp_path / "out" / "s1" / "ct_seg.nii.gz" and nested.parent.is_dir()
    flat = ScanFolderLayout(tmp_path / "o", "seg", ".dcm").filename(subject=str(tmp_path / "x" / "series.7"))
    assert flat == tmp_path / "o" / "series.7_seg.dcm"


def test_a_prediction_off_the_scans_grid_is_not_written(tmp_path):
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((10, 12, 8), np.int16), np.diag([2.0, 2.0, 3.0, 1.0])), tmp_path / "s.nii.gz")
    load = Compose([LoadImaged("image", image_only=True), EnsureChannelFirstd("image")])
    data = load({"image": str(tmp_path / "s.nii.gz")})
    on_grid = dict(data, pred=MetaTensor(torch.zeros(1, 10, 12, 8), affine=data["image"].affine))
    assert CheckOriginalGridd()(on_grid) is not None
    resampled = Spacingd("image", pixdim=(4.0, 4.0, 3.0))(dict(data))
    off_grid = dict(data, pred=MetaTensor(torch.zeros(1, *resampled["image"].shape[1:]),
                                          affine=resampled["image"].affine))  # fmt: skip
    with pytest.raises(ValueError, match="s.nii.gz: the prediction 'pred' is not on the scan's grid"):
        CheckOriginalGridd()(off_grid)
    plain = dict(data, pred=torch.zeros(1, 10, 12, 8))  # no affine at all
    with pytest.raises(ValueError, match="not on the scan's grid"):
        CheckOriginalGridd()(plain)
