"""DICOM series geometry: every layout clinics write is read where the patient is (checked against each instance's
ImagePositionPatient and pixels); what no regular voxel grid can hold is refused, naming the slice at fault."""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import EnsureChannelFirst, LoadImage, Orientation

from autolr_monai.data import LoadScand, ScanReader
from autolr_monai.data.checks import check_scan
from autolr_monai.data.dicom import series_geometry
from tests.conftest import REPO
from tests.dicom_series import RAS_TO_LPS, VARIANTS, Variant, write_series


def _read(folder: Path, reader) -> MetaTensor:
    return EnsureChannelFirst()(LoadImage(reader=reader, image_only=True)(str(folder)))


def _canonical(image: MetaTensor) -> tuple[np.ndarray, np.ndarray]:
    ras = Orientation(axcodes="RAS", labels=None)(image)
    return ras[0].numpy(), ras.affine.numpy()


def _truth(volume) -> tuple[np.ndarray, np.ndarray]:
    """The example's voxels in RAS, placed by the positions the builder wrote: what every layout must read as."""
    image = MetaTensor(torch.as_tensor(volume.hu)[None], affine=torch.as_tensor(RAS_TO_LPS @ volume.lps_affine))
    return _canonical(image)


def _hu(ds: pydicom.Dataset) -> np.ndarray:
    return ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


@pytest.mark.parametrize("variant", VARIANTS, ids=[v.name for v in VARIANTS])
def test_every_layout_is_read_where_the_patient_is(example_volume, tmp_path, variant: Variant):
    files = write_series(tmp_path / variant.name, example_volume, variant)
    image = _read(tmp_path / variant.name, ScanReader())
    affine = image.affine.numpy()
    to_voxel = np.linalg.inv(RAS_TO_LPS @ affine)
    for path in files:  # each instance: its pixels at the voxels its position and orientation say
        ds = pydicom.dcmread(path)
        i, j, k = (to_voxel @ [*map(float, ds.ImagePositionPatient), 1.0])[:3]
        assert (i, j) == pytest.approx((0, 0), abs=1e-6) and k == pytest.approx(round(k), abs=1e-6)
        assert np.array_equal(image[0, :, :, round(k)].numpy().T, _hu(ds)), path.name
        row, column = np.array(ds.ImageOrientationPatient[:3], float), np.array(ds.ImageOrientationPatient[3:], float)
        assert np.allclose((RAS_TO_LPS @ affine)[:3, 0], row * float(ds.PixelSpacing[1]))
        assert np.allclose((RAS_TO_LPS @ affine)[:3, 1], column * float(ds.PixelSpacing[0]))
    array, ras_affine = _canonical(image)
    truth, truth_affine = _truth(example_volume)
    assert np.array_equal(array, truth) and np.allclose(ras_affine, truth_affine, atol=1e-6)


def test_itk_alone_places_a_negative_spacing_between_slices_series_upside_down(example_volume, tmp_path):
    """The failure ScanReader exists for, as users met it: ITK takes the sign of SpacingBetweenSlices."""
    variant = next(v for v in VARIANTS if v.name == "negative_spacing_between_slices")
    write_series(tmp_path / "series", example_volume, variant)
    truth, truth_affine = _truth(example_volume)
    itk_array, itk_affine = _canonical(_read(tmp_path / "series", "ITKReader"))
    assert not np.allclose(itk_affine, truth_affine, atol=1.0)
    ours, ours_affine = _canonical(_read(tmp_path / "series", ScanReader()))
    assert np.array_equal(ours, truth) and np.allclose(ours_affine, truth_affine, atol=1e-6)


def test_the_correction_is_said(example_volume, tmp_path, caplog):
    variant = next(v for v in VARIANTS if v.name == "negative_spacing_between_slices")
    write_series(tmp_path / "series", example_volume, variant)
    with caplog.at_level(logging.WARNING, logger="autolr_monai.data"):
        _read(tmp_path / "series", ScanReader())
    assert re.search(r"series: ITK would place the slices \d+\.\d mm away .*SpacingBetweenSlices -2\.0.*placed by "
                     r"the instances' positions: 2\.000 mm steps", caplog.text)  # fmt: skip
    caplog.clear()
    write_series(tmp_path / "plain", example_volume, VARIANTS[0])
    with caplog.at_level(logging.WARNING, logger="autolr_monai.data"):
        _read(tmp_path / "plain", ScanReader())
    assert "ITK would place" not in caplog.text  # nothing to correct, nothing said


def _shear(k: int, ds: pydicom.Dataset) -> None:
    ds.GantryDetectorTilt = 15
    position = [float(v) for v in ds.ImagePositionPatient]
    position[1] += math.tan(math.radians(15)) * (position[2] + 804.5)  # y drifts with z: a 15 degree tilt
    ds.ImagePositionPatient = position


def _uneven(k: int, ds: pydicom.Dataset) -> None:
    """Instance order descending: slice k of the layout is k steps above the lowest; 3 mm, then 4.4 mm steps."""
    position = [float(v) for v in ds.ImagePositionPatient]
    position[2] = -804.5 + (3.0 * k if k <= 10 else 30.0 + 4.4 * (k - 10))
    ds.ImagePositionPatient = position


