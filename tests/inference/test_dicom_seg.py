"""DICOM SEG export: layout and geometry against a real CT series, the SNOMED coding, SaveDicomSegd, bad inputs."""

import errno
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import EnsureChannelFirst, LoadImage, MapLabelValue, Orientation

from autolr_monai.data import ScanReader
from autolr_monai.data.labels import LABEL_NAMES, LABEL_VALUES, LABELS
from autolr_monai.data.totalseg import totalseg_label_mapping
from autolr_monai.inference.dicom_seg import (STRUCTURE_CODES, SaveDicomSegd, UnreferenceableSeriesError,
                                              write_dicom_seg)
from tests.conftest import SHARED_DATA, copy_series_with_uids
from tests.dicom_series import VARIANTS, Variant, dciodvfy_errors, write_series

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class Case:
    """The real CT series (with UIDs filled in), loaded as the inference loads it, and its label map on its grid."""

    series_dir: Path
    ct: np.ndarray  # (X, Y, Z) HU
    label: np.ndarray  # (X, Y, Z) label-table values
    affine: np.ndarray  # RAS
    series_uid: str
    sources: dict[str, pydicom.Dataset]  # SOPInstanceUID -> header
    seg_path: Path


def _load(path: Path) -> MetaTensor:
    return EnsureChannelFirst()(LoadImage(reader=ScanReader(), image_only=True)(str(path)))


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Case:
    """Module-scoped (loading and writing take seconds), hence not built on the function-scoped ``shared_data``."""
    if not (SHARED_DATA / "dicom_ct").is_dir():
        pytest.skip(f"real CT DICOM series not found at {SHARED_DATA / 'dicom_ct'} (set AUTOLR_SHARED_DATA)")
    root = tmp_path_factory.mktemp("dicom_seg")
    series_dir = root / "ct_series"
    series_uid = copy_series_with_uids(SHARED_DATA / "dicom_ct", series_dir)
    image = _load(series_dir)
    label = _load(SHARED_DATA / "dicom_labels_totalseg.nii.gz")  # same voxels, but stored with the y axis flipped
    label = Orientation(axcodes="".join(nib.aff2axcodes(image.affine.numpy())), labels=None)(label)
    assert np.allclose(label.affine.numpy(), image.affine.numpy()) and label.shape == image.shape
    orig, target = totalseg_label_mapping(str(SHARED_DATA / "totalseg_label_names.json"))
    label_map = MapLabelValue(orig, target)(label[0].numpy()).astype(np.uint8)
    affine = image.affine.numpy()
    seg_path = write_dicom_seg(label_map, affine, series_dir, root / "out" / "ct_seg.dcm")
    headers = (pydicom.dcmread(path, stop_before_pixels=True) for path in series_dir.iterdir())
    sources = {ds.SOPInstanceUID: ds for ds in headers}
    return Case(series_dir, image[0].numpy(), label_map, affine, series_uid, sources, seg_path)


def _slice_of(ds: pydicom.Dataset, affine: np.ndarray) -> int:
    k = (np.linalg.inv(RAS_TO_LPS @ affine) @ [*map(float, ds.ImagePositionPatient), 1.0])[2]
    assert k == pytest.approx(round(k), abs=1e-3)
    return round(k)


def test_structure_codes_cover_the_label_table():
    structures = {s.name for s in LABELS if s.value != 0}
    assert set(STRUCTURE_CODES) == structures
    for name, code in STRUCTURE_CODES.items():
        assert code.type.scheme_designator == "SCT" and code.type.value.isdigit()
        side = name.rsplit("_", 1)[-1]
        expected = {"right": ("24028007", "Right"), "left": ("7771000", "Left")}.get(side)
        assert (None if code.laterality is None else (code.laterality.value, code.laterality.meaning)) == expected
    assert {STRUCTURE_CODES[n].type.value for n in ("liver", "urinary_bladder", "thyroid_gland")} == {
        "10200004", "89837001", "69748006"
    }  # fmt: skip


def test_frame_k_is_the_transposed_itk_slice(case: Case):
    """The layout the writer relies on: the DICOM pixels of the instance at slice k are ``volume[:, :, k].T``, and
    the label map (brought to the image grid) overlays the organs (liver and spleen at soft-tissue HU)."""
    for path in sorted(case.series_dir.iterdir())[::4]:
        ds = pydicom.dcmread(path)
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        assert np.array_equal(case.ct[:, :, _slice_of(ds, case.affine)].T, hu)
    for organ in ("liver", "spleen"):
        assert 40 < case.ct[case.label == LABEL_VALUES[organ]].mean() < 150


