"""`python -m monai.bundle run inference` on the real CT examples: NIfTI and DICOM in, label maps (and DICOM SEG)
out on exactly the input's grid; bad input stops with a message naming it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import LoadImage

from autolr_monai.networks import DualPathResNet3D
from tests.conftest import REPO, TINY_NETWORK, copy_series_with_uids, mounted_tmpfs
from tests.dicom_series import dciodvfy_errors

INFERENCE = REPO / "bundle" / "configs" / "inference.json"
TINY = {"spacing": [6.0, 6.0, 6.0], "inference_tile": 16, "num_workers": 0,
        **{f"network_def#{k}": v for k, v in TINY_NETWORK.items()}}  # fmt: skip


@pytest.fixture(autouse=True)
def short_errors(monkeypatch):
    """Errors as users see them: ``AUTOLR_TRACEBACK`` unset."""
    monkeypatch.delenv("AUTOLR_TRACEBACK", raising=False)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """Random weights (not the zero-initialised residual branches) so that the label map holds several classes."""
    torch.manual_seed(3)
    net = DualPathResNet3D(**TINY_NETWORK)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.3)
    path = tmp_path_factory.mktemp("weights") / "model.pt"
    torch.save(net.state_dict(), path)
    return path


def run_bundle(run_id: str, config_file: str, cwd: Path, *, python: tuple[str, ...] = ("-m", "monai.bundle"),
               **overrides) -> subprocess.CompletedProcess:  # fmt: skip
    """``python -m monai.bundle run <run_id>`` (``python``: what runs MONAI's bundle command line instead)."""
    args = [f"--{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in overrides.items()]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, *python, "run", run_id, "--config_file", config_file, *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)  # fmt: skip


def infer(tmp_path: Path, input: Path, checkpoint: Path, **overrides) -> subprocess.CompletedProcess:
    settings = {"input": str(input), "output_dir": str(tmp_path / "out"), "checkpoint": str(checkpoint)}
    return run_bundle("inference", str(INFERENCE), tmp_path, **{**settings, **TINY, **overrides})


def _disk_full_for(name_part: str) -> tuple[str, ...]:
    """``python`` for ``run_bundle``: MONAI's bundle command line in a process where every write by nibabel
    (``nibabel.save``) or pydicom (``Dataset.save_as``, which highdicom uses) of a file whose name contains
    ``name_part`` writes 4 KiB, then fails as on a full disk."""
    patch = f"""
import errno, os, runpy, sys, nibabel, pydicom.dataset
def full(write):
    def failing(obj, filename, *args, **kwargs):
        if {name_part!r} in os.path.basename(str(filename)):
            with open(filename, "wb") as f:
                f.write(bytes(4096))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return write(obj, filename, *args, **kwargs)
    return failing
nibabel.save = full(nibabel.save)
pydicom.dataset.Dataset.save_as = full(pydicom.dataset.Dataset.save_as)
sys.argv[0] = "monai.bundle"
runpy.run_module("monai.bundle", run_name="__main__", alter_sys=True)
"""
    return ("-c", patch)


def _errors_in_one_line(result: subprocess.CompletedProcess, *parts: str) -> None:
    """The run failed, without a traceback, with an error line holding every one of ``parts``."""
    assert result.returncode != 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert any(all(p in line for p in parts) for line in result.stderr.splitlines()), result.stderr[-3000:]


def _files(folder: Path) -> list[str]:
    """Every file below ``folder`` (hidden temporary files included)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


ENOSPC = "cannot write (No space left on device, errno 28)"


def _ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_nifti_in_label_map_out_on_the_inputs_grid(shared_data, tmp_path, checkpoint):
    result = infer(tmp_path, shared_data / "ct.nii.gz", checkpoint, save_probabilities="true")
    _ok(result)
    source, seg = nib.load(shared_data / "ct.nii.gz"), nib.load(tmp_path / "out" / "ct_seg.nii.gz")
    assert seg.shape == source.shape and np.array_equal(seg.affine, source.affine)
    labels = np.asarray(seg.dataobj)
    assert seg.get_data_dtype() == np.uint8 and len(np.unique(labels)) > 1 and labels.max() <= 20
    probabilities = nib.load(tmp_path / "out" / "ct_probabilities.nii.gz")
    assert probabilities.shape[:3] == source.shape and probabilities.shape[-1] == 21
    assert np.array_equal(probabilities.affine, source.affine)
    assert np.allclose(np.asarray(probabilities.dataobj).reshape(*source.shape, 21).sum(-1), 1.0, atol=1e-3)
    assert "scans" in result.stderr + result.stdout  # the progress bar over scans


def test_dicom_series_in_label_map_and_dicom_seg_out(shared_data, tmp_path, checkpoint):
    series = tmp_path / "abdomen"
    series_uid = copy_series_with_uids(shared_data / "dicom_ct", series)
    _ok(infer(tmp_path, series, checkpoint))
    image = LoadImage(reader="ITKReader", image_only=True)(str(series))
    seg = nib.load(tmp_path / "out" / "abdomen_seg.nii.gz")
    assert seg.shape == tuple(image.shape) == (512, 512, 20)
    assert np.allclose(seg.affine, image.affine.numpy(), atol=1e-4)
    dicom_seg = hd.seg.segread(tmp_path / "out" / "abdomen_seg.dcm")
    assert dicom_seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series_uid
    assert dciodvfy_errors(tmp_path / "out" / "abdomen_seg.dcm") == []
    labels = np.asarray(seg.dataobj)
    assert {s.SegmentLabel for s in dicom_seg.SegmentSequence} == {
        name for value, name in enumerate(json.loads((REPO / "bundle" / "configs" / "metadata.json").read_text())
                                          ["network_data_format"]["outputs"]["pred"]["channel_def"].values())
        if value and (labels == value).any()}  # fmt: skip


def test_a_folder_of_scans_and_a_series_whose_uids_were_blanked(shared_data, tmp_path, checkpoint):
    scans = tmp_path / "scans"
    scans.mkdir()
    (scans / "ct.nii.gz").symlink_to(shared_data / "ct.nii.gz")
    (scans / "dicom_ct").symlink_to(shared_data / "dicom_ct", target_is_directory=True)
    result = infer(tmp_path, scans, checkpoint)
    _ok(result)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ct_seg.nii.gz", "dicom_ct_seg.nii.gz"]
    assert "no DICOM SEG written" in result.stdout + result.stderr  # said, not silent


@pytest.mark.parametrize(
    "input,overrides,message",
    [
        ("missing.nii.gz", {}, "does not exist"),
        ("empty", {}, "is empty"),
        ("phantom", {"network_def#high_blocks": [["conv", 8], ["RA", 8]]}, "does not fit the configured network_def"),
    ],
    ids=["missing-input", "empty-folder", "checkpoint-of-another-network"],
)
def test_bad_input_stops_with_a_message_naming_it(phantom_scan, tmp_path, checkpoint, input, overrides, message):
    """One line naming the input and what is wrong, no traceback (the short errors of ``run training``)."""
    (tmp_path / "empty").mkdir()
    path = phantom_scan if input == "phantom" else tmp_path / input
    result = infer(tmp_path, path, checkpoint, **overrides)
    _errors_in_one_line(result, message, str(checkpoint if input == "phantom" else path))
    assert not (tmp_path / "out").exists()


def _scan_folder(folder: Path, scan: Path, *names: str) -> Path:
    folder.mkdir()
    for name in names:
        (folder / name).symlink_to(scan)
    return folder


def test_a_full_disk_fails_that_scan_the_others_go_on_and_the_run_fails(phantom_scan, tmp_path, checkpoint):
    """MONAI's SaveImage fell back to ITK, which wrote the label map, and the run exited 0."""
    scans = _scan_folder(tmp_path / "scans", phantom_scan, "a.nii.gz", "b.nii.gz")
    result = run_bundle("inference", str(INFERENCE), tmp_path, python=_disk_full_for("a_seg"), input=str(scans),
                        output_dir=str(tmp_path / "out"), checkpoint=str(checkpoint), **TINY)  # fmt: skip
    _errors_in_one_line(result, "OutputWriteError: 1 of 2 scans could not be written completely: "
                                f"{scans / 'a.nii.gz'} ({tmp_path / 'out' / 'a_seg.nii.gz'}: {ENOSPC})")  # fmt: skip
    assert _files(tmp_path / "out") == ["b_seg.nii.gz"]  # no partial a_seg, no temporary file
    assert nib.load(tmp_path / "out" / "b_seg.nii.gz").shape == nib.load(phantom_scan).shape


def test_a_dicom_seg_that_cannot_be_written_fails_that_series_only(shared_data, phantom_scan, tmp_path, checkpoint):
    """The SEG writer's OSError stopped the run: the scans after the series were not segmented."""
    scans = tmp_path / "scans"
    copy_series_with_uids(shared_data / "dicom_ct", scans / "abdomen")
    (scans / "ct.nii.gz").symlink_to(phantom_scan)
    result = run_bundle("inference", str(INFERENCE), tmp_path, python=_disk_full_for("abdomen_seg.dcm"),
                        input=str(scans), output_dir=str(tmp_path / "out"), checkpoint=str(checkpoint),
                        **TINY)  # fmt: skip
    _errors_in_one_line(result, "1 of 2 scans could not be written completely: "
                                f"{scans / 'abdomen'} ({tmp_path / 'out' / 'abdomen_seg.dcm'}: {ENOSPC})")  # fmt: skip
    assert _files(tmp_path / "out") == ["abdomen_seg.nii.gz", "ct_seg.nii.gz"]


@pytest.fixture
def tiny_disk(tmp_path) -> Path:
    """A 64 KiB tmpfs, full (a folder can still be made in it)."""
    with mounted_tmpfs(tmp_path / "disk", "") as disk:
        with open(disk / "filler", "wb", buffering=0) as f:
            with pytest.raises(OSError, match="No space left on device"):
                while True:
                    f.write(bytes(4096))
        yield disk


def test_a_real_full_disk_fails_the_run_and_leaves_no_partial_file(phantom_scan, tmp_path, checkpoint, tiny_disk):
    """The run exited 0, leaving an 8192-byte ct_seg.nii.gz that nibabel cannot read."""
    result = infer(tmp_path, phantom_scan, checkpoint, output_dir=str(tiny_disk / "out"))
    _errors_in_one_line(result, f"{tiny_disk / 'out' / 'phantom_000_seg.nii.gz'}: {ENOSPC}")
    assert _files(tiny_disk) == ["filler"]


def test_an_output_dir_in_the_input_folder_skips_earlier_outputs_and_never_overwrites_a_scan(
    phantom_scan, tmp_path, checkpoint
):
    """A second run segmented the first run's label map (ct_seg_seg.nii.gz)."""
    scans = _scan_folder(tmp_path / "scans", phantom_scan, "ct.nii.gz")
    _ok(infer(tmp_path, scans, checkpoint, output_dir=str(scans)))
    again = infer(tmp_path, scans, checkpoint, output_dir=str(scans))
    _ok(again)
    log = again.stdout + again.stderr
    assert f"{scans}: skipping 1 outputs of an earlier inference run (not scans): ct_seg.nii.gz" in log
    assert f"{scans}: replacing 1 files of an earlier run: ct_seg.nii.gz" in log
    assert _files(scans) == ["ct.nii.gz", "ct_seg.nii.gz"]
    assert nib.load(scans / "ct_seg.nii.gz").get_data_dtype() == np.uint8  # the label map of ct.nii.gz
    datalist = tmp_path / "list.json"  # a label map given as a scan, where another scan's label map would go
    datalist.write_text(json.dumps({"test": [{"image": "scans/ct.nii.gz"}, {"image": "scans/ct_seg.nii.gz"}]}))
    refused = infer(tmp_path, datalist, checkpoint, output_dir=str(scans))
    _errors_in_one_line(refused, f"{scans / 'ct_seg.nii.gz'} would overwrite the input scan {scans / 'ct_seg.nii.gz'}")


def test_a_users_label_map_named_as_an_output_is_never_replaced(phantom_scan, tmp_path, checkpoint):
    """``case1/ct_seg.nii.gz``, the user's ground truth (BraTS naming), was skipped as an earlier run's output and
    replaced by the prediction, exit 0."""
    case = _scan_folder(tmp_path / "case1", phantom_scan, "ct.nii.gz")
    shutil.copy(phantom_scan, case / "ct_seg.nii.gz")
    before = (case / "ct_seg.nii.gz").read_bytes()
    result = infer(tmp_path, case, checkpoint, output_dir=str(case))
    _errors_in_one_line(result, f"{case / 'ct.nii.gz'}: its output would overwrite {case / 'ct_seg.nii.gz'}, which "
                                "autolr-monai did not write (your own label map?): pass an --output_dir elsewhere")
    assert "Engine run" not in result.stdout + result.stderr  # not started
    assert _files(case) == ["ct.nii.gz", "ct_seg.nii.gz"] and (case / "ct_seg.nii.gz").read_bytes() == before


def test_an_output_dir_inside_the_input_folder_is_skipped_on_the_next_run(shared_data, phantom_scan, tmp_path,
                                                                         checkpoint):  # fmt: skip
    """The second run took ``mixg/out``, which holds a DICOM SEG, for a DICOM series and failed."""
    scans = _scan_folder(tmp_path / "mixg", phantom_scan, "a.nii.gz")
    copy_series_with_uids(shared_data / "dicom_ct", scans / "s1")
    _ok(infer(tmp_path, scans, checkpoint, output_dir=str(scans / "out")))
    assert _files(scans / "out") == ["a_seg.nii.gz", "s1_seg.dcm", "s1_seg.nii.gz"]
    again = infer(tmp_path, scans, checkpoint, output_dir=str(scans / "out"))
    _ok(again)
    log = again.stdout + again.stderr
    assert f"{scans}: skipping 1 outputs of an earlier inference run (not scans): out/" in log
    assert f"{scans / 'out'}: replacing 3 files of an earlier run: a_seg.nii.gz, s1_seg.dcm, s1_seg.nii.gz" in log


@pytest.mark.parametrize("output_dir,message", [("file", "output_dir {} is a file, not a folder"),
                                                ("file/out", "output_dir {} cannot be created: "),
                                                ("", "output_dir is empty: pass --output_dir with a folder")],
                         ids=["a-file", "under-a-file", "empty"])  # fmt: skip
def test_an_output_dir_that_cannot_be_written_stops_before_the_first_scan(phantom_scan, tmp_path, checkpoint,
                                                                          output_dir, message):  # fmt: skip
    """``--output_dir ""`` wrote into the current folder."""
    (tmp_path / "file").write_text("not a folder")
    result = infer(tmp_path, phantom_scan, checkpoint, output_dir=output_dir and str(tmp_path / output_dir))
    _errors_in_one_line(result, message.format(tmp_path / output_dir))
    assert "Engine run" not in result.stdout + result.stderr  # not started
    assert (tmp_path / "file").read_text() == "not a folder"
    assert _files(tmp_path) == ["file"]  # nothing written in the current folder either


def test_weights_that_are_not_finite_stop_before_the_first_scan(phantom_scan, tmp_path):
    net = DualPathResNet3D(**TINY_NETWORK)
    state = net.state_dict()
    state["head.3.weight"][0] = float("nan")
    torch.save(state, tmp_path / "diverged.pt")
    result = infer(tmp_path, phantom_scan, tmp_path / "diverged.pt")
    _errors_in_one_line(result, f"{tmp_path / 'diverged.pt'}: weights head.3.weight hold 16 NaN or infinite values")
    assert not (tmp_path / "out").exists()


def test_an_all_background_label_map_of_a_body_is_a_warning(phantom_scan, tmp_path):
    """Weights that predict background everywhere: the label map is written, with a warning naming the scan."""
    net = DualPathResNet3D(**TINY_NETWORK)
    torch.nn.init.zeros_(net.classifier.weight)
    torch.nn.init.constant_(net.classifier.bias, 0.0)
    net.classifier.bias.data[0] = 10.0
    torch.save(net.state_dict(), tmp_path / "background.pt")
    result = infer(tmp_path, phantom_scan, tmp_path / "background.pt")
    _ok(result)
    assert f"{phantom_scan}: the label map holds no structure (all background) although" in result.stdout
    assert not np.asarray(nib.load(tmp_path / "out" / "phantom_000_seg.nii.gz").dataobj).any()


def test_a_spacing_that_monai_would_take_as_keep_is_refused(phantom_scan, tmp_path, checkpoint):
    """Spacingd keeps the scan's own spacing on an axis <= 0: the network would see another resolution."""
    result = infer(tmp_path, phantom_scan, checkpoint, spacing=[0, 6, 8])
    _errors_in_one_line(result, "spacing: expected 3 voxel sizes > 0 in mm", "[0, 6, 8]")
    assert not (tmp_path / "out").exists()


def test_a_misspelled_setting_is_refused_not_ignored(phantom_scan, tmp_path, checkpoint):
    """``--largest_componet false`` left the filter on, exit 0."""
    result = infer(tmp_path, phantom_scan, checkpoint, largest_componet="false")
    _errors_in_one_line(result, "unknown setting 'largest_componet' (did you mean 'largest_component'")
    assert not (tmp_path / "out").exists()