def _tilted_slice(k: int, ds: pydicom.Dataset) -> None:
    if k == 7:
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, math.cos(0.2), -math.sin(0.2)]


def _without(name: str, at: int):
    def edit(k: int, ds: pydicom.Dataset) -> None:
        if k == at:
            delattr(ds, name)

    return edit


def _same_position_as_the_one_below(k: int, ds: pydicom.Dataset) -> None:
    if k == 5:
        position = [float(v) for v in ds.ImagePositionPatient]
        ds.ImagePositionPatient = [position[0], position[1], position[2] - 2.0]


def _one_row_less(k: int, ds: pydicom.Dataset) -> None:
    if k == 4:
        ds.Rows = ds.Rows - 1
        ds.PixelData = ds.PixelData[: ds.Rows * ds.Columns * 2]


def _other_pixel_spacing(k: int, ds: pydicom.Dataset) -> None:
    if k == 2:
        ds.PixelSpacing = [0.5, 0.5]


@pytest.mark.parametrize(
    "edit,message",
    [
        (_shear, r"the slices are sheared, as in a gantry-tilted acquisition \(GantryDetectorTilt 15(\.0)?\): IM\d+\.dcm lies "
                 r"\d+\.\d+ mm off the slice normal .*a tilt of 15\.0 degrees.*resample"),
        (_uneven, r"the slices are not evenly spaced \(3\.00 mm up to IM\d+\.dcm, then 4\.40 mm\): IM\d+\.dcm lies "
                  r"\d+\.\d+ mm off a regular grid"),
        (_tilted_slice, r"IM\d+\.dcm has ImageOrientationPatient \[.*\], IM\d+\.dcm \[1\.0, 0\.0, 0\.0, 0\.0, 1\.0, "
                        r"0\.0\]: a slice in another orientation"),
        (_without("ImagePositionPatient", 3), r"IM\d+\.dcm: ImagePositionPatient is absent; expected 3 numbers"),
        (_without("PixelSpacing", 0), r"PixelSpacing is absent; expected 2 numbers"),
        (_same_position_as_the_one_below, r"IM\d+\.dcm and IM\d+\.dcm lie at the same position .*duplicated slices"),
        (_other_pixel_spacing, r"IM\d+\.dcm has PixelSpacing \[0\.5, 0\.5\], .*one pixel spacing for the whole series"),
        (_one_row_less, r"the slices of one series \(SeriesInstanceUID [\d.]+\) differ in Rows: (\d+ like IM\d+\.dcm "
                        r"with Rows 4[78](; )?){2}; expected every slice alike"),
    ],
    ids=["gantry-tilt", "uneven-steps", "slice-of-another-orientation", "no-position", "no-pixel-spacing",
         "duplicated-position", "other-pixel-spacing", "slice-of-another-size"],  # fmt: skip
)
def test_what_no_voxel_grid_can_hold_is_refused_naming_the_slice(example_volume, tmp_path, edit, message):
    folder = tmp_path / "series"
    write_series(folder, example_volume, Variant("broken", edit=edit))
    with pytest.raises(ValueError, match=re.escape(str(folder)) + ".*" + message):
        check_scan(folder)  # training (load_datalist) and inference (find_scans) run it first
    with pytest.raises(ValueError, match=message):  # and the pipelines' loader refuses it too, no fallback reader
        LoadScand(keys="image", image_only=True)({"image": str(folder)})


def test_itk_alone_stacks_a_tilted_series_without_a_word(example_volume, tmp_path):
    write_series(tmp_path / "tilted", example_volume, Variant("tilted", edit=_shear))
    assert _read(tmp_path / "tilted", "ITKReader").shape[-1] == 20  # what the refusal above prevents


def test_a_gap_names_the_slice_before_it(example_volume, tmp_path):
    folder = tmp_path / "gapped"
    files = write_series(folder, example_volume, VARIANTS[0])
    files[10].unlink()
    with pytest.raises(ValueError, match=r"gapped: the DICOM series has a gap after the slice at -786\.5 mm "
                                         r"\(IM\d+\.dcm; steps of 2\.00 mm, a jump of 4\.00 mm\): about 1 slice"):  # fmt: skip
        check_scan(folder)


def test_an_enhanced_multiframe_ct_and_a_seg_are_named_for_what_they_are(example_volume, tmp_path):
    files = write_series(tmp_path / "series", example_volume, VARIANTS[0])
    enhanced = tmp_path / "enhanced"
    enhanced.mkdir()
    ds = pydicom.dcmread(files[0])
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.EnhancedCTImageStorage
    ds.NumberOfFrames = 20
    ds.add_new("PixelData", "OW", ds.PixelData * 20)
    ds.save_as(enhanced / "enhanced_ct.dcm")
    with pytest.raises(ValueError, match=r"enhanced: enhanced_ct\.dcm is a multi-frame Enhanced CT Image Storage, "
                                         r"Modality CT with 20 frames in one file.*dcm2niix"):  # fmt: skip
        check_scan(enhanced)

    seg_only = tmp_path / "seg_only"
    seg_only.mkdir()
    ds = pydicom.dcmread(files[0])
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.SegmentationStorage
    ds.Modality = "SEG"
    ds.save_as(seg_only / "seg.dcm")
    with pytest.raises(ValueError, match=r"seg_only: seg\.dcm is a Segmentation Storage, Modality SEG, not a CT "
                                         r"image series"):  # fmt: skip
        check_scan(seg_only)