def test_seg_references_the_series_and_holds_every_frame(case: Case):
    seg = hd.seg.segread(case.seg_path)
    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    assert seg.SeriesDescription == "autolr-monai segmentation" and seg.Manufacturer == "autolr-monai"
    assert seg.SeriesInstanceUID != case.series_uid and seg.SOPInstanceUID not in case.sources
    referenced = seg.ReferencedSeriesSequence
    assert [item.SeriesInstanceUID for item in referenced] == [case.series_uid]
    assert {item.ReferencedSOPInstanceUID for item in referenced[0].ReferencedInstanceSequence} == set(case.sources)

    present = [int(v) for v in np.unique(case.label) if v != 0]
    assert len(present) >= 4  # liver, spleen, aorta, pancreas, ... in these 20 slices
    segments = {s.SegmentNumber: s for s in seg.SegmentSequence}
    assert [segments[n].SegmentLabel for n in sorted(segments)] == [LABEL_NAMES[v] for v in present]
    for segment in segments.values():
        code = STRUCTURE_CODES[segment.SegmentLabel]
        assert segment.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "91723000"
        property_type = segment.SegmentedPropertyTypeCodeSequence[0]
        assert property_type.CodeValue == code.type.value
        modifiers = [m.CodeValue for m in property_type.get("SegmentedPropertyTypeModifierCodeSequence", [])]
        assert modifiers == ([] if code.laterality is None else [code.laterality.value])
        assert segment.SegmentAlgorithmType == "AUTOMATIC"
        algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
        assert algorithm.AlgorithmName == "autolr-monai DualPathResNet3D" and algorithm.AlgorithmVersion
        assert algorithm.AlgorithmFamilyCodeSequence[0].CodeValue == "123110"

    uids = list(case.sources)
    pixels = seg.get_pixels_by_source_instance(uids, assert_missing_frames_are_empty=True)
    assert pixels.shape == (len(uids), 512, 512, len(present))
    for i, uid in enumerate(uids):
        k = _slice_of(case.sources[uid], case.affine)
        for n, value in enumerate(present):
            assert np.array_equal(pixels[i, :, :, n], case.label[:, :, k].T == value), (uid, LABEL_NAMES[value])

    for frame in seg.PerFrameFunctionalGroupsSequence:
        uid = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        position = frame.PlanePositionSequence[0].ImagePositionPatient
        assert np.allclose([float(v) for v in position], [float(v) for v in case.sources[uid].ImagePositionPatient])


def test_seg_volume_from_highdicom_matches_the_label_map_grid(case: Case):
    """highdicom's own geometry readback, reoriented to the label map's axes, is the label map on its affine."""
    seg = hd.seg.segread(case.seg_path)
    volume = seg.get_volume(combine_segments=True).to_patient_orientation("LPS")
    assert np.allclose(volume.affine, RAS_TO_LPS @ case.affine, atol=1e-4)
    to_value = np.zeros(len(seg.SegmentSequence) + 1, dtype=np.uint8)
    for segment in seg.SegmentSequence:
        to_value[segment.SegmentNumber] = LABEL_VALUES[segment.SegmentLabel]
    assert np.array_equal(to_value[volume.array], case.label)


def test_save_dicom_segd_writes_for_dicom_series_only(case: Case, tmp_path: Path):
    def sample(source: Path) -> dict:
        affine, meta = torch.as_tensor(case.affine), {"filename_or_obj": str(source)}
        image = MetaTensor(torch.as_tensor(case.ct)[None], affine=affine, meta=dict(meta))
        return {"image": image, "pred": MetaTensor(torch.as_tensor(case.label)[None], affine=affine, meta=dict(meta))}

    data = sample(case.series_dir)
    out = SaveDicomSegd(keys="pred", output_dir=tmp_path / "flat")(data)
    assert out["pred"] is data["pred"] and out["image"] is data["image"]
    written = tmp_path / "flat" / "ct_series_seg.dcm"
    assert [p.name for p in (tmp_path / "flat").iterdir()] == [written.name]
    assert hd.seg.segread(written).ReferencedSeriesSequence[0].SeriesInstanceUID == case.series_uid
    assert dciodvfy_errors(written) == []

    SaveDicomSegd(output_dir=tmp_path / "tree", data_root_dir=case.series_dir.parent.parent)(data)
    assert (tmp_path / "tree" / case.series_dir.parent.name / "ct_series_seg.dcm").is_file()

    nifti = sample(SHARED_DATA / "ct.nii.gz")  # a file, not a series: nothing to reference
    SaveDicomSegd(output_dir=tmp_path / "nifti")(nifti)
    assert not (tmp_path / "nifti").exists()


def test_rejects_a_label_map_of_another_shape(case: Case, tmp_path: Path):
    with pytest.raises(ValueError, match=re.escape(str(case.series_dir)) + r".*512 rows x 512 columns.*256 rows"):
        write_dicom_seg(case.label[:, :256], case.affine, case.series_dir, tmp_path / "seg.dcm")
    with pytest.raises(ValueError, match=re.escape(str(case.series_dir)) + r": 20 DICOM images for a label map of 22"):
        write_dicom_seg(np.pad(case.label, [(0, 0), (0, 0), (0, 2)]), case.affine, case.series_dir, tmp_path / "s.dcm")
    assert not list(tmp_path.iterdir())


