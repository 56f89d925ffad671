"""Shared test fixtures: tiny networks and the real CT examples in ../shared (skipped when absent)."""

from __future__ import annotations

import os
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("AUTOLR_SHARED_DATA", REPO.parent / "shared" / "data" / "totalseg-example"))

TINY_NETWORK = {
    "high_blocks": [["conv", 4], ["RA", 4], ["RB", 8]],
    "low_blocks": [["conv", 4], ["RA", 8], ["RB", 8]],
    "fc_channels": [8],
}


@pytest.fixture(scope="session")
def tiny_datalist(tmp_path_factory) -> str:
    """3 synthetic phantoms at 6 x 6 x 8 mm (training, validation, test: one each), generated once per session."""
    from autolr_monai.data import write_phantom_dataset

    folder = tmp_path_factory.mktemp("phantoms")
    return write_phantom_dataset(str(folder), n_cases=3, seed=5, spacing=(6.0, 6.0, 8.0))


@pytest.fixture(scope="session")
def phantom_scan(tiny_datalist) -> Path:
    """One synthetic scan, for tests that need some scan but not a real one (they run without ../shared)."""
    return Path(tiny_datalist).parent / "imagesTr" / "phantom_000.nii.gz"


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "ct.nii.gz").is_file():
        pytest.skip(f"real CT examples not found at {SHARED_DATA} (set AUTOLR_SHARED_DATA to the totalseg-example folder)")
    return SHARED_DATA


def copy_series_with_uids(source: Path, target: Path) -> str:
    """Copy a DICOM series, filling in the UIDs its de-identification blanked (the real example's are empty): SOP
    instance and class from the file meta, new study and series UIDs. A DICOM SEG must reference them. Returns the
    new SeriesInstanceUID."""
    import highdicom as hd
    import pydicom

    target.mkdir(parents=True)
    study_uid, series_uid = hd.UID(), hd.UID()
    for path in sorted(source.iterdir()):
        ds = pydicom.dcmread(path)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.save_as(target / path.name)
    return series_uid


@pytest.fixture(scope="session")
def example_volume():
    """A crop of the real DICOM series (``tests.dicom_series``), to write as series of every layout; where the real
    series is absent, a synthetic volume on the same grid, so that the DICOM geometry is tested everywhere."""
    from tests.dicom_series import load_example, synthetic_example

    if (SHARED_DATA / "dicom_ct").is_dir():
        return load_example(SHARED_DATA / "dicom_ct")
    warnings.warn(f"real CT DICOM series not found at {SHARED_DATA / 'dicom_ct'}: the DICOM layout tests use a "
                  "synthetic volume (set AUTOLR_SHARED_DATA for the real one)")  # fmt: skip
    return synthetic_example()


@contextmanager
def mounted_tmpfs(folder: Path, options: str) -> Iterator[Path]:
    """A 64 KiB tmpfs mounted on ``folder`` with ``options`` (e.g. "ro") for the block; skips the test, saying
    why, where mounting is not allowed (root without CAP_SYS_ADMIN, a container)."""
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"{options},size=64k".lstrip(","), "tmpfs", str(folder)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)
