"""Datalists: MONAI's Decathlon-style JSON ({"training": [{"image": ..., "label": ...}], ...}), checked on load."""

from __future__ import annotations

import json
from pathlib import Path

from monai.data import load_decathlon_datalist

from .checks import check_scan


def load_datalist(
    datalist: str, key: str, base_dir: str | None = None, require_label: bool = True, index_key: str = "case_index"
) -> list[dict]:
    """Entries of ``datalist[key]`` with absolute paths (relative ones resolve against ``base_dir``, by default
    the datalist's folder) and their position in the list under ``index_key`` (isample keys error maps by it).
    Images and labels are NIfTI files or DICOM series folders.

    Raises ``FileNotFoundError`` or ``ValueError`` naming the datalist, the entry and the field when the file is
    missing or malformed, the list is empty, a field is not a path (string), or an entry points to a path that does
    not exist or is not a complete 3D scan (``checks.check_scan``: unreadable, corrupt or truncated, not one scalar
    3D volume, a NIfTI header ITK and nibabel read differently, several or gapped DICOM series).
    """
    path = Path(datalist)
    if not path.is_file():
        raise FileNotFoundError(
            f"datalist {path} does not exist: pass --datalist with your datalist JSON, or leave the default to "
            "generate the synthetic phantom dataset"
        )
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"datalist {path} is not valid JSON: {e}") from None
    if not isinstance(content, dict) or not isinstance(content.get(key), list):
        found = sorted(content) if isinstance(content, dict) else type(content).__name__
        raise ValueError(f"datalist {path}: expected a list under the key {key!r}; found {found}")
    if not content[key]:
        raise ValueError(f"datalist {path}: the {key!r} list is empty")
    fields = ("image", "label") if require_label else ("image",)
    for i, entry in enumerate(content[key]):
        if not isinstance(entry, dict) or any(f not in entry for f in fields):
            raise ValueError(f"datalist {path}: {key}[{i}] must be an object with fields {fields}, got {entry!r}")
        for field in fields:
            if not isinstance(entry[field], str) or not entry[field].strip():
                raise ValueError(f"datalist {path}: {key}[{i}].{field} must be a path (string), "
                                 f"got {json.dumps(entry[field])}")  # fmt: skip
    entries = load_decathlon_datalist(path, is_segmentation=True, data_list_key=key, base_dir=base_dir)
    for i, entry in enumerate(entries):
        entry[index_key] = i
        for field in fields:
            if not Path(entry[field]).exists():
                raise FileNotFoundError(f"datalist {path}: {key}[{i}].{field} = {entry[field]} does not exist")
            try:
                check_scan(entry[field])
            except ValueError as error:
                raise ValueError(f"datalist {path}: {key}[{i}].{field}: {error}") from None
    return entries
