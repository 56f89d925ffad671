"""The scans to segment: one NIfTI file, one DICOM series folder, a folder of either, or a datalist.

Each scan is checked before anything is loaded (its header only), so that a wrong path, an empty folder, a file
that is not an image, a folder holding several DICOM series or a 2D image is reported by name at once rather than
as a traceback from deep inside a reader after minutes of inference on the other scans. Each scan also gets its
output name here (``scan_stem``), one rule for every file written about it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from autolr_monai.data.checks import VOLUME_SUFFIXES, check_scan, is_dicom_file, read_nifti_header, visible
from autolr_monai.data.datalist import load_datalist

from .marks import MANUFACTURER, NIFTI_MARK, SERIES_DESCRIPTION

logger = logging.getLogger("autolr_monai.inference")

#: Ends of the names of the files inference writes (``<scan>_seg.nii.gz``, ``<scan>_probabilities.nii.gz``,
#: ``<scan>_seg.dcm``): in a folder of scans, those that inference wrote (``written_by_autolr``) are an earlier
#: run's outputs, not scans.
OUTPUT_SUFFIXES = ("_seg.nii.gz", "_probabilities.nii.gz", "_seg.dcm")


def _is_volume_file(path: Path) -> bool:
    return path.name.lower().endswith(VOLUME_SUFFIXES)


def _absolute(path: str | os.PathLike) -> str:
    return os.path.abspath(str(path).rstrip("/\\"))


def scan_name(path: str | os.PathLike) -> str:
    """A scan's name: its file name without the volume suffix, or its DICOM folder's whole name (series folders
    are often named by UID, dots included, which ``os.path.splitext`` would cut)."""
    name = os.path.basename(_absolute(path))
    suffix = next((s for s in VOLUME_SUFFIXES if name.lower().endswith(s)), "")
    return name[: len(name) - len(suffix)] if suffix and not os.path.isdir(path) else name


def scans_root(scans: Sequence[dict], key: str = "image") -> str:
    """The deepest folder holding every scan: outputs keep the scans' folders below it."""
    return os.path.commonpath([os.path.dirname(_absolute(s[key])) for s in scans])


def scan_stem(path: str | os.PathLike, root: str | os.PathLike) -> str:
    """``<folders below root>/<scan name>``: the stem of every output file (and the case name in evaluations)."""
    folder = os.path.relpath(os.path.dirname(_absolute(path)), str(root))
    return os.path.normpath(os.path.join(folder, scan_name(path)))


def check_unique_stems(scans: Sequence[dict], key: str = "image") -> None:
    """Raise ``ValueError`` when two scans would write the same output files (``scan.nii`` beside ``scan.nii.gz``,
    ``ct.nii.gz`` beside a ``ct/`` series folder)."""
    root, seen = scans_root(scans, key), {}
    for scan in scans:
        stem = scan_stem(scan[key], root)
        if stem in seen:
            raise ValueError(f"{seen[stem]} and {scan[key]} would both be written as {stem}: rename one of them")
        seen[stem] = scan[key]


def written_by_autolr(path: Path) -> bool:
    """Whether inference wrote the file ``path`` (its header only is read): a NIfTI whose header's ``descrip``
    begins with ``NIFTI_MARK``, or a DICOM with the Manufacturer and SeriesDescription of ``write_dicom_seg``."""
    if not path.is_file():
        return False
    if is_dicom_file(path):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Manufacturer", "SeriesDescription"])
        except (InvalidDicomError, EOFError, OSError, ValueError):
            return False
        return ds.get("Manufacturer") == MANUFACTURER and ds.get("SeriesDescription") == SERIES_DESCRIPTION
    header = read_nifti_header(path)
    return header is not None and header["descrip"].item().decode("latin-1").startswith(f"{NIFTI_MARK} ")


def _earlier_output(entry: Path) -> bool:
    """Whether ``entry`` is an output of an earlier run: a file named as one (``OUTPUT_SUFFIXES``) that inference
    wrote, or a folder (not a link) holding nothing else, such as an earlier run's output_dir."""
    if entry.is_dir() and not entry.is_symlink():
        entries = visible(entry)
        return bool(entries) and all(_earlier_output(p) for p in entries)
    return entry.name.endswith(OUTPUT_SUFFIXES) and written_by_autolr(entry)


