"""`run inference` on DICOM series in every layout clinics write: one label map per series, each where the patient
is (the same organs at the same world coordinates for every layout, each instance at its ImagePositionPatient),
and a DICOM SEG that the standard validator accepts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch

from autolr_monai.networks import DualPathResNet3D
from tests.conftest import REPO, TINY_NETWORK
from tests.dicom_series import RAS_TO_LPS, VARIANTS, dciodvfy_errors, write_series

TINY = {"spacing": [3.0, 3.0, 3.0], "inference_tile": 16, "num_workers": 0,
        **{f"network_def#{k}": v for k, v in TINY_NETWORK.items()}}  # fmt: skip


@pytest.fixture(scope="module")
def segmented(example_volume, tmp_path_factory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """Every variant of the example series in one input folder, segmented by one `run inference`."""
    root = tmp_path_factory.mktemp("variants")
    for variant in VARIANTS:
        write_series(root / "series" / variant.name, example_volume, variant)
    torch.manual_seed(5)  # random weights that give several structures on the real and the synthetic volume
    net = DualPathResNet3D(**TINY_NETWORK)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.3)
    torch.save(net.state_dict(), root / "model.pt")
    overrides = {**TINY, "input": str(root / "series"), "output_dir": str(root / "out"), "checkpoint": str(root / "model.pt")}
    args = [f"--{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in overrides.items()]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "inference", "--config_file",
                             str(REPO / "bundle" / "configs" / "inference.json"), *args],
                            cwd=root, env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root / "series", root / "out", result


def _canonical(path: Path) -> tuple[np.ndarray, np.ndarray]:
    image = nib.as_closest_canonical(nib.load(path))
    return np.asarray(image.dataobj), image.affine


@pytest.mark.parametrize("variant", VARIANTS, ids=[v.name for v in VARIANTS])
def test_each_layout_is_segmented_where_the_patient_is(segmented, variant):
    series, out, _ = segmented
    reference, reference_affine = _canonical(out / f"{VARIANTS[0].name}_seg.nii.gz")
    assert len(np.unique(reference)) > 1  # several structures: a comparison that can fail
    labels, affine = _canonical(out / f"{variant.name}_seg.nii.gz")
    assert np.allclose(affine, reference_affine, atol=1e-4) and np.array_equal(labels, reference)

    own = nib.load(out / f"{variant.name}_seg.nii.gz")  # on the series' own grid: instance k at its position
    to_voxel = np.linalg.inv(RAS_TO_LPS @ own.affine)
    slices = []
    for path in (series / variant.name).iterdir():
        i, j, k = (to_voxel @ [*map(float, pydicom.dcmread(path, stop_before_pixels=True).ImagePositionPatient), 1])[:3]
        assert (i, j, k - round(k)) == pytest.approx((0, 0, 0), abs=1e-4), path.name
        slices.append(round(k))
    assert sorted(slices) == list(range(own.shape[2]))


@pytest.mark.parametrize("variant", VARIANTS, ids=[v.name for v in VARIANTS])
def test_each_layout_gets_a_valid_dicom_seg(segmented, variant):
    _, out, _ = segmented
    assert dciodvfy_errors(out / f"{variant.name}_seg.dcm") == []


def test_the_corrected_placement_is_said(segmented):
    *_, result = segmented
    log = result.stdout + result.stderr
    assert "negative_spacing_between_slices: ITK would place the slices" in log
    assert "as_exported: ITK would place" not in log
