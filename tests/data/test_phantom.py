"""Tests of the synthetic CT phantom generator. Most use a coarse spacing to stay fast on two CPU cores."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from functools import cache
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.data import load_decathlon_datalist
from scipy import ndimage

from autolr_monai.data.labels import LABEL_NAMES, label_value
from autolr_monai.data.phantom import (
    DRAWN_STRUCTURES,
    Phantom,
    default_split,
    ensure_phantom_dataset,
    generate_phantom,
    write_phantom_dataset,
)

REPO = Path(__file__).resolve().parents[2]
COARSE = (4.0, 4.0, 5.0)
SEEDS = (0, 1, 2)

# Plausible adult volumes (ml), wide enough for the per-case variation of the generator.
VOLUME_ML = {
    "liver": (1000, 2500),
    "spleen": (60, 400),
    "kidney_right": (90, 300),
    "kidney_left": (90, 300),
    "lung_right": (1000, 4000),
    "lung_left": (1000, 4000),
    "aorta": (80, 350),
    "trachea": (15, 100),
    "sternum": (30, 150),
    "urinary_bladder": (50, 500),
    "psoas_major_right": (80, 400),
    "psoas_major_left": (80, 400),
    "rectus_abdominis_right": (50, 300),
    "rectus_abdominis_left": (50, 300),
    "pancreas": (30, 150),
    "gallbladder": (10, 100),
    "vertebra_L1": (20, 90),
}
# Median HU inside a structure (portal-venous phase, after blur and noise).
MEDIAN_HU = {
    "liver": (90, 130),
    "spleen": (100, 140),
    "kidney_right": (110, 200),
    "pancreas": (70, 110),
    "lung_left": (-900, -780),
    "aorta": (170, 260),
    "sternum": (250, 1000),
    "vertebra_L1": (250, 1000),
    "urinary_bladder": (-10, 30),
    "gallbladder": (-10, 35),
    "psoas_major_left": (30, 70),
    "rectus_abdominis_right": (30, 70),
}


@cache
def coarse(seed: int) -> Phantom:
    return generate_phantom(seed, COARSE)


def world_centroid(p: Phantom, name: str) -> np.ndarray:
    idx = np.argwhere(p.label == label_value(name)).mean(axis=0)
    return p.affine[:3, :3] @ idx + p.affine[:3, 3]


def test_same_seed_gives_identical_case_and_other_seeds_differ():
    a, b, c = generate_phantom(7), generate_phantom(7), generate_phantom(8)
    assert a.image.tobytes() == b.image.tobytes()
    assert a.label.tobytes() == b.label.tobytes()
    assert a.affine.tobytes() == b.affine.tobytes() and a.spacing == b.spacing
    assert not np.array_equal(a.affine, c.affine)
    d = coarse(0)
    e = generate_phantom(1, COARSE)  # same shape as seed 0 at a fixed spacing
    assert d.image.shape == e.image.shape
    assert not np.array_equal(d.image, e.image) and not np.array_equal(d.label, e.label)


def test_drawn_spacing_is_anisotropic_clinical_ct():
    for seed in range(5):
        p = generate_phantom(seed, fov_mm=(400.0, 400.0, 60.0))  # thin slab: only the spacing matters here
        sx, sy, sz = p.spacing
        assert sx == sy and 1.4 <= sx <= 1.8
        assert sz in (2.0, 2.5, 3.0)
        assert p.image.shape == tuple(round(f / s) for f, s in zip((400.0, 400.0, 60.0), p.spacing))


def test_arrays_and_affine():
    p = coarse(0)
    assert p.image.dtype == np.int16 and p.label.dtype == np.uint8
    assert p.image.shape == p.label.shape == (100, 100, 96)
    assert p.affine.shape == (4, 4) and p.affine.dtype == np.float64
    assert nib.aff2axcodes(p.affine) == ("L", "P", "S")
    np.testing.assert_allclose(np.linalg.norm(p.affine[:3, :3], axis=0), COARSE, rtol=1e-5)
    off_diagonal = p.affine[:3, :3] - np.diag(np.diag(p.affine[:3, :3]))
    assert np.abs(off_diagonal).max() > 1e-3, "expected a small rotation about z"
    rotation_deg = np.degrees(np.arctan2(-p.affine[1, 0], -p.affine[0, 0]))  # first axis runs towards -x (left)
    assert 0.0 < abs(rotation_deg) <= 3.0
    assert not np.allclose(p.affine, np.eye(4))
    assert p.image.min() >= -1024 and p.image.max() <= 3071


@pytest.mark.parametrize("seed", SEEDS)
def test_structures_present_with_plausible_volumes(seed):
    p = coarse(seed)
    voxel_ml = float(np.prod(p.spacing)) / 1000.0
    counts = np.bincount(p.label.ravel(), minlength=len(LABEL_NAMES))
    assert len(counts) == len(LABEL_NAMES), "label values outside the label table"
    drawn = {label_value(n) for n in DRAWN_STRUCTURES} | {0}
    assert set(np.flatnonzero(counts).tolist()) == drawn
    for name in ("adrenal_gland_right", "adrenal_gland_left", "thyroid_gland"):
        assert counts[label_value(name)] == 0
    for name, (lo, hi) in VOLUME_ML.items():
        volume = counts[label_value(name)] * voxel_ml
        assert lo <= volume <= hi, f"seed {seed}: {name} {volume:.0f} ml outside [{lo}, {hi}]"


def test_hu_plausible():
    p = generate_phantom(0, (2.0, 2.0, 3.0))  # fine enough for the interior of thin structures
    for name, (lo, hi) in MEDIAN_HU.items():
        interior = ndimage.binary_erosion(p.label == label_value(name))  # away from partial-volume borders
        median = float(np.median(p.image[interior]))
        assert lo <= median <= hi, f"{name}: median {median} HU outside [{lo}, {hi}]"
    corners = np.concatenate(
        [p.image[i, j, :] for i in (slice(0, 4), slice(-4, None)) for j in (slice(0, 4), slice(-4, None))]
    )
    assert np.median(corners) < -950
    q25, q75 = np.percentile(p.image[p.label == label_value("liver")], [25, 75])
    assert 5.0 < q75 - q25 < 50.0, "liver: homogeneous up to noise, vessels and its blurred border"
    lung = p.image[p.label == label_value("lung_right")]
    assert np.percentile(lung, 99.5) > -500, "lungs should contain brighter vessel streaks"


@pytest.mark.parametrize("seed", SEEDS)
def test_anatomical_relations_in_world_coordinates(seed):
    p = coarse(seed)
    c = {name: world_centroid(p, name) for name in DRAWN_STRUCTURES}
    x, y, z = 0, 1, 2  # RAS+: +x patient's right, +y anterior, +z superior
    assert c["liver"][x] > c["spleen"][x] + 60
    for left_right in ("kidney", "lung", "psoas_major", "rectus_abdominis"):
        assert c[f"{left_right}_right"][x] > c[f"{left_right}_left"][x] + 30, left_right
    assert c["kidney_right"][z] < c["kidney_left"][z], "the right kidney lies lower"
    assert min(c["lung_right"][z], c["lung_left"][z]) > c["urinary_bladder"][z] + 200
    assert c["lung_right"][z] > c["liver"][z] and c["lung_left"][z] > c["spleen"][z]
    assert c["sternum"][y] > c["aorta"][y] + 40
    assert c["rectus_abdominis_right"][y] > c["vertebra_L1"][y] + 80
    assert c["vertebra_L1"][y] < c["aorta"][y] and c["vertebra_L1"][y] < c["pancreas"][y]
    assert abs(c["vertebra_L1"][z] - (c["kidney_right"][z] + c["kidney_left"][z]) / 2) < 35
    assert c["trachea"][z] > c["lung_right"][z] > c["liver"][z] > c["pancreas"][z] > c["urinary_bladder"][z]
    assert c["urinary_bladder"][y] > c["vertebra_L1"][y]


def test_body_fits_in_plane_and_too_small_fov_raises():
    p = coarse(1)
    # lateral borders from the anterior edge to 60 mm behind the centre of the anatomy (the couch lies deeper),
    # and the anterior border
    rows = slice(0, int(np.argwhere(p.label > 0)[:, 1].mean() + 60.0 / p.spacing[1]))
    frame = np.concatenate([p.image[0, rows].ravel(), p.image[-1, rows].ravel(), p.image[:, 0].ravel()])
    assert frame.max() < -800, "body touches the field of view border"
    with pytest.raises(ValueError, match="fov_mm"):
        generate_phantom(1, COARSE, fov_mm=(250.0, 250.0, 480.0))


def test_anatomy_does_not_depend_on_spacing():
    a, b = coarse(2), generate_phantom(2, (3.0, 3.0, 4.0))
    for name in ("liver", "kidney_left", "aorta"):
        va = (a.label == label_value(name)).sum() * np.prod(a.spacing)
        vb = (b.label == label_value(name)).sum() * np.prod(b.spacing)
        assert abs(va - vb) / vb < 0.1, name
        assert np.linalg.norm(world_centroid(a, name) - world_centroid(b, name)) < 3.0, name


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"spacing": (0.0, 1.0, 1.0)}, "spacing"),
        ({"spacing": (1.0, -1.0, 1.0)}, "spacing"),
        ({"spacing": (1.0, 1.0)}, "spacing"),
        ({"fov_mm": (400.0, 400.0, float("nan"))}, "fov_mm"),
    ],
)
def test_generate_rejects_bad_geometry(kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate_phantom(0, **kwargs)


def test_default_split():
    assert default_split(20) == (14, 2, 4)
    assert default_split(3) == (1, 1, 1)
    assert default_split(10) == (7, 1, 2)
    assert default_split(2) == (2, 0, 0)
    for n in range(3, 60):
        n_train, n_val, n_test = default_split(n)
        assert n_train + n_val + n_test == n and n_val >= 1 and n_test >= 1 and n_train >= n_val


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("phantoms") / "set"
    path = write_phantom_dataset(str(out), n_cases=3, seed=5, spacing=COARSE)
    assert Path(path) == out / "datalist.json"
    return out


def test_written_dataset_files_and_datalist(dataset):
    content = json.loads((dataset / "datalist.json").read_text())
    assert content["labels"] == {str(v): name for v, name in LABEL_NAMES.items()}
    assert content["generator"]["seed"] == 5 and content["generator"]["n_cases"] == 3
    assert content["generator"]["spacing"] == list(COARSE)
    assert isinstance(content["description"], str)
    sizes = {}
    for key in ("training", "validation", "test"):
        entries = load_decathlon_datalist(str(dataset / "datalist.json"), data_list_key=key, base_dir=str(dataset))
        sizes[key] = len(entries)
        for entry in entries:
            assert Path(entry["image"]).is_file() and Path(entry["label"]).is_file()
    assert sizes == {"training": 1, "validation": 1, "test": 1}
    names = sorted(p.name for p in dataset.rglob("*") if p.is_file())
    assert names == sorted(["datalist.json"] + [f"phantom_{i:03d}.nii.gz" for i in range(3)] * 2), "stray files"

    expected = generate_phantom(5 * 100003 + 2, COARSE)
    image = nib.load(dataset / "imagesTr" / "phantom_002.nii.gz")
    label = nib.load(dataset / "labelsTr" / "phantom_002.nii.gz")
    for img, array in ((image, expected.image), (label, expected.label)):
        np.testing.assert_allclose(img.affine, expected.affine, atol=1e-4)
        assert int(img.header["qform_code"]) == 1 and int(img.header["sform_code"]) == 1
        assert img.get_data_dtype() == array.dtype
        np.testing.assert_array_equal(np.asanyarray(img.dataobj), array)
    np.testing.assert_allclose(image.header.get_zooms(), COARSE, rtol=1e-5)
    assert nib.aff2axcodes(image.affine) == ("L", "P", "S")


def test_ensure_reuses_complete_dataset(dataset):
    files = [p for p in dataset.rglob("*") if p.is_file()]
    before = {p: p.stat().st_mtime_ns for p in files}
    assert ensure_phantom_dataset(str(dataset), n_cases=99) == str(dataset / "datalist.json")
    assert {p: p.stat().st_mtime_ns for p in files} == before


def test_ensure_generates_into_missing_or_empty_folder(tmp_path, caplog):
    empty = tmp_path / "empty"
    empty.mkdir()
    with caplog.at_level(logging.INFO, logger="autolr_monai.data.phantom"):
        path = ensure_phantom_dataset(str(empty), n_cases=1, spacing=COARSE)
    assert Path(path).is_file() and (empty / "imagesTr" / "phantom_000.nii.gz").is_file()
    assert any(
        "generated 1 synthetic phantom" in r.getMessage() and str(empty) in r.getMessage() for r in caplog.records
    )
    missing = tmp_path / "a" / "b"
    assert Path(ensure_phantom_dataset(str(missing), n_cases=1, spacing=COARSE)).is_file()


def test_ensure_refuses_non_empty_folder_without_datalist(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=str(tmp_path)):
        ensure_phantom_dataset(str(tmp_path), n_cases=1, spacing=COARSE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_cases": 0}, "n_cases"),
        ({"n_cases": 2.5}, "n_cases"),
        ({"n_cases": 3, "split": (1, 1, 0)}, "split"),
        ({"n_cases": 3, "split": (2, 2, -1)}, "split"),
        ({"n_cases": 3, "spacing": (4.0, 0.0, 5.0)}, "spacing"),
        ({"n_cases": 3, "seed": -1}, "seed"),
    ],
)
def test_write_rejects_bad_arguments_before_writing(tmp_path, kwargs, match):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=match):
        write_phantom_dataset(str(out), **kwargs)
    assert not out.exists()


def test_cli_writes_a_dataset(tmp_path):
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "autolr_monai.data", "--output_dir", str(out), "--n_cases", "1",
           "--seed", "3", "--spacing", "[4.0,4.0,5.0]"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    content = json.loads((out / "datalist.json").read_text())
    assert content["generator"]["spacing"] == [4.0, 4.0, 5.0] and content["generator"]["seed"] == 3
    assert len(content["training"]) == 1
