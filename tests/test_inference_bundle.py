"""`python -m monai.bundle run inference` on the real CT examples: NIfTI and DICOM in, label maps (and DICOM SEG)
out on exactly the input's grid; bad input stops with a message naming it."""

from __future__ import annotations

import json
import os
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
from tests.conftest import REPO, TINY_NETWORK, copy_series_with_uids

INFERENCE = REPO / "bundle" / "configs" / "inference.json"
TINY = {"spacing": [6.0, 6.0, 6.0], "inference_tile": 16, "num_workers": 0,
        **{f"network_def#{k}": v for k, v in TINY_NETWORK.items()}}  # fmt: skip


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


def run_bundle(run_id: str, config_file: str, cwd: Path, **overrides) -> subprocess.CompletedProcess:
    args = [f"--{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in overrides.items()]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-m", "monai.bundle", "run", run_id, "--config_file", config_file, *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)  # fmt: skip


def infer(tmp_path: Path, input: Path, checkpoint: Path, **overrides) -> subprocess.CompletedProcess:
    return run_bundle("inference", str(INFERENCE), tmp_path, input=str(input), output_dir=str(tmp_path / "out"),
                      checkpoint=str(checkpoint), **{**TINY, **overrides})  # fmt: skip


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
    (tmp_path / "empty").mkdir()
    path = phantom_scan if input == "phantom" else tmp_path / input
    result = infer(tmp_path, path, checkpoint, **overrides)
    assert result.returncode != 0 and message in result.stderr
    assert str(checkpoint if input == "phantom" else path) in result.stderr
    assert not (tmp_path / "out").exists()
