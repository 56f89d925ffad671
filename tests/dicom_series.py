"""DICOM series as clinics write them, built from the real example series (or, where it is not at hand, a
synthetic volume on the same grid): other slice orders, orientations,
patient positions, SpacingBetweenSlices conventions and file names, all holding the same voxels at the same
places in the patient, so that every reading of them can be checked against the one truth.

``ExampleVolume`` is a crop of the real series (stored values, LPS affine); ``write_series`` writes it as a new
series (uncompressed, fresh UIDs) in the layout a ``Variant`` describes; ``edit`` hooks break one thing at a time.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: In-plane crop of the 512 x 512 example (columns, rows): 64 x 48 voxels around the spine (bone, muscle, fat,
#: vessels), not square, to catch transposed axes; positions stay multiples of 1/256 mm, exact in DS strings and
#: floats, so every variant is placed exactly alike.
CROP = (slice(216, 280), slice(296, 344))


@dataclass(frozen=True)
class ExampleVolume:
    """The example series' stored pixel values as (X = columns, Y = rows, Z = slices ascending in z), its LPS
    affine, and one instance's header (without pixels) as the template of every written slice."""

    stored: np.ndarray
    lps_affine: np.ndarray
    template: pydicom.Dataset

    @property
    def hu(self) -> np.ndarray:
        return self.stored * float(self.template.RescaleSlope) + float(self.template.RescaleIntercept)


def load_example(series: Path) -> ExampleVolume:
    datasets = sorted((pydicom.dcmread(p) for p in series.iterdir()), key=lambda d: float(d.ImagePositionPatient[2]))
    stored = np.stack([d.pixel_array.T for d in datasets], axis=-1)[CROP[0], CROP[1]]
    first = datasets[0]
    row_mm, column_mm = (float(v) for v in first.PixelSpacing)
    step = float(datasets[1].ImagePositionPatient[2]) - float(first.ImagePositionPatient[2])
    affine = np.diag([column_mm, row_mm, step, 1.0])
    affine[:3, 3] = [float(v) for v in first.ImagePositionPatient]
    affine[:3, 3] += CROP[0].start * affine[:3, 0] + CROP[1].start * affine[:3, 1]
    template = pydicom.dcmread(series / sorted(p.name for p in series.iterdir())[0], stop_before_pixels=True)
    return ExampleVolume(np.ascontiguousarray(stored), affine, template)


def synthetic_example() -> ExampleVolume:
    """A volume like the crop of the real series, where that is not at hand: the same grid (64 x 48 x 20 voxels of
    0.9765625 x 0.9765625 x 2 mm at the same place) holding air, fat, soft tissue, a vessel, gas and bone, and a
    CT header of our own; with CT-like noise."""
    x, y, z = np.meshgrid(np.arange(64), np.arange(48), np.arange(20), indexing="ij")
    hu = np.full(x.shape, -1000.0)
    hu[((x - 32) / 30) ** 2 + ((y - 26) / 21) ** 2 < 1] = -100  # fat
    hu[((x - 32) / 24) ** 2 + ((y - 26) / 16) ** 2 < 1] = 40  # soft tissue
    hu[(x - 40) ** 2 + (y - 18) ** 2 < 25] = 200  # a contrast-filled vessel
    hu[(x - 22) ** 2 + (y - 30) ** 2 + (z - 12) ** 2 < 16] = -900  # gas
    hu[((x - 32) ** 2 + (y - 34) ** 2 < 49) & (z % 10 < 8)] = 700  # vertebrae
    affine = np.diag([0.9765625, 0.9765625, 2.0, 1.0])
    affine[:3, 3] = [-249.51171875 + 216 * 0.9765625, -437.51171875 + 296 * 0.9765625, -804.5]
    template = pydicom.Dataset()
    template.file_meta = pydicom.dataset.FileMetaDataset()
    template.file_meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    template.SpecificCharacterSet = "ISO_IR 100"
    template.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    template.Modality, template.Manufacturer, template.BodyPartExamined = "CT", "autolr-monai tests", "ABDOMEN"
    template.PatientName, template.PatientID, template.PatientBirthDate, template.PatientSex = "Synthetic", "S1", "", "O"
    template.StudyDate, template.StudyTime, template.StudyID, template.AccessionNumber = "20260101", "120000", "1", ""
    template.ReferringPhysicianName, template.SeriesNumber, template.AcquisitionNumber = "", 1, 1
    template.PositionReferenceIndicator, template.KVP = "", 120
    template.SamplesPerPixel, template.PhotometricInterpretation = 1, "MONOCHROME2"
    template.BitsAllocated, template.BitsStored, template.HighBit, template.PixelRepresentation = 16, 12, 11, 0
    template.RescaleIntercept, template.RescaleSlope, template.RescaleType = -1024, 1, "HU"
    hu += np.random.default_rng(0).normal(0, 30, hu.shape)  # CT noise
    stored = np.clip(np.round(hu + 1024), 0, 4095).astype(np.uint16)
    return ExampleVolume(stored, affine, template)


