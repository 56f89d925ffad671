"""DICOM series: which files form the series, what they hold, and where each slice lies in the patient.

ITK's series reader (behind MONAI's ``ITKReader``) sorts the slices itself and takes part of the volume's geometry
from ``SpacingBetweenSlices``: a series whose files say -2.0 there (as some vendors write it) is stacked with its
z axis reversed and placed hundreds of millimetres away, and a gantry-tilted series, uneven slice steps or a slice
of another orientation are stacked on a regular grid without a word. ``series_geometry`` derives the geometry from
what DICOM defines it by, the ``ImagePositionPatient`` and ``ImageOrientationPatient`` of every instance, and
refuses what no regular voxel grid can hold; ``ScanReader`` (``readers.py``) places the pixels on it, and the
DICOM SEG writer maps its frames to the instances through it. highdicom's ``get_series_volume_positions`` tells
whether a series forms a regular volume but not why not, nor which slice is at fault, so the checks are our own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from .grids import LPS_TO_RAS

logger = logging.getLogger("autolr_monai.data")

#: How far the direction cosines of two slices may differ and still be one orientation (DS values carry 16
#: characters; a localizer or a reformatted slice differs by far more).
ORIENTATION_TOLERANCE = 1e-4
#: Two slices closer than this along the slice normal are one position (a duplicated slice).
POSITION_TOLERANCE_MM = 1e-2
#: A slice may lie this share of the slice step off the regular grid fitted to all positions (least squares).
#: Rounded positions stay below (0.625 mm slices at 0.1 mm rounding: at most 0.05 mm = 8%, hence not tighter); a
#: series with steps of 3 mm and 4.4 mm is far above.
SPACING_TOLERANCE = 0.1
#: The in-plane drift of the slice positions over the series may reach this share of the pixel spacing before the
#: series counts as sheared (gantry tilt); beyond it every slice would be displaced in the stacked volume.
TILT_TOLERANCE = 0.1
#: Steps longer than this multiple of the median step are a gap: slices are missing.
GAP_FACTOR = 1.5

#: What GDCM's series rule (``SetUseSeriesDetails`` plus the series date, as MONAI's ``ITKReader``) tells series
#: apart by, besides their SeriesInstanceUID.
_SERIES_DETAILS = ("SeriesNumber", "SequenceName", "SliceThickness", "Rows", "Columns", "SeriesDate")


def is_dicom_file(path: Path) -> bool:
    """A DICOM Part 10 file (the "DICM" preamble marker) or a file named ``*.dcm``; not a DICOMDIR index."""
    if path.name.upper() == "DICOMDIR":
        return False
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with path.open("rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


@dataclass(frozen=True)
class SeriesGeometry:
    """A DICOM series as one voxel grid: slice ``k`` is ``files[k]``, in ascending order along the slice normal
    (row direction x column direction); voxel ``(i, j, k)`` is column ``i``, row ``j`` of that slice.

    ``headers`` are the instances' datasets without pixel data, in the same order; ``lps_affine`` maps voxel
    indices to DICOM patient coordinates (LPS, mm); ``step_mm`` is the distance between neighbouring slices.
    """

    folder: Path
    files: tuple[Path, ...]
    headers: tuple[pydicom.Dataset, ...]
    lps_affine: np.ndarray
    step_mm: float

    @property
    def ras_affine(self) -> np.ndarray:
        """The voxel-to-world affine in MONAI's and NIfTI's RAS convention."""
        return LPS_TO_RAS @ self.lps_affine

    @property
    def shape(self) -> tuple[int, int, int]:
        """(columns, rows, slices), the array shape ITK and MONAI give the series."""
        return int(self.headers[0].Columns), int(self.headers[0].Rows), len(self.files)


def describe(ds: pydicom.Dataset) -> str:
    """What a DICOM object is, for messages: its SOP class name and modality (``Segmentation Storage, SEG``)."""
    uid = ds.get("SOPClassUID") or getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", None)
    name = pydicom.uid.UID(str(uid)).name if uid else "unknown SOP class"
    return f"{name}, Modality {ds.get('Modality') or 'absent'}"


def _series_files(folder: Path) -> list[Path]:
    """The files of the one DICOM series in ``folder``, by the series rule of MONAI's ``ITKReader`` (GDCM series
    details plus the series date), which reads only the first series of a folder and would drop the others."""
    import itk

    names = itk.GDCMSeriesFileNames.New()
    names.SetUseSeriesDetails(True)
    names.AddSeriesRestriction("0008|0021")  # series date, as ITKReader
    names.SetGlobalWarningDisplay(False)
    names.SetDirectory(str(folder))
    series = list(names.GetSeriesUIDs())
    if not series:
        raise ValueError(f"{folder}: no readable DICOM series in this folder")
    if len(series) > 1:
        parts = [[Path(f) for f in names.GetFileNames(uid)] for uid in series]
        firsts = [_header(files[0]) for files in parts]
        uids = {str(ds.get("SeriesInstanceUID") or "") for ds in firsts}
        if len(uids) == 1:  # GDCM split one series by the details of its slices
            differ = [t for t in _SERIES_DETAILS if len({str(ds.get(t)) for ds in firsts}) > 1]
            kinds = "; ".join(f"{len(files)} like {files[0].name} with " + ", ".join(f"{t} {ds.get(t)}" for t in differ)
                              for files, ds in zip(parts, firsts))  # fmt: skip
            raise ValueError(f"{folder}: the slices of one series (SeriesInstanceUID {uids.pop() or 'empty'}) differ "
                             f"in {', '.join(differ)}: {kinds}; expected every slice alike")  # fmt: skip
        listed = ", ".join(f"{uid} ({len(files)} files, {describe(ds)})" for uid, files, ds in zip(series, parts, firsts))
        raise ValueError(f"{folder} holds {len(series)} DICOM series: {listed}; put each series in a folder of its "
                         "own")  # fmt: skip
    _check_nothing_dropped(folder, {Path(f).resolve() for uid in series for f in names.GetFileNames(uid)})
    return [Path(name) for name in names.GetFileNames(series[0])]


def _check_nothing_dropped(folder: Path, listed: set[Path]) -> None:
    """GDCM leaves out the files it cannot parse (a truncated copy of the first or last slice goes unnoticed, as
    no gap shows): refuse a DICOM image file of ``folder`` that is in no series, naming it; warn about objects
    without pixels (a report, a key object), which belong to no image series."""
    damaged, ignored = [], []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        if not is_dicom_file(path) or path.resolve() in listed:
            continue
        try:
            ds = pydicom.dcmread(path)
            (ignored if "PixelData" not in ds else damaged).append(path.name)
        except (InvalidDicomError, EOFError, OSError, ValueError):
            damaged.append(path.name)
    if damaged:
        raise ValueError(f"{folder}: {', '.join(damaged[:5])}{' ...' if len(damaged) > 5 else ''} cannot be read as "
                         "DICOM images (truncated or damaged?); expected every file of the series complete")  # fmt: skip
    if ignored:
        logger.warning("%s: ignoring %s: DICOM objects without pixels, not part of the image series", folder,
                       ", ".join(ignored))  # fmt: skip


def _header(path: Path) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, EOFError, OSError) as e:
        raise ValueError(f"{path}: not a readable DICOM file ({e})") from None


def _vector(ds: pydicom.Dataset, name: str, size: int, path: Path) -> np.ndarray:
    value = ds.get(name)
    try:
        vector = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        vector = np.array([])
    if vector.shape != (size,) or not np.isfinite(vector).all():
        given = "absent" if value is None else f"{value!r}"
        raise ValueError(f"{path}: {name} is {given}; expected {size} numbers (without them the slice cannot be "
                         "placed in the patient)")  # fmt: skip
    return vector


def _check_images(folder: Path, files: list[Path], headers: list[pydicom.Dataset]) -> None:
    """Refuse objects that are not single-frame images of a volume, naming what they are."""
    for path, ds in zip(files, headers):
        if "Rows" not in ds:
            raise ValueError(f"{folder}: {path.name} is a {describe(ds)}, not an image; expected the CT image series")
        if ds.get("Modality") in ("SEG", "RTSTRUCT", "RTDOSE", "SR", "PR", "KO"):
            raise ValueError(f"{folder}: {path.name} is a {describe(ds)}, not a CT image series; pass the folder of the "
                             "CT series itself")  # fmt: skip
        frames = int(ds.get("NumberOfFrames") or 1)
        if frames > 1:
            raise ValueError(f"{folder}: {path.name} is a multi-frame {describe(ds)} with {frames} frames in one file "
                             "(an enhanced multi-frame image); expected a classic series, one file per slice: convert "
                             "it, e.g. with dcm2niix, and pass the NIfTI file")  # fmt: skip
    if len(files) < 2:
        raise ValueError(f"{folder}: the DICOM series has {len(files)} slice, a 2D image; expected a 3D CT series")


def series_geometry(folder: str | Path) -> SeriesGeometry:
    """The voxel grid of the one DICOM series in ``folder``, from its instances' positions and orientations.

    Raises ``ValueError`` naming the folder, the slice at fault and what was expected when the folder holds no
    series or several, an object that is not a single-frame image (a SEG, a multi-frame enhanced CT), a slice
    without position, orientation or pixel spacing, slices of another orientation, size or pixel spacing,
    duplicated or missing slices, uneven slice steps (``SPACING_TOLERANCE``) or slices sheared in-plane as by
    gantry tilt (``TILT_TOLERANCE``). ``SpacingBetweenSlices``, ``SliceLocation``, ``InstanceNumber`` and the
    file order are never used.
    """
    folder = Path(folder)
    files = _series_files(folder)
    headers = [_header(path) for path in files]
    _check_images(folder, files, headers)

    first = headers[0]
    orientation = _vector(first, "ImageOrientationPatient", 6, files[0])
    row, column = orientation[:3], orientation[3:]
    if abs(np.linalg.norm(row) - 1) > 1e-3 or abs(np.linalg.norm(column) - 1) > 1e-3 or abs(row @ column) > 1e-3:
        raise ValueError(f"{files[0]}: ImageOrientationPatient {orientation.tolist()} is not two orthogonal unit "
                         "vectors")  # fmt: skip
    row, column = row / np.linalg.norm(row), column / np.linalg.norm(column)  # DS rounding: unit lengths exactly
    spacing = _vector(first, "PixelSpacing", 2, files[0])  # (between rows, between columns)
    if (spacing <= 0).any():
        raise ValueError(f"{files[0]}: PixelSpacing {spacing.tolist()}; expected two positive numbers (mm)")
    for path, ds in zip(files, headers):
        other = _vector(ds, "ImageOrientationPatient", 6, path)
        if np.abs(other - orientation).max() > ORIENTATION_TOLERANCE:
            raise ValueError(f"{folder}: {path.name} has ImageOrientationPatient {other.tolist()}, {files[0].name} "
                             f"{orientation.tolist()}: a slice in another orientation (a localizer or a reformat?) "
                             "cannot be stacked with the others")  # fmt: skip
        other = _vector(ds, "PixelSpacing", 2, path)
        if np.abs(other - spacing).max() > 1e-4 * spacing.max():
            raise ValueError(f"{folder}: {path.name} has PixelSpacing {other.tolist()}, {files[0].name} "
                             f"{spacing.tolist()}; expected one pixel spacing for the whole series")  # fmt: skip

    normal = np.cross(row, column)
    normal /= np.linalg.norm(normal)
    positions = np.array([_vector(ds, "ImagePositionPatient", 3, path) for path, ds in zip(files, headers)])
    order = np.argsort(positions @ normal, kind="stable")
    files, headers, positions = [files[i] for i in order], [headers[i] for i in order], positions[order]
    along = positions @ normal
    step = _check_steps(folder, files, along)
    _check_tilt(folder, files, headers, positions, along, normal, float(spacing.min()))

    affine = np.eye(4)
    affine[:3, 0] = row * spacing[1]  # voxel i: the next column
    affine[:3, 1] = column * spacing[0]  # voxel j: the next row
    affine[:3, 2] = normal * step
    affine[:3, 3] = positions[0]
    return SeriesGeometry(folder, tuple(files), tuple(headers), affine, step)


def _check_steps(folder: Path, files: list[Path], along: np.ndarray) -> float:
    """The slice step (mm); ``ValueError`` for duplicated or missing slices or steps that are not regular."""
    steps = np.diff(along)
    same = np.flatnonzero(steps < POSITION_TOLERANCE_MM)
    if same.size:
        a, b = files[same[0]].name, files[same[0] + 1].name
        raise ValueError(f"{folder}: {a} and {b} lie at the same position ({along[same[0]]:.2f} mm along the slice "
                         "normal); the series has duplicated slices")  # fmt: skip
    median = float(np.median(steps))
    gaps = np.flatnonzero(steps > GAP_FACTOR * median)
    if gaps.size:
        missing = int(round(float(np.sum(steps[gaps] / median - 1))))
        raise ValueError(f"{folder}: the DICOM series has a gap after the slice at {along[gaps[0]]:.1f} mm "
                         f"({files[gaps[0]].name}; steps of {median:.2f} mm, a jump of {steps[gaps[0]]:.2f} mm): about "
                         f"{missing} slice(s) missing")  # fmt: skip
    index = np.arange(len(along))
    fitted, start = np.polyfit(index, along, 1)  # the regular grid nearest to the positions
    off = along - (start + fitted * index)
    step = float(along[-1] - along[0]) / (len(along) - 1)  # exact where the positions are
    worst = int(np.argmax(np.abs(off)))
    if abs(off[worst]) > SPACING_TOLERANCE * fitted:
        changes = np.flatnonzero(np.abs(np.diff(steps)) > SPACING_TOLERANCE * fitted)[:3]
        where = "; ".join(f"{steps[c]:.2f} mm up to {files[c + 1].name}, then {steps[c + 1]:.2f} mm" for c in changes)
        where = where or f"steps from {steps.min():.2f} to {steps.max():.2f} mm"
        raise ValueError(f"{folder}: the slices are not evenly spaced ({where}): {files[worst].name} lies "
                         f"{abs(off[worst]):.2f} mm off a regular grid of {fitted:.3f} mm steps (at most "
                         f"{SPACING_TOLERANCE * fitted:.3f} mm allowed); one voxel grid cannot hold them: resample the "
                         "series, e.g. with dcm2niix, and pass the NIfTI file")  # fmt: skip
    return step


def _check_tilt(folder: Path, files: list[Path], headers: list[pydicom.Dataset], positions: np.ndarray,
                along: np.ndarray, normal: np.ndarray, pixel_mm: float) -> None:  # fmt: skip
    """``ValueError`` when the slice positions drift in-plane (gantry tilt): a stack would shear the anatomy."""
    drift = (positions - positions[0]) - np.outer(along - along[0], normal)
    size = np.linalg.norm(drift, axis=1)
    worst = int(np.argmax(size))
    if size[worst] > TILT_TOLERANCE * pixel_mm:
        angle = np.degrees(np.arctan2(size[-1], along[-1] - along[0]))
        tilt = headers[0].get("GantryDetectorTilt")
        raise ValueError(f"{folder}: the slices are sheared, as in a gantry-tilted acquisition"
                         f"{f' (GantryDetectorTilt {tilt})' if tilt not in (None, '') else ''}: {files[worst].name} "
                         f"lies {size[worst]:.2f} mm off the slice normal through {files[0].name} (a tilt of "
                         f"{angle:.1f} degrees); a stack of these slices would displace the anatomy: resample the "
                         "series onto an untilted grid first (dcm2niix corrects gantry tilt) and pass the NIfTI "
                         "file")  # fmt: skip


def check_dicom_series(folder: Path) -> None:
    """Raise ``ValueError`` naming ``folder`` unless it holds one DICOM series that forms a regular voxel grid
    (``series_geometry``); warn, naming the folder, when the series is not CT (the models are trained on HU)."""
    geometry = series_geometry(folder)
    modality = geometry.headers[0].get("Modality")
    if modality != "CT":
        logger.warning("%s: a DICOM series of Modality %s, not CT; the model expects CT in Hounsfield units, its "
                       "result on this scan is unlikely to mean anything", folder, modality or "(absent)")
