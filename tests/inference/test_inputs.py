"""Finding the scans to segment, and the clear errors for inputs that are not."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from autolr_monai.inference import find_scans
from autolr_monai.inference.marks import MANUFACTURER, SERIES_DESCRIPTION
from autolr_monai.inference.inputs import written_by_autolr
from tests.inference.earlier_run import nifti, nifti_output, seg_header


def _nifti(path: Path, shape=(8, 9, 10)) -> Path:
    nib.save(nib.Nifti1Image(np.zeros(shape, np.int16), np.diag([2.0, 2.0, 3.0, 1.0])), path)
    return path


def test_one_file_a_folder_and_a_datalist(tmp_path):
    a, b = _nifti(tmp_path / "a.nii.gz"), _nifti(tmp_path / "b.nii")
    assert find_scans(str(a)) == [{"image": str(a)}]
    assert find_scans(str(tmp_path)) == [{"image": str(a)}, {"image": str(b)}]
    datalist = tmp_path / "list.json"
    datalist.write_text(json.dumps({"test": [{"image": "b.nii"}]}))
    assert find_scans(str(datalist)) == [{"image": str(b)}]
    assert find_scans(str(datalist), datalist_key="test") == find_scans(str(datalist))


def test_folder_entries_that_are_not_scans_are_named_in_a_warning(tmp_path, caplog):
    _nifti(tmp_path / "a.nii.gz")
    (tmp_path / "notes.txt").write_text("not an image")
    with caplog.at_level(logging.WARNING, logger="autolr_monai.inference"):
        assert len(find_scans(str(tmp_path))) == 1
    assert "notes.txt" in caplog.text


@pytest.mark.parametrize(
    "make,error,message",
    [
        (lambda d: d / "missing.nii.gz", FileNotFoundError, "does not exist"),
        (lambda d: d, ValueError, "is empty"),
        (lambda d: (d / "notes.txt").write_text("x") and d / "notes.txt", ValueError, "not a NIfTI file"),
        (lambda d: (d / "broken.nii.gz").write_bytes(b"\x1f\x8b not a volume") and d / "broken.nii.gz",
         ValueError, "not a readable image"),
        (lambda d: _nifti(d / "slice.nii.gz", (64, 64)), ValueError, "2D image"),
        (lambda d: _nifti(d / "slice.nii.gz", (64, 64, 1)), ValueError, "2D image"),
        (lambda d: ((d / "docs").mkdir(), (d / "docs" / "a.txt").write_text("x")) and d, ValueError, "no NIfTI files"),
    ],
    ids=["missing", "empty-folder", "text-file", "corrupt-nifti", "2d", "2d-one-slice", "no-scans-in-folder"],
)
def test_bad_inputs_name_the_path_and_the_problem(tmp_path, make, error, message):
    path = make(tmp_path)
    with pytest.raises(error, match=message) as raised:
        find_scans(str(path))
    assert str(path) in str(raised.value)


def test_no_input_says_how_to_pass_one():
    with pytest.raises(ValueError, match="--input"):
        find_scans(None)


def test_real_dicom_series_and_its_single_files(shared_data):
    series = shared_data / "dicom_ct"
    assert find_scans(str(series)) == [{"image": str(series.absolute())}]
    one_file = sorted(series.iterdir())[0]
    with pytest.raises(ValueError, match="single DICOM file"):
        find_scans(str(one_file))


def test_a_folder_of_series_folders(shared_data, tmp_path):
    (tmp_path / "series_a").symlink_to(shared_data / "dicom_ct", target_is_directory=True)
    _nifti(tmp_path / "b.nii.gz")
    assert [Path(s["image"]).name for s in find_scans(str(tmp_path))] == ["b.nii.gz", "series_a"]


def test_dicom_folder_holding_two_series_is_refused(shared_data, tmp_path):
    files = sorted((shared_data / "dicom_ct").iterdir())
    for f in files:
        shutil.copy(f, tmp_path / f.name)
    second = pydicom.uid.generate_uid()
    for f in files[:3]:  # a second series: same slices, another series UID
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID = second
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.save_as(tmp_path / f"second_{f.name}")
    with pytest.raises(ValueError, match="holds 2 DICOM series") as raised:
        find_scans(str(tmp_path))
    assert str(tmp_path) in str(raised.value)


def test_a_one_slice_dicom_series_is_a_2d_image(shared_data, tmp_path):
    first = sorted((shared_data / "dicom_ct").iterdir())[0]
    shutil.copy(first, tmp_path / first.name)
    with pytest.raises(ValueError, match="2D image"):
        find_scans(str(tmp_path))


def test_scan_names_keep_dotted_series_folders_and_strip_volume_suffixes(tmp_path):
    from autolr_monai.inference import scan_stem, scans_root
    from autolr_monai.inference.inputs import scan_name

    series = tmp_path / "1.2.840.113619.5"
    series.mkdir()
    assert scan_name(series) == "1.2.840.113619.5"
    assert scan_name(tmp_path / "ct.scan.nii.gz") == "ct.scan" and scan_name(tmp_path / "a.nrrd") == "a"
    scans = [{"image": str(tmp_path / "s1" / "ct.nii.gz")}, {"image": str(tmp_path / "s2" / "ct.nii.gz")}]
    assert scans_root(scans) == str(tmp_path)
    assert [scan_stem(s["image"], tmp_path) for s in scans] == ["s1/ct", "s2/ct"]


def test_two_scans_with_one_output_name_are_refused(tmp_path):
    _nifti(tmp_path / "scan.nii.gz")
    _nifti(tmp_path / "scan.nii")
    with pytest.raises(ValueError, match="would both be written as scan"):
        find_scans(str(tmp_path))


def test_dicomdir_and_other_files_beside_a_series_are_named_in_a_warning(shared_data, tmp_path, caplog):
    for f in sorted((shared_data / "dicom_ct").iterdir()):
        (tmp_path / f.name).symlink_to(f)
    (tmp_path / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM")  # an index, not an image of the series
    (tmp_path / "readme.txt").write_text("export notes")
    with caplog.at_level(logging.WARNING, logger="autolr_monai.inference"):
        assert find_scans(str(tmp_path)) == [{"image": str(tmp_path)}]
    assert "DICOMDIR" in caplog.text and "readme.txt" in caplog.text and "next to its series" in caplog.text


def test_outputs_of_an_earlier_run_in_a_scan_folder_are_skipped_and_named(tmp_path, caplog):
    scan = _nifti(tmp_path / "a.nii.gz")
    for name in ("a_seg.nii.gz", "a_probabilities.nii.gz"):
        nifti_output(tmp_path / name)
    seg_header(tmp_path / "series_seg.dcm")  # a DICOM SEG written next to its series folder
    with caplog.at_level(logging.WARNING, logger="autolr_monai.inference"):
        assert find_scans(str(tmp_path)) == [{"image": str(scan)}]
    assert (f"{tmp_path}: skipping 3 outputs of an earlier inference run (not scans): a_probabilities.nii.gz, "
            "a_seg.nii.gz, series_seg.dcm") in caplog.text  # fmt: skip
    assert find_scans(str(tmp_path / "a_seg.nii.gz")) == [{"image": str(tmp_path / "a_seg.nii.gz")}]  # asked for


def test_a_folder_holding_only_outputs_is_refused(tmp_path, caplog):
    nifti_output(tmp_path / "a_seg.nii.gz")
    with caplog.at_level(logging.WARNING, logger="autolr_monai.inference"):
        with pytest.raises(ValueError, match="holds no NIfTI files"):
            find_scans(str(tmp_path))
    assert "skipping 1 outputs of an earlier inference run (not scans): a_seg.nii.gz" in caplog.text


def test_a_dicom_seg_written_into_a_series_folder_is_refused_by_name(shared_data, tmp_path, caplog):
    series = tmp_path / "abdomen"
    series.mkdir()
    files = sorted((shared_data / "dicom_ct").iterdir())
    for f in files:
        (series / f.name).symlink_to(f)
    nifti_output(series / "abdomen_seg.nii.gz")
    seg = pydicom.dcmread(files[0])  # another series in the folder, as a SEG is
    seg.SeriesInstanceUID, seg.SOPInstanceUID = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    seg.Modality, seg.Manufacturer, seg.SeriesDescription = "SEG", MANUFACTURER, SERIES_DESCRIPTION
    seg.save_as(series / "abdomen_seg.dcm")
    with caplog.at_level(logging.WARNING, logger="autolr_monai.inference"):
        with pytest.raises(ValueError, match=f"^{series}: abdomen_seg.dcm is an output of an earlier inference run "
                                             "written into this DICOM series folder"):  # fmt: skip
            find_scans(str(series))
    (series / "abdomen_seg.dcm").unlink()
    with caplog.at_level(logging.WARNING, logger="autolr_monai.inference"):
        assert find_scans(str(series)) == [{"image": str(series)}]
    assert "skipping 1 outputs of an earlier inference run (not scans): abdomen_seg.nii.gz" in caplog.text


def test_only_files_autolr_wrote_are_its_outputs(tmp_path):
    """The mark of the NIfTI header's ``descrip``, or a DICOM SEG's Manufacturer and SeriesDescription."""
    assert written_by_autolr(nifti_output(tmp_path / "a_seg.nii.gz"))
    assert not written_by_autolr(nifti(tmp_path / "b_seg.nii.gz", "a user's label map"))
    assert not written_by_autolr(nifti(tmp_path / "c_seg.nii.gz", "autolr-monaique"))
    assert written_by_autolr(seg_header(tmp_path / "s_seg.dcm"))
    assert not written_by_autolr(seg_header(tmp_path / "t_seg.dcm", manufacturer="Another Vendor"))
    assert not written_by_autolr(seg_header(tmp_path / "u_seg.dcm", description="Liver (manual)"))
    (tmp_path / "v_seg.dcm").write_text("not DICOM")
    (tmp_path / "w_seg.nii.gz").write_bytes(b"\x1f\x8b not a volume")
    (tmp_path / "x_seg.nii.gz").mkdir()
    assert not any(written_by_autolr(tmp_path / name) for name in ("v_seg.dcm", "w_seg.nii.gz", "x_seg.nii.gz"))


def test_files_named_as_outputs_that_autolr_did_not_write_are_scans(tmp_path, caplog):
    """A user's ground truth ``ct_seg.nii.gz`` (BraTS naming) was skipped as an output, then overwritten."""
    scan, label_map = _nifti(tmp_path / "ct.nii.gz"), nifti(tmp_path / "ct_seg.nii.gz", "ground truth")
    with caplog.at_level(logging.WARNING, logger="autolr_monai.inference"):
        assert find_scans(str(tmp_path)) == [{"image": str(scan)}, {"image": str(label_map)}]
    assert "skipping" not in caplog.text