@dataclass(frozen=True)
class Variant:
    """How a series is laid out: which volume axes become columns, rows and slices (``axes``), which of those run
    backwards (``flip``), whether InstanceNumber rises along the slice axis or against it, SpacingBetweenSlices
    (None: absent; "negative"/"positive": the step with that sign), file names (by instance number or shuffled),
    PatientPosition."""

    name: str
    axes: tuple[int, int, int] = (0, 1, 2)
    flip: tuple[bool, bool, bool] = (False, False, False)
    instances_descending: bool = True
    spacing_between: str | None = None
    shuffled_names: bool = False
    patient_position: str = "HFS"
    edit: Callable[[int, pydicom.Dataset], None] | None = field(default=None, compare=False)


#: The variants that occur in practice; "as_exported" is the shared example's own layout (instance 1 most cranial).
VARIANTS = [
    Variant("as_exported"),
    Variant("instances_ascending", instances_descending=False),
    Variant("negative_spacing_between_slices", spacing_between="negative"),
    Variant("positive_spacing_between_slices", spacing_between="positive"),
    Variant("feet_first", flip=(True, False, False), instances_descending=False, patient_position="FFS"),
    Variant("rows_and_columns_flipped", flip=(True, True, False), patient_position="HFP"),
    Variant("coronal", axes=(0, 2, 1), flip=(False, True, False), spacing_between="negative"),
    Variant("sagittal", axes=(1, 2, 0), flip=(False, True, True)),
    Variant("names_not_in_position_order", shuffled_names=True, spacing_between="negative"),
]


def layout(volume: ExampleVolume, variant: Variant) -> tuple[np.ndarray, np.ndarray]:
    """The variant's voxels (columns, rows, slices) and their LPS affine: the same points of the patient."""
    array = np.transpose(volume.stored, variant.axes)
    index = np.zeros((4, 4))
    index[3, 3] = 1
    for axis, (source, flipped) in enumerate(zip(variant.axes, variant.flip)):
        index[source, axis] = -1.0 if flipped else 1.0
        index[source, 3] = array.shape[axis] - 1 if flipped else 0
    array = np.flip(array, [a for a, f in enumerate(variant.flip) if f])
    return np.ascontiguousarray(array), volume.lps_affine @ index


def write_series(folder: Path, volume: ExampleVolume, variant: Variant, rng_seed: int = 0) -> list[Path]:
    """Write ``volume`` as a DICOM CT series in ``folder`` laid out as ``variant``; returns the files in slice order
    of the layout (slice k at ``affine @ (0, 0, k)``)."""
    array, affine = layout(volume, variant)
    folder.mkdir(parents=True)
    study, series, frame_of_reference = hd.UID(), hd.UID(), hd.UID()
    n = array.shape[2]
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    order = np.random.default_rng(rng_seed).permutation(n) if variant.shuffled_names else np.arange(n)
    files = []
    for k in range(n):
        ds = copy.deepcopy(volume.template)  # a shallow copy would share its elements: edits would leak
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = pydicom.uid.CTImageStorage
        ds.SOPInstanceUID = hd.UID()
        ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame_of_reference
        instance = n - k if variant.instances_descending else k + 1
        ds.InstanceNumber = instance
        ds.PatientPosition = variant.patient_position
        ds.ImagePositionPatient = [float(v) for v in (affine @ [0, 0, k, 1])[:3]]
        ds.ImageOrientationPatient = [float(v) for v in [*(affine[:3, 0] / spacing[0]), *(affine[:3, 1] / spacing[1])]]
        ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]
        ds.SliceThickness = float(spacing[2])
        for name in ("SpacingBetweenSlices", "SliceLocation", "SmallestImagePixelValue", "LargestImagePixelValue"):
            if name in ds:
                delattr(ds, name)
        if variant.spacing_between is not None:
            ds.SpacingBetweenSlices = float(spacing[2]) * (-1 if variant.spacing_between == "negative" else 1)
        pixels = np.ascontiguousarray(array[:, :, k].T).astype(np.uint16)
        ds.Rows, ds.Columns = pixels.shape
        ds.add_new("PixelData", "OW", pixels.tobytes())
        if variant.edit is not None:
            variant.edit(k, ds)
        name = f"IM{order[k]:05d}.dcm" if variant.shuffled_names else f"IM{instance:05d}.dcm"
        path = folder / name
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def dciodvfy_errors(path: Path) -> list[str]:
    """The errors the standard DICOM validator ``dciodvfy`` (Debian package dicom3tools) reports for ``path``;
    skips the calling test, saying why, where it is not installed."""
    tool = shutil.which("dciodvfy")
    if tool is None:
        pytest.skip("dciodvfy not installed (Debian: apt-get install dicom3tools); the DICOM SEG is not validated")
    result = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=120)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]