def _half_slice_shift(affine: np.ndarray) -> np.ndarray:
    shifted = affine.copy()
    shifted[:3, 3] += 0.5 * affine[:3, 2]
    return shifted


def _nifti_affine(affine: np.ndarray) -> np.ndarray:
    """The label map's own affine in dicom_labels_totalseg.nii.gz: the series' grid with its y axis flipped."""
    return nib.load(SHARED_DATA / "dicom_labels_totalseg.nii.gz").affine


@pytest.mark.parametrize(
    "wrong_affine,match",
    [(_half_slice_shift, r"voxel \[0, 0, 0\] lies 1\.00 mm from that voxel"), (_nifti_affine, r"lies \d+\.\d+ mm from")],
)
def test_rejects_a_label_map_off_the_series_grid(case: Case, tmp_path: Path, wrong_affine, match):
    with pytest.raises(ValueError, match=re.escape(f"label map for {case.series_dir}: not on the series' voxel grid as "
                                                   "its instances' positions define it") + ".*" + match):  # fmt: skip
        write_dicom_seg(case.label, wrong_affine(case.affine), case.series_dir, tmp_path / "seg.dcm")


def test_rejects_folders_that_are_not_a_referencable_series(case: Case, tmp_path: Path):
    (tmp_path / "notes.txt").write_text("not a DICOM file")
    with pytest.raises(ValueError, match=re.escape(str(tmp_path)) + ": no readable DICOM series"):
        write_dicom_seg(case.label, case.affine, tmp_path, tmp_path / "seg.dcm")
    blanked = SHARED_DATA / "dicom_ct"  # the de-identified original: its SOP, series and study UIDs are empty
    with pytest.raises(UnreferenceableSeriesError, match=re.escape(str(blanked)) + r": \S+ lacks SOPClassUID, "):
        write_dicom_seg(case.label, case.affine, blanked, tmp_path / "seg.dcm")


def test_save_dicom_segd_warns_and_goes_on_for_a_series_with_blanked_uids(case: Case, tmp_path: Path, caplog):
    """One badly de-identified series must not stop the inference of a whole folder: its NIfTI is written, its SEG
    is not, and the warning says why."""
    blanked = SHARED_DATA / "dicom_ct"
    affine, meta = torch.as_tensor(case.affine), {"filename_or_obj": str(blanked)}
    data = {"image": MetaTensor(torch.zeros(1, 1, 1, 1), meta=dict(meta)),
            "pred": MetaTensor(torch.as_tensor(case.label)[None], affine=affine, meta=dict(meta))}  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="autolr_monai.inference"):
        SaveDicomSegd(output_dir=tmp_path)(data)
    assert not list(tmp_path.iterdir())
    assert "no DICOM SEG written" in caplog.text and "lacks SOPClassUID" in caplog.text and str(blanked) in caplog.text


@pytest.mark.parametrize(
    "label_map,match",
    [
        (np.zeros((4, 4)), r"expected shape \(X, Y, Z\) or \(1, X, Y, Z\), got \(4, 4\)"),
        (np.full((4, 4, 4), 0.5), "fractional values"),
        (np.full((1, 4, 4, 4), 25), r"values \[25\] are not in the label table"),
    ],
)
def test_rejects_label_maps_that_are_not_label_table_values(tmp_path: Path, label_map, match):
    with pytest.raises(ValueError, match=re.escape(f"label map for {tmp_path}: ") + ".*" + match):
        write_dicom_seg(label_map, np.eye(4), tmp_path, tmp_path / "seg.dcm")


def test_all_background_writes_nothing_and_warns(case: Case, tmp_path: Path, caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING, logger="autolr_monai.inference"):
        result = write_dicom_seg(np.zeros_like(case.label), case.affine, case.series_dir, tmp_path / "seg.dcm")
    assert result is None and not list(tmp_path.iterdir())
    assert str(case.series_dir) in caplog.text and "no structure" in caplog.text


def test_the_seg_of_the_real_series_passes_the_dicom_validator(case: Case):
    assert dciodvfy_errors(case.seg_path) == []


def _organs(hu: np.ndarray) -> np.ndarray:
    """A label map that follows the pixels: soft tissue 'liver', dense tissue 'kidney_left' (a coded laterality)."""
    labels = np.zeros(hu.shape, dtype=np.uint8)
    labels[(hu > 20) & (hu <= 100)] = LABEL_VALUES["liver"]
    labels[hu > 150] = LABEL_VALUES["kidney_left"]
    return labels


