import logging
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.transforms import Compose, MapLabelValued

from autolr_monai.data import BoxSmoothd, CheckImageLabeld, ClassIndexd, load_datalist
from autolr_monai.data.totalseg import totalseg_label_mapping
from tests.conftest import REPO

AFFINE = torch.diag(torch.tensor([1.5, 1.5, 2.5, 1.0], dtype=torch.float64))


def _meta(array, name, affine=AFFINE):
    return MetaTensor(torch.as_tensor(array, dtype=torch.float32), affine=affine, meta={"filename_or_obj": name})


def preprocessing(**overrides) -> Compose:
    """The deterministic preprocessing declared in bundle/configs/train.json."""
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundle" / "configs" / "train.json"))
    parser.update({"bundle_root": str(REPO / "bundle"), **overrides})
    return Compose(parser.get_parsed_content("preprocessing"))


def test_check_rejects_shape_mismatch_naming_both_files():
    d = {"image": _meta(np.zeros((1, 8, 8, 8)), "img.nii.gz"), "label": _meta(np.zeros((1, 8, 8, 7)), "lab.nii.gz")}
    with pytest.raises(ValueError, match=r"img\.nii\.gz.*lab\.nii\.gz.*different shapes"):
        CheckImageLabeld()(d)


def test_check_rejects_other_grid():
    shifted = AFFINE.clone()
    shifted[0, 3] = 3.0
    d = {"image": _meta(np.zeros((1, 8, 8, 8)), "img"), "label": _meta(np.zeros((1, 8, 8, 8)), "lab", shifted)}
    with pytest.raises(ValueError, match="same voxel grid"):
        CheckImageLabeld()(d)


def test_check_rejects_unknown_label_values():
    label = np.zeros((1, 8, 8, 8))
    label[0, 1, 1, 1] = 21
    label[0, 2, 2, 2] = 3
    d = {"image": _meta(np.zeros((1, 8, 8, 8)), "img"), "label": _meta(label, "lab.nii.gz")}
    with pytest.raises(ValueError, match=r"lab\.nii\.gz: values \[21\] are not in the label table"):
        CheckImageLabeld(num_classes=21)(d)
    label[0, 1, 1, 1] = 20
    CheckImageLabeld(num_classes=21)(d | {"label": _meta(label, "lab.nii.gz")})


@pytest.mark.parametrize("image,match", [(np.zeros((1, 8, 8)), "3D volume"), (np.full((1, 4, 4, 4), np.nan), "NaN")])
def test_check_rejects_bad_images(image, match):
    with pytest.raises(ValueError, match=match):
        CheckImageLabeld(label_key=None)({"image": _meta(image, "scan.nii.gz")})


@pytest.mark.parametrize("key", ["image", "label"])
def test_check_rejects_several_channels(key):
    """check_scan refuses 4D and RGB files before loading; this is the same rule for data that did not pass it."""
    d = {"image": _meta(np.zeros((1, 8, 8, 8)), "img.nii.gz"), "label": _meta(np.zeros((1, 8, 8, 8)), "lab.nii.gz")}
    d[key] = _meta(np.zeros((3, 8, 8, 8)), "ct4d.nii.gz")
    with pytest.raises(ValueError, match=r"ct4d\.nii\.gz: 3 channels of shape \(8, 8, 8\) \(a 4D volume or an RGB "
                                         r"image\?\); expected one 3D volume"):  # fmt: skip
        CheckImageLabeld()(d)


RNG = np.random.default_rng(0)


@pytest.mark.parametrize(
    "image,said",
    [
        (RNG.integers(0, 4096, (1, 16, 16, 16)), r"no voxel below -200 HU \(values 0 to 4095\), though air is about "
                                                  r"-1000 HU: raw stored values without their rescale"),
        (RNG.integers(0, 5, (1, 16, 16, 16)), r"only 5 distinct value\(s\), small non-negative integers \[0, 1, 2, 3, 4\]: "
                                               r"a label map passed as the CT image\?"),
        (np.concatenate([np.full((1, 8, 16, 16), -1000.0), np.full((1, 8, 16, 16), 1e6)], 1),
         r"values from -1000 to 1e\+06 HU, far outside the CT range"),
    ],
    ids=["raw-stored-values", "label-map", "far-outside"],
)
def test_implausible_ct_intensities_are_warned_naming_the_file(caplog, image, said):
    with caplog.at_level(logging.WARNING, logger="autolr_monai.data"):
        CheckImageLabeld(label_key=None)({"image": _meta(image, "/data/ct.nii.gz")})
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and re.fullmatch(rf"/data/ct\.nii\.gz: {said}.*", warned[0]), warned


def _intensity_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.funcName == "_say_implausible_intensities"]


def test_the_phantoms_intensities_raise_no_warning(tiny_datalist, caplog):
    steps = preprocessing().transforms
    load_and_check = Compose(steps[: next(i for i, t in enumerate(steps) if isinstance(t, CheckImageLabeld)) + 1])
    with caplog.at_level(logging.WARNING, logger="autolr_monai.data"):
        for key in ("training", "validation", "test"):
            for entry in load_datalist(tiny_datalist, key):
                load_and_check({"image": entry["image"], "label": entry["label"]})
    assert _intensity_warnings(caplog) == []