def test_a_series_of_another_modality_is_warned_about(example_volume, tmp_path, caplog):
    def mr(k: int, ds: pydicom.Dataset) -> None:
        ds.Modality = "MR"

    write_series(tmp_path / "mr", example_volume, Variant("mr", edit=mr))
    with caplog.at_level(logging.WARNING, logger="autolr_monai.data"):
        check_scan(tmp_path / "mr")
    assert "mr: a DICOM series of Modality MR, not CT" in caplog.text
    caplog.clear()
    write_series(tmp_path / "ct", example_volume, VARIANTS[0])
    with caplog.at_level(logging.WARNING, logger="autolr_monai.data"):
        check_scan(tmp_path / "ct")
    assert not caplog.text


def test_the_geometry_ignores_file_names_instance_numbers_and_spacing_between_slices(example_volume, tmp_path):
    reference = series_geometry(Path(write_series(tmp_path / "a", example_volume, VARIANTS[0])[0]).parent)
    other = Variant("b", instances_descending=False, shuffled_names=True, spacing_between="negative")
    geometry = series_geometry(Path(write_series(tmp_path / "b", example_volume, other)[0]).parent)
    assert np.array_equal(geometry.lps_affine, reference.lps_affine) and geometry.step_mm == 2.0
    positions = [float(ds.ImagePositionPatient[2]) for ds in geometry.headers]
    assert positions == sorted(positions) and geometry.shape == (64, 48, 20)


def _load_steps(config: object) -> list[dict]:
    if isinstance(config, dict):
        found = [config] if str(config.get("_target_", "")).endswith(("LoadImaged", "LoadScand")) else []
        return found + [s for v in config.values() for s in _load_steps(v)]
    return [s for v in config for s in _load_steps(v)] if isinstance(config, list) else []


def test_training_evaluation_and_inference_all_load_with_scan_reader():
    for name in ("train.json", "evaluate.json", "inference.json"):
        steps = _load_steps(json.loads((REPO / "bundle" / "configs" / name).read_text()))
        assert steps and all(s["_target_"] == "autolr_monai.data.LoadScand" and "reader" not in s for s in steps), name


def test_files_are_read_exactly_as_itk_reads_them(phantom_scan):
    ours, itk_image = _read(phantom_scan, ScanReader()), _read(phantom_scan, "ITKReader")
    assert np.array_equal(ours.numpy(), itk_image.numpy()) and np.array_equal(ours.affine, itk_image.affine)
    loaded = LoadScand(keys="image", image_only=True)({"image": str(phantom_scan)})["image"]
    assert np.array_equal(loaded.numpy(), itk_image[0].numpy())


def test_positions_rounded_to_a_tenth_of_a_millimetre_still_form_a_grid(example_volume, tmp_path):
    """0.625 mm slices whose positions a scanner wrote with one decimal: up to 0.05 mm (8% of a step) off."""

    def rounded(k: int, ds: pydicom.Dataset) -> None:
        position = [float(v) for v in ds.ImagePositionPatient]
        ds.ImagePositionPatient = [position[0], position[1], round(-804.5 + 0.625 * k, 1)]

    write_series(tmp_path / "thin", example_volume, Variant("thin", edit=rounded))
    geometry = series_geometry(tmp_path / "thin")
    assert geometry.step_mm == pytest.approx(0.625, abs=2e-3)
    assert abs(geometry.lps_affine[2, 3] - -804.5) < 0.06


@pytest.mark.parametrize("which", [0, 10, 19], ids=["first", "middle", "last"])
def test_a_truncated_slice_is_named_wherever_it_lies(example_volume, tmp_path, which):
    """GDCM leaves out a file it cannot parse: at either end of the series no gap shows, and the series was read
    one slice short without a word."""
    files = write_series(tmp_path / "series", example_volume, VARIANTS[0])
    files[which].write_bytes(files[which].read_bytes()[:-3000])
    with pytest.raises(ValueError, match=re.escape(f"series: {files[which].name} cannot be read as DICOM images "
                                                   "(truncated or damaged?)")):  # fmt: skip
        check_scan(tmp_path / "series")


def test_direction_cosines_rounded_short_of_unit_length_do_not_scale_the_grid(example_volume, tmp_path):
    def short(k: int, ds: pydicom.Dataset) -> None:
        ds.ImageOrientationPatient = [0.9995, 0.0, 0.0, 0.0, 0.9995, 0.0]

    write_series(tmp_path / "short", example_volume, Variant("short", edit=short))
    geometry = series_geometry(tmp_path / "short")
    assert np.linalg.norm(geometry.lps_affine[:3, :3], axis=0) == pytest.approx([0.9765625, 0.9765625, 2.0], abs=1e-9)