def _scans_in_folder(folder: Path) -> list[Path]:
    """The scans of ``folder``: the folder itself if it holds DICOM files, else its volume files and DICOM series
    folders. Outputs of an earlier run written here (``_earlier_output``), files and folders, are skipped, naming
    them; a DICOM SEG output inside a series folder is refused, as the series cannot be read with it. A file with
    an output's name that inference did not write (a user's label map) is an entry like any other."""
    entries = visible(folder)
    if not entries:
        raise ValueError(f"{folder} is empty: expected NIfTI files, DICOM series folders, or the DICOM files of one "
                         "series")  # fmt: skip
    outputs = [p for p in entries if _earlier_output(p)]
    entries = [p for p in entries if p not in outputs]
    is_series = any(p.is_file() and is_dicom_file(p) for p in entries)
    seg = next((p for p in outputs if p.is_file() and is_dicom_file(p)), None)
    if is_series and seg is not None:
        raise ValueError(f"{folder}: {seg.name} is an output of an earlier inference run written into this DICOM "
                         "series folder: move it out (read with the series, it is a second series)")  # fmt: skip
    if outputs:
        logger.warning("%s: skipping %d outputs of an earlier inference run (not scans): %s", folder, len(outputs),
                       _names(outputs))  # fmt: skip
    if is_series:
        _warn_ignored(folder, [p for p in entries if not (p.is_file() and is_dicom_file(p))], "next to its series")
        return [folder]
    scans, ignored = [], []
    for entry in entries:
        if entry.is_file():
            (scans if _is_volume_file(entry) else ignored).append(entry)
        elif entry.is_dir() and any(p.is_file() and is_dicom_file(p) for p in visible(entry)):
            scans.append(entry)
        else:
            ignored.append(entry)
    if not scans:
        raise ValueError(f"{folder} holds no NIfTI files ({', '.join(VOLUME_SUFFIXES)}) and no DICOM series folders")
    _warn_ignored(folder, ignored, "that are neither volumes nor DICOM series folders")
    return scans


def _names(paths: list[Path]) -> str:
    """The names of ``paths`` (the first 10), folders with a trailing ``/``."""
    return ", ".join(p.name + ("/" if p.is_dir() else "") for p in paths[:10]) + (" ..." if len(paths) > 10 else "")


def _warn_ignored(folder: Path, ignored: list[Path], why: str) -> None:
    if ignored:
        logger.warning("%s: ignoring %d entries %s: %s", folder, len(ignored), why, _names(ignored))


def find_scans(input: str, datalist_key: str = "test") -> list[dict]:
    """The scans under ``input`` as MONAI data dicts ``{"image": path}``, each checked (header only).

    ``input`` is a NIfTI (or NRRD/MHA) file, a folder holding the DICOM files of one series, a folder of such files
    and series folders (one level; outputs of an earlier run in it are skipped with a warning naming them), or a
    datalist JSON whose ``datalist_key`` list has ``image`` entries. Raises
    ``FileNotFoundError``/``ValueError`` naming the path and the problem, also when two scans would get the same
    output name (``check_unique_stems``).
    """
    if input is None or str(input).strip() == "":
        raise ValueError("no input given: pass --input with a NIfTI file, a DICOM series folder, a folder of either "
                         "or a datalist JSON")  # fmt: skip
    path = Path(str(input)).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"input {path} does not exist")
    if path.is_file() and path.suffix.lower() == ".json":  # load_datalist checks each scan
        scans = [Path(e["image"]) for e in load_datalist(str(path), datalist_key, require_label=False)]
    elif path.is_file() and is_dicom_file(path):
        raise ValueError(f"{path} is a single DICOM file; pass the folder that holds the whole series")
    elif path.is_file() and not _is_volume_file(path):
        raise ValueError(f"{path}: not a NIfTI file ({', '.join(VOLUME_SUFFIXES)}), a DICOM series folder or a "
                         "datalist JSON")  # fmt: skip
    else:
        scans = [path] if path.is_file() else _scans_in_folder(path)
        for scan in scans:
            check_scan(scan)
    found = [{"image": str(scan.absolute())} for scan in scans]
    check_unique_stems(found)
    return found
