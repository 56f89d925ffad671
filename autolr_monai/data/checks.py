"""Checks of scan files before they are loaded, by name: MONAI's readers fail deep inside a transform, or worse
read a damaged file without a word (ITK reads a truncated ``.nii.gz`` and fills the rest), or read only one of
several DICOM series in a folder. Training (``load_datalist``) and inference (``find_scans``) both run them.
"""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path

import numpy as np

#: Single-file volume formats ITK reads (NIfTI first: the usual case).
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def check_scan(path: str | os.PathLike) -> None:
    """Raise ``FileNotFoundError``/``ValueError`` naming ``path`` unless it is a readable 3D volume file or a folder
    holding one complete DICOM series."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if not os.access(path, os.R_OK | (os.X_OK if path.is_dir() else 0)):
        raise ValueError(f"{path} is not readable (permissions)")
    if path.is_dir():
        check_dicom_series(path)
    else:
        check_volume_file(path)


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


def visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def check_volume_file(path: Path) -> None:
    """Raise ``ValueError`` naming ``path`` unless ITK can read it as a 3D volume (header only)."""
    import itk

    io = itk.ImageIOFactory.CreateImageIO(str(path), itk.CommonEnums.IOFileMode_ReadMode)
    if io is None:
        raise ValueError(f"{path}: not a readable image (corrupt or truncated, or not a "
                         f"{'/'.join(VOLUME_SUFFIXES)} volume)")  # fmt: skip
    io.SetFileName(str(path))
    try:
        io.ReadImageInformation()
    except RuntimeError as e:
        raise ValueError(f"{path}: cannot read the image header ({str(e).strip().splitlines()[-1]})") from None
    shape = [io.GetDimensions(i) for i in range(io.GetNumberOfDimensions())]
    if len(shape) < 3 or sum(s > 1 for s in shape[:3]) < 3:
        raise ValueError(f"{path}: a 2D image of shape {tuple(shape)}; expected a 3D CT volume (x, y, z)")
    if path.name.lower().endswith((".nii", ".nii.gz")):
        check_nifti_complete(path)


def check_nifti_complete(path: Path) -> None:
    """Raise ``ValueError`` if a NIfTI file holds fewer bytes than its header announces (a cut-off copy or
    download). For ``.nii.gz`` the uncompressed size is read from the gzip trailer, without decompressing."""
    import nibabel as nib

    image = nib.load(str(path))
    header = image.header
    expected = image.dataobj.offset + math.prod(int(d) for d in header.get_data_shape()) * header.get_data_dtype().itemsize
    if path.name.lower().endswith(".gz"):
        with open(path, "rb") as f:
            f.seek(-4, os.SEEK_END)
            (size,) = struct.unpack("<I", f.read(4))  # ISIZE: the uncompressed length mod 2^32
        if size != expected % 2**32:
            raise ValueError(f"{path}: truncated or corrupt: its header announces {expected} bytes of data, the "
                             "gzip stream does not end there (an interrupted copy or download?)")  # fmt: skip
    elif path.stat().st_size < expected:
        raise ValueError(f"{path}: truncated: {path.stat().st_size} bytes, its header announces {expected}")


def check_dicom_series(folder: Path) -> None:
    """Raise ``ValueError`` naming ``folder`` unless it holds exactly one DICOM series of two or more slices.

    Uses the series rule of MONAI's ``ITKReader`` (GDCM series details plus the series date), which reads only the
    first series of a folder and would silently drop the others.
    """
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
        counts = ", ".join(f"{uid} ({len(names.GetFileNames(uid))} files)" for uid in series)
        raise ValueError(f"{folder} holds {len(series)} DICOM series: {counts}; put each series in a folder of its own")
    files = list(names.GetFileNames(series[0]))
    if len(files) < 2:
        raise ValueError(f"{folder}: the DICOM series has {len(files)} slice, a 2D image; expected a 3D CT series")
    check_slice_spacing(folder, files)


def check_slice_spacing(folder: Path, files: list[str]) -> None:
    """Raise ``ValueError`` if the slices' positions along the slice normal leave a gap (missing slices) or
    repeat (duplicated slices); ITK would stack them as if evenly spaced."""
    import pydicom

    positions, normal = [], None
    for name in files:
        ds = pydicom.dcmread(name, stop_before_pixels=True, specific_tags=["ImagePositionPatient", "ImageOrientationPatient"])
        if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
            return  # no geometry to check against (ITK will use the file order)
        if normal is None:
            row, col = np.asarray(ds.ImageOrientationPatient[:3], float), np.asarray(ds.ImageOrientationPatient[3:], float)
            normal = np.cross(row, col)
        positions.append(float(np.dot(normal, np.asarray(ds.ImagePositionPatient, float))))
    steps = np.diff(np.sort(positions))
    step = float(np.median(steps))
    if np.any(steps < 1e-3 * max(step, 1e-6)):
        raise ValueError(f"{folder}: two DICOM slices share a position; the series has duplicated slices")
    gaps = np.flatnonzero(steps > 1.5 * step)
    if gaps.size:
        at = np.sort(positions)[gaps[0]]
        missing = int(round(float(np.sum(steps[gaps] / step - 1))))
        raise ValueError(f"{folder}: the DICOM series has a gap after the slice at {at:.1f} mm (steps of {step:.2f} mm, "
                         f"a jump of {steps[gaps[0]]:.2f} mm): about {missing} slice(s) missing")  # fmt: skip