@pytest.mark.parametrize("variant", VARIANTS, ids=[v.name for v in VARIANTS])
def test_every_layout_gets_a_seg_whose_frames_are_its_instances(example_volume, tmp_path, variant: Variant):
    """Each frame holds the segments of its own source instance at that instance's position, whatever the slice
    order, orientation, patient position or SpacingBetweenSlices; and the validator finds no error."""
    folder = tmp_path / variant.name
    files = write_series(folder, example_volume, variant)
    image = _load(folder)
    seg_path = write_dicom_seg(_organs(image[0].numpy()), image.affine.numpy(), folder, tmp_path / "seg.dcm")
    seg = hd.seg.segread(seg_path)
    sources = {ds.SOPInstanceUID: ds for ds in (pydicom.dcmread(f) for f in files)}
    segments = [s.SegmentLabel for s in sorted(seg.SegmentSequence, key=lambda s: s.SegmentNumber)]
    assert segments == ["liver", "kidney_left"]
    pixels = seg.get_pixels_by_source_instance(list(sources), assert_missing_frames_are_empty=True)
    for i, ds in enumerate(sources.values()):
        expected = _organs(ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept))
        for n, name in enumerate(segments):
            assert np.array_equal(pixels[i, :, :, n], expected == LABEL_VALUES[name]), (ds.InstanceNumber, name)
    for frame in seg.PerFrameFunctionalGroupsSequence:
        uid = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        assert np.allclose([float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient],
                           [float(v) for v in sources[uid].ImagePositionPatient])  # fmt: skip
    assert dciodvfy_errors(seg_path) == []


def test_a_three_slice_series_with_an_empty_character_set(example_volume, tmp_path):
    """An empty SpecificCharacterSet is legal (the default repertoire); highdicom refused it."""

    def empty_character_set(k: int, ds: pydicom.Dataset) -> None:
        ds.SpecificCharacterSet = ""

    folder = tmp_path / "three"
    files = write_series(folder, example_volume, Variant("three", edit=empty_character_set))
    for path in files[3:]:
        path.unlink()
    assert pydicom.dcmread(files[0]).SpecificCharacterSet == ""
    image = _load(folder)
    seg_path = write_dicom_seg(_organs(image[0].numpy()), image.affine.numpy(), folder, tmp_path / "seg.dcm")
    seg = hd.seg.segread(seg_path)
    assert seg.NumberOfFrames > 0 and "SpecificCharacterSet" not in seg
    assert dciodvfy_errors(seg_path) == []


def test_the_seg_gets_the_users_file_mode_and_is_never_left_partial(case: Case, tmp_path: Path, monkeypatch):
    umask = os.umask(0)
    os.umask(umask)
    assert case.seg_path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600: others may read it

    def full_disk(self, filename, **kwargs):
        Path(filename).write_bytes(b"\0" * 4096)  # a part written, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(hd.seg.Segmentation, "save_as", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_dicom_seg(case.label, case.affine, case.series_dir, tmp_path / "out" / "seg.dcm")
    assert list((tmp_path / "out").iterdir()) == []


def test_a_seg_that_does_not_read_back_is_not_put_in_place(case: Case, tmp_path: Path, monkeypatch):
    """A writer that 'succeeds' with a damaged file (no errno to report): one line naming the file once."""
    from autolr_monai.inference import OutputWriteError

    monkeypatch.setattr(hd.seg.Segmentation, "save_as", lambda self, filename, **kw: Path(filename).write_bytes(b"x"))
    target = tmp_path / "out" / "seg.dcm"
    with pytest.raises(OutputWriteError, match=re.escape(f"{target}: cannot write (the file written does not read "
                                                         "back")) as raised:  # fmt: skip
        write_dicom_seg(case.label, case.affine, case.series_dir, target)
    assert str(raised.value).count(str(target)) == 1 and list(target.parent.iterdir()) == []


def test_a_series_whose_deidentification_deleted_patient_and_study_attributes(example_volume, tmp_path):
    """Anonymisers often delete type 2 attributes instead of emptying them; highdicom failed on the first one."""

    def deleted(k: int, ds: pydicom.Dataset) -> None:
        for name in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                     "AccessionNumber", "StudyID", "ReferringPhysicianName"):  # fmt: skip
            if name in ds:
                delattr(ds, name)

    folder = tmp_path / "deidentified"
    write_series(folder, example_volume, Variant("deidentified", edit=deleted))
    image = _load(folder)
    seg_path = write_dicom_seg(_organs(image[0].numpy()), image.affine.numpy(), folder, tmp_path / "seg.dcm")
    seg = hd.seg.segread(seg_path)
    assert seg.PatientID == "" and seg.StudyDate == "" and seg.NumberOfFrames > 0
    assert dciodvfy_errors(seg_path) == []
