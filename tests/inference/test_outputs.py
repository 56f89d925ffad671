"""Output names, the check that a prediction is on its scan's grid, and the warning for an empty one."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Spacingd

from autolr_monai.inference import CheckForegroundd, CheckOriginalGridd, ScanFolderLayout


def test_layout_names_scans_as_find_scans_does(tmp_path):
    layout = ScanFolderLayout(tmp_path / "out", "seg", ".nii.gz", data_root_dir=tmp_path / "in")
    assert layout.filename(subject=str(tmp_path / "in" / "1.2.840.5")) == tmp_path / "out" / "1.2.840.5_seg.nii.gz"
    assert layout.filename(subject=str(tmp_path / "in" / "1.2.840.6")) == tmp_path / "out" / "1.2.840.6_seg.nii.gz"
    nested = layout.filename(subject=str(tmp_path / "in" / "s1" / "ct.nii.gz"))
    assert nested == tmp_path / "out" / "s1" / "ct_seg.nii.gz" and nested.parent.is_dir()
    flat = ScanFolderLayout(tmp_path / "o", "seg", ".dcm").filename(subject=str(tmp_path / "x" / "series.7"))
    assert flat == tmp_path / "o" / "series.7_seg.dcm"


@pytest.mark.parametrize("output_dir", ["", "  "])
def test_an_empty_output_dir_is_refused(output_dir):
    """``--output_dir ""`` wrote into the current folder (``Path("")`` is ``.``)."""
    with pytest.raises(ValueError, match="^output_dir is empty: pass --output_dir with a folder"):
        ScanFolderLayout(output_dir, "seg", ".nii.gz")


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


def _scan_and_labels(tissue_fraction: float, labels: int) -> dict:
    """A preprocessed scan (HU / 218, as ``inference.json`` scales it) with ``tissue_fraction`` of its voxels at
    40 HU, the rest air, and a label map holding ``labels`` at one voxel, else background."""
    image = torch.full((1, 10, 10, 10), -1000 / 218.0)
    image.view(-1)[: int(tissue_fraction * 1000)] = 40 / 218.0
    pred = torch.zeros(1, 10, 10, 10, dtype=torch.uint8)
    pred[0, 5, 5, 5] = labels
    return {"image": MetaTensor(image, meta={"filename_or_obj": "/data/ct.nii.gz"}), "pred": pred}


@pytest.mark.parametrize("tissue,labels,warned", [(0.3, 0, True), (0.3, 4, False), (0.02, 0, False)],
                         ids=["all-background-body", "some-structure", "all-background-air"])  # fmt: skip
def test_an_all_background_label_map_of_a_body_is_a_warning_naming_the_scan(caplog, tissue, labels, warned):
    data = _scan_and_labels(tissue, labels)
    with caplog.at_level(logging.WARNING, logger="autolr_monai.inference"):
        assert CheckForegroundd("pred", hu_scale=218.0)(data)["pred"] is data["pred"]
    expected = ("/data/ct.nii.gz: the label map holds no structure (all background) although 30% of the scan's "
                "voxels are body tissue (above -500 HU)")  # fmt: skip
    assert (expected in caplog.text) == warned and (caplog.text != "") == warned