def test_a_subfolder_holding_only_outputs_is_skipped_and_named(tmp_path, caplog):
    """An earlier run's output_dir inside the input folder: its DICOM SEG made it a series folder."""
    scan = _nifti(tmp_path / "a.nii.gz")
    (tmp_path / "out" / "nested").mkdir(parents=True)
    nifti_output(tmp_path / "out" / "a_seg.nii.gz")
    seg_header(tmp_path / "out" / "s1_seg.dcm")
    nifti_output(tmp_path / "out" / "nested" / "b_seg.nii.gz")
    with caplog.at_level(logging.WARNING, logger="autolr_monai.inference"):
        assert find_scans(str(tmp_path)) == [{"image": str(scan)}]
    assert f"{tmp_path}: skipping 1 outputs of an earlier inference run (not scans): out/" in caplog.text


def test_a_subfolder_holding_files_autolr_did_not_write_is_not_skipped_as_outputs(tmp_path, caplog):
    _nifti(tmp_path / "a.nii.gz")
    (tmp_path / "out").mkdir()
    nifti_output(tmp_path / "out" / "a_seg.nii.gz")
    (tmp_path / "out" / "notes.txt").write_text("the user's")
    with caplog.at_level(logging.WARNING, logger="autolr_monai.inference"):
        assert len(find_scans(str(tmp_path))) == 1
    assert "skipping" not in caplog.text
    assert f"{tmp_path}: ignoring 1 entries that are neither volumes nor DICOM series folders: out/" in caplog.text
