"""Writing the outputs: atomic and read back, a failed write fails its scan only and then the run, and the output
folder checked before the first scan."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.data import MetaTensor
from monai.transforms import EnsureChannelFirstd, LoadImaged, SaveImaged

from autolr_monai import __version__
from autolr_monai.inference import (OutputWriteError, SaveDicomSegd, SaveNiftid, ScanFolderLayout, ScanOutputs,
                                    WriteFailures, check_output_dir)  # fmt: skip
from autolr_monai.inference.inputs import written_by_autolr
from tests.conftest import mounted_tmpfs
from tests.inference.earlier_run import nifti, nifti_output, seg_header

ENOSPC = f"cannot write (No space left on device, errno {errno.ENOSPC})"


def _scan(folder: Path, name: str = "ct.nii.gz", shape=(10, 12, 8)) -> dict:
    """A loaded scan as the post-processing sees it, with a label map ``pred`` on its grid."""
    folder.mkdir(parents=True, exist_ok=True)
    affine = np.array([[-2.0, 0, 0, 30], [0, 2.0, 0, -4], [0, 0, 3.0, 7], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(np.full(shape, -1000, np.int16), affine), folder / name)
    data = EnsureChannelFirstd("image")(LoadImaged("image", image_only=True)({"image": str(folder / name)}))
    labels = torch.arange(np.prod(shape)).reshape(1, *shape) % 3
    return dict(data, pred=MetaTensor(labels.to(torch.uint8), affine=data["image"].affine, meta=data["image"].meta))


def _saver(out: Path, root: Path, key: str = "pred", postfix: str = "seg", dtype=np.uint8) -> SaveNiftid:
    return SaveNiftid(key, ScanFolderLayout(out, postfix, ".nii.gz", data_root_dir=root), output_dtype=dtype)


def _disk_full(written: int = 4096):
    """A ``nibabel.save`` that writes ``written`` bytes of the file, then fails as on a full disk."""

    def save(image, filename):
        Path(filename).write_bytes(b"\x1f\x8b" + b"\0" * (written - 2))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    return save


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_writes_what_monai_saveimaged_writes(tmp_path):
    data = _scan(tmp_path / "in")
    data["probabilities"] = MetaTensor(torch.rand(21, 10, 12, 8), affine=data["image"].affine, meta=data["image"].meta)
    for key, postfix, dtype in (("pred", "seg", np.uint8), ("probabilities", "probabilities", np.float32)):
        layout = ScanFolderLayout(tmp_path / "monai", postfix, ".nii.gz", tmp_path / "in")
        SaveImaged(key, output_dtype=dtype, resample=False, print_log=False, folder_layout=layout)(data)
        _saver(tmp_path / "ours", tmp_path / "in", key, postfix, dtype)(data)
        theirs, ours = (nib.load(tmp_path / d / f"ct_{postfix}.nii.gz") for d in ("monai", "ours"))
        assert ours.shape == theirs.shape and ours.get_data_dtype() == theirs.get_data_dtype() == dtype
        assert np.array_equal(ours.affine, theirs.affine) and np.array_equal(ours.dataobj, theirs.dataobj)
        assert [k for k in ours.header if ours.header[k].tobytes() != theirs.header[k].tobytes()] == ["descrip"]
    assert _files(tmp_path / "ours") == ["ct_probabilities.nii.gz", "ct_seg.nii.gz"]  # no temporary file left
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "ours" / "ct_seg.nii.gz").stat().st_mode & 0o777 == 0o666 & ~umask


def test_outputs_are_marked_as_written_by_autolr(tmp_path):
    """In the header's ``descrip``, so that a later run tells them from a user's file of the same name."""
    data = _scan(tmp_path / "in")
    data["probabilities"] = MetaTensor(torch.rand(21, 10, 12, 8), affine=data["image"].affine, meta=data["image"].meta)
    for key, postfix, dtype in (("pred", "seg", np.uint8), ("probabilities", "probabilities", np.float32)):
        saver = _saver(tmp_path / "out", tmp_path / "in", key, postfix, dtype)
        written = saver.write(data[key], str(tmp_path / "in" / "ct.nii.gz"))
        assert nib.load(written).header["descrip"].item().decode() == f"autolr-monai {__version__} {postfix}"
        assert written_by_autolr(written)
    SaveImaged("pred", resample=False, print_log=False, folder_layout=ScanFolderLayout(tmp_path / "monai", "seg",
                                                                                       ".nii.gz"))(data)  # fmt: skip
    assert not written_by_autolr(tmp_path / "monai" / "ct_seg.nii.gz")


def test_a_full_disk_names_the_file_and_errno_and_leaves_no_partial_file(tmp_path, monkeypatch):
    data = _scan(tmp_path / "in")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "ct_seg.nii.gz").write_bytes(b"an earlier run's label map")
    monkeypatch.setattr(nib, "save", _disk_full())
    with pytest.raises(OutputWriteError) as raised:
        _saver(tmp_path / "out", tmp_path / "in")(data)
    assert str(raised.value) == f"{tmp_path / 'out' / 'ct_seg.nii.gz'}: {ENOSPC}"
    assert _files(tmp_path / "out") == ["ct_seg.nii.gz"]  # the temporary file is gone, the earlier file intact
    assert (tmp_path / "out" / "ct_seg.nii.gz").read_bytes() == b"an earlier run's label map"


@pytest.mark.parametrize("keep", [0, 4096, -100], ids=["empty", "4096-bytes", "cut-short"])
def test_a_file_that_does_not_read_back_is_not_put_in_place(tmp_path, monkeypatch, keep):
    """A writer that reports success but leaves a truncated file (as ITK does on a full disk)."""
    save = nib.save

    def truncating_save(image, filename):
        save(image, filename)
        size = Path(filename).stat().st_size
        os.truncate(filename, keep if keep >= 0 else size + keep)

    data = _scan(tmp_path / "in", shape=(40, 40, 30))
    random = torch.randint(0, 21, (1, 40, 40, 30), generator=torch.Generator().manual_seed(0))  # not compressible
    data["pred"] = data["pred"].clone().copy_(random)
    monkeypatch.setattr(nib, "save", truncating_save)
    with pytest.raises(OutputWriteError, match=r"ct_seg.nii.gz: cannot write \(the file written does not read back"):
        _saver(tmp_path / "out", tmp_path / "in")(data)
    assert _files(tmp_path / "out") == []


def _seg_saver(out: Path, root: Path) -> SaveDicomSegd:
    return SaveDicomSegd("pred", output_dir=out, data_root_dir=root)


def test_a_failed_write_fails_that_scan_and_the_run_at_its_end(tmp_path, monkeypatch):
    """Scan a's label map and series b's DICOM SEG cannot be written (a full disk); c is written. The run goes on
    to c, then fails with one line naming a and b."""
    import autolr_monai.inference.dicom_seg as dicom_seg

    save, seg = nib.save, dicom_seg.write_dicom_seg

    def nifti(image, filename):
        return _disk_full()(image, filename) if Path(filename).name.startswith(".a_seg") else save(image, filename)

    def dicom(label_map, affine, series_dir, output_path, **kwargs):
        if Path(series_dir).name == "b":  # as save_as fails in write_dicom_seg, which removes its temporary file
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return seg(label_map, affine, series_dir, output_path, **kwargs)

    monkeypatch.setattr(nib, "save", nifti)
    monkeypatch.setattr(dicom_seg, "write_dicom_seg", dicom)
    root, out = tmp_path / "in", tmp_path / "out"
    series = _scan(root, "b.nii.gz")
    (root / "b").mkdir()  # a DICOM series folder, as far as SaveDicomSegd is concerned
    series["image"].meta["filename_or_obj"] = str(root / "b")
    failures = WriteFailures()
    outputs = ScanOutputs([_saver(out, root), _seg_saver(out, root)], failures=failures)
    engine = Engine(lambda engine, data: outputs(data))
    failures.attach(engine)
    with pytest.raises(OutputWriteError) as raised:
        engine.run([_scan(root, "a.nii.gz"), series, _scan(root, "c.nii.gz")])
    message = str(raised.value)
    assert "\n" not in message and message.startswith("2 of 3 scans could not be written completely: ")
    assert f"{root / 'a.nii.gz'} ({out / 'a_seg.nii.gz'}: {ENOSPC})" in message
    assert f"{root / 'b'} ({out / 'b_seg.dcm'}: {ENOSPC})" in message
    assert _files(out) == ["b_seg.nii.gz", "c_seg.nii.gz"]  # a: nothing; b: its label map; c: everything
    assert nib.load(out / "c_seg.nii.gz").shape == (10, 12, 8)


def test_failures_are_logged_at_once_and_cleared_for_the_next_run(tmp_path, monkeypatch, caplog):
    scan = _scan(tmp_path / "in")
    monkeypatch.setattr(nib, "save", _disk_full())
    failures = WriteFailures()
    outputs = ScanOutputs([_saver(tmp_path / "out", tmp_path / "in")], failures=failures)
    engine = Engine(lambda engine, data: outputs(data))
    failures.attach(engine)
    with caplog.at_level(logging.ERROR, logger="autolr_monai.inference"):
        with pytest.raises(OutputWriteError, match="1 of 1 scans"):
            engine.run([scan])
    assert f"{tmp_path / 'in' / 'ct.nii.gz'}: {tmp_path / 'out' / 'ct_seg.nii.gz'}: {ENOSPC}" in caplog.text
    monkeypatch.undo()
    again = Engine(lambda engine, data: outputs(data))
    failures.attach(again)
    again.run([scan])  # the earlier run's failure is not this run's
    assert _files(tmp_path / "out") == ["ct_seg.nii.gz"]


def test_without_a_failure_registry_a_failed_write_stops_the_run(tmp_path, monkeypatch):
    scan = _scan(tmp_path / "in")
    monkeypatch.setattr(nib, "save", _disk_full())
    with pytest.raises(RuntimeError) as raised:  # Compose wraps the transform's error
        ScanOutputs([_saver(tmp_path / "out", tmp_path / "in")])(scan)
    assert isinstance(raised.value.__cause__, OutputWriteError)


def test_errors_other_than_writing_are_not_caught(tmp_path):
    def broken(data):
        raise ValueError("not a write failure")

    failures = WriteFailures()
    with pytest.raises(RuntimeError) as raised:
        ScanOutputs([broken], failures=failures)(_scan(tmp_path / "in"))
    assert isinstance(raised.value.__cause__, ValueError) and not failures.failed


def test_output_dir_that_is_a_file_or_under_one_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=f"^output_dir {tmp_path / 'file'} is a file, not a folder"):
        check_output_dir(tmp_path / "file")
    with pytest.raises(ValueError, match=f"^output_dir {tmp_path / 'file' / 'out'} cannot be created: "
                                         f"{tmp_path / 'file'} is a file"):  # fmt: skip
        check_output_dir(tmp_path / "file" / "out")
    check_output_dir(tmp_path / "new" / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # checked, nothing created


@pytest.fixture
def read_only_folder(tmp_path) -> Path:
    """A read-only tmpfs: root may write into any folder, not into a read-only file system."""
    with mounted_tmpfs(tmp_path / "ro", "ro") as folder:
        yield folder


def test_a_read_only_output_dir_is_refused(read_only_folder):
    with pytest.raises(ValueError, match=f"^output_dir {read_only_folder} is not writable "
                                         r"\(Read-only file system, errno 30\)$"):  # fmt: skip
        check_output_dir(read_only_folder)
    with pytest.raises(ValueError, match=f"^output_dir {read_only_folder / 'out'} cannot be created in "
                                         f"{read_only_folder} " r"\(Read-only file system, errno 30\)$"):  # fmt: skip
        check_output_dir(read_only_folder / "out")


def _outputs(out: Path, root: Path, dicom_seg: bool = True) -> ScanOutputs:
    steps = [_saver(out, root), _saver(out, root, "probabilities", "probabilities", np.float32)]
    return ScanOutputs(steps + ([_seg_saver(out, root)] if dicom_seg else []))


def test_outputs_that_would_overwrite_an_input_are_refused_naming_both(tmp_path):
    (tmp_path / "ct.nii.gz").write_text("x")
    nifti_output(tmp_path / "ct_seg.nii.gz")  # an earlier run's label map, given as a scan
    scans = [{"image": str(tmp_path / "ct.nii.gz")}, {"image": str(tmp_path / "ct_seg.nii.gz")}]
    with pytest.raises(ValueError, match=f"^{tmp_path / 'ct_seg.nii.gz'} would overwrite the input scan "
                                         f"{tmp_path / 'ct_seg.nii.gz'}"):  # fmt: skip
        _outputs(tmp_path, tmp_path).check_outputs(scans)
    _outputs(tmp_path / "out", tmp_path).check_outputs(scans)


def test_outputs_into_an_input_series_folder_are_refused(tmp_path):
    (tmp_path / "series").mkdir()
    scans = [{"image": str(tmp_path / "series")}]
    with pytest.raises(ValueError, match=f"^{tmp_path / 'series' / 'series_seg.nii.gz'} would be written into the "
                                         f"input DICOM series folder {tmp_path / 'series'}"):  # fmt: skip
        _outputs(tmp_path / "series", tmp_path).check_outputs(scans)


def test_an_output_folder_problem_is_found_before_the_first_scan(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        _outputs(tmp_path / "file", tmp_path).check_outputs([{"image": str(tmp_path / "ct.nii.gz")}])


def test_outputs_of_an_earlier_run_are_replaced_with_a_warning(tmp_path, caplog):
    (tmp_path / "series").mkdir()
    (tmp_path / "out").mkdir()
    nifti_output(tmp_path / "out" / "ct_seg.nii.gz")
    seg_header(tmp_path / "out" / "series_seg.dcm")
    (tmp_path / "out" / "ct_seg.dcm").write_text("x")  # not an output of ct.nii.gz, a file: not looked at
    scans = [{"image": str(tmp_path / "ct.nii.gz")}, {"image": str(tmp_path / "series")}]
    with caplog.at_level(logging.WARNING, logger="autolr_monai.inference"):
        _outputs(tmp_path / "out", tmp_path, dicom_seg=True).check_outputs(scans)
    assert f"{tmp_path / 'out'}: replacing 2 files of an earlier run: ct_seg.nii.gz, series_seg.dcm" in caplog.text


@pytest.mark.parametrize("name,make", [("ct_seg.nii.gz", lambda p: nifti(p, "ground truth")),
                                       ("ct_seg.nii.gz", lambda p: p.write_text("notes")),
                                       ("series_seg.dcm", lambda p: seg_header(p, manufacturer="Another Vendor"))],
                         ids=["label-map", "not-an-image", "another-tools-seg"])  # fmt: skip
def test_a_file_autolr_did_not_write_is_never_replaced(tmp_path, name, make):
    """A user's ground truth ``ct_seg.nii.gz`` was replaced by the prediction, with a warning only."""
    (tmp_path / "series").mkdir()
    (tmp_path / "out").mkdir()
    make(tmp_path / "out" / name)
    before = (tmp_path / "out" / name).read_bytes()
    scan = tmp_path / ("series" if name.endswith(".dcm") else "ct.nii.gz")
    scans = [{"image": str(tmp_path / "ct.nii.gz")}, {"image": str(tmp_path / "series")}]
    with pytest.raises(ValueError) as raised:
        _outputs(tmp_path / "out", tmp_path).check_outputs(scans)
    assert str(raised.value) == (f"{scan}: its output would overwrite {tmp_path / 'out' / name}, which autolr-monai "
                                 "did not write (your own label map?): pass an --output_dir elsewhere")  # fmt: skip
    assert (tmp_path / "out" / name).read_bytes() == before


def test_a_users_label_map_among_the_scans_is_refused_as_not_written_by_autolr(tmp_path):
    """``find_scans`` takes a user's ``ct_seg.nii.gz`` for a scan: the refusal says whose file it is."""
    (tmp_path / "ct.nii.gz").write_text("x")
    nifti(tmp_path / "ct_seg.nii.gz", "ground truth")
    scans = [{"image": str(tmp_path / "ct.nii.gz")}, {"image": str(tmp_path / "ct_seg.nii.gz")}]
    with pytest.raises(ValueError, match=f"^{tmp_path / 'ct.nii.gz'}: its output would overwrite "
                                         f"{tmp_path / 'ct_seg.nii.gz'}, which autolr-monai did not "
                                         "write"):  # fmt: skip
        _outputs(tmp_path, tmp_path).check_outputs(scans)