def test_box_smooth_matches_pooling_and_class_index():
    torch.manual_seed(0)
    image = _meta(torch.randn(1, 9, 10, 11), "img")
    label = _meta(torch.randint(0, 4, (1, 9, 10, 11)), "lab")
    d = ClassIndexd(num_classes=5)(BoxSmoothd()({"image": image, "label": label}))
    expected = F.avg_pool3d(F.pad(image.as_tensor()[None], (1,) * 6, mode="replicate"), 3, stride=1)[0]
    assert torch.allclose(d["image_smooth"], expected, atol=1e-6)
    offsets, order, flat = d["class_index_offsets"], d["class_index_order"], label.reshape(-1).numpy()
    assert offsets[-1] == flat.size and offsets[5] == offsets[4]  # class 4 absent
    for k in range(4):
        members = order[offsets[k] : offsets[k + 1]]
        assert (flat[members] == k).all() and len(members) == (flat == k).sum()


def test_preprocessing_geometry_on_real_ct(shared_data: Path, tmp_path: Path, caplog):
    source = nib.load(shared_data / "ct.nii.gz")
    label_file = _converted_label(shared_data, "labels_totalseg.nii.gz", tmp_path / "label.nii.gz")
    with caplog.at_level(logging.WARNING, logger="autolr_monai.data"):
        d = preprocessing()({"image": str(shared_data / "ct.nii.gz"), "label": str(label_file)})
    assert _intensity_warnings(caplog) == []  # plausible CT intensities
    image, label = d["image"], d["label"]
    assert nib.aff2axcodes(image.affine.numpy()) == ("R", "A", "S")
    assert np.allclose(np.linalg.norm(image.affine.numpy()[:3, :3], axis=0), [1.0, 1.0, 1.5])
    extent_in = np.array(source.shape) * np.array(source.header.get_zooms())
    extent_out = np.array(image.shape[1:]) * np.array([1.0, 1.0, 1.5])
    assert np.all(np.abs(extent_out - extent_in) <= 3.0)  # same field of view, to a voxel
    assert float(image.max()) == pytest.approx(1000 / 218) and float(image.min()) == pytest.approx(-1000 / 218)
    hu = np.asarray(source.dataobj)
    assert float(image.mean()) == pytest.approx(float(np.clip(hu, -1000, 1000).mean() / 218), abs=0.05)
    assert label.dtype == torch.uint8 and label.shape == image.shape
    assert set(torch.unique(label).tolist()) >= {0, 1, 2, 3, 4}  # liver, spleen, kidneys survive resampling


def _converted_label(shared_data: Path, name: str, out: Path) -> Path:
    """TotalSegmentator labels mapped to the label table, written to ``out``."""
    orig, target = totalseg_label_mapping(str(shared_data / "totalseg_label_names.json"))
    source = nib.load(shared_data / name)
    mapped = MapLabelValued("l", orig, target)({"l": np.asarray(source.dataobj)})["l"].astype(np.uint8)
    nib.save(nib.Nifti1Image(mapped, source.affine), out)
    return out


def _root_cause(error: BaseException) -> BaseException:
    """MONAI's ``Compose`` re-raises a transform's error as the cause of a RuntimeError naming the transform."""
    while error.__cause__ is not None:
        error = error.__cause__
    return error


def test_raw_totalseg_labels_are_rejected_with_the_file_name(shared_data: Path):
    with pytest.raises(RuntimeError) as info:
        preprocessing()({"image": str(shared_data / "ct.nii.gz"), "label": str(shared_data / "labels_totalseg.nii.gz")})
    cause = _root_cause(info.value)
    assert isinstance(cause, ValueError)
    assert "labels_totalseg.nii.gz" in str(cause) and "not in the label table" in str(cause)


def test_dicom_series_loads_through_the_same_pipeline(shared_data: Path, tmp_path: Path, caplog):
    label = _converted_label(shared_data, "dicom_labels_totalseg.nii.gz", tmp_path / "dicom_label.nii.gz")
    with caplog.at_level(logging.WARNING, logger="autolr_monai.data"):
        d = preprocessing()({"image": str(shared_data / "dicom_ct"), "label": str(label)})
    assert _intensity_warnings(caplog) == []  # plausible CT intensities
    image = d["image"]
    assert nib.aff2axcodes(image.affine.numpy()) == ("R", "A", "S")
    assert np.allclose(np.linalg.norm(image.affine.numpy()[:3, :3], axis=0), [1.0, 1.0, 1.5])
    # 20 slices of 512 x 512 at 0.977 x 0.977 x 2.0 mm
    assert np.allclose(np.array(image.shape[1:]) * [1.0, 1.0, 1.5], [500, 500, 39], atol=3.0)
    assert d["label"].shape == image.shape
    liver = d["label"][0] == 1
    assert liver.sum() > 1000
    assert float(image[0][liver].mean()) * 218 == pytest.approx(100, abs=60)  # liver HU


def test_a_scan_stored_in_another_orientation_is_reoriented_and_said(tmp_path, caplog):
    import logging

    from monai.transforms import EnsureChannelFirstd, LoadImaged, Orientationd

    load = Compose([LoadImaged("image", reader="ITKReader", image_only=True), EnsureChannelFirstd("image"),
                    Orientationd("image", axcodes="RAS"), CheckImageLabeld(label_key=None)])  # fmt: skip
    for name, affine in (("lps.nii.gz", np.diag([-1.0, -1.0, 1.0, 1.0])), ("ras.nii.gz", np.eye(4))):
        nib.save(nib.Nifti1Image(np.zeros((5, 4, 3), np.int16), affine), str(tmp_path / name))
    with caplog.at_level(logging.INFO, logger="autolr_monai.data"):
        out = load({"image": str(tmp_path / "lps.nii.gz")})
        load({"image": str(tmp_path / "ras.nii.gz")})
    assert tuple(out["image"].shape) == (1, 5, 4, 3)
    said = [r.getMessage() for r in caplog.records if "reoriented" in r.getMessage()]
    assert len(said) == 1 and said[0].endswith("lps.nii.gz: stored in LPS orientation, reoriented to RAS for the network")
