"""What a population's saved state depends on, so that a resumed training refuses a checkpoint made for another.

A checkpoint's error maps are indexed by case number and live on each case's preprocessed grid; its weights were
trained on one label table, one preprocessing and one architecture. Resumed with another training datalist, the
error map of case 3 would describe another image (only a different grid size is noticed, by
``ErrorMapStore.load_state_dict``); resumed with another spacing or network, the state means nothing. The
fingerprint (saved in every AutoLR checkpoint) records the training datalist's resolved entries, each file by its
path below the datalist's folder, its size and a digest of its first and last 64 KiB (cheap on large CTs, and it
survives copying the dataset elsewhere), the label table, and the resolved values of the settings the state
depends on (``autolr#fingerprint#settings`` in ``train.json``).
"""

from __future__ import annotations

import copy
import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monai.bundle import ConfigComponent, ConfigParser
from monai.data import load_decathlon_datalist

from ..data.labels import LABELS

SAMPLE = 1 << 16  # bytes digested at each end of a file


class _Unset:
    def __repr__(self) -> str:
        return "unset"


UNSET = _Unset()


def file_identity(path: str | os.PathLike, root: Path) -> dict:
    """``path`` (below ``root`` if it is there), its size and a digest of its ends; for a DICOM series folder, its
    files' names and sizes."""
    path = Path(path)
    real = path.resolve()  # one name for the file, whichever symlink the datalist reaches it through
    name = os.path.relpath(real, root) if real.is_relative_to(root) else str(path)
    digest = hashlib.sha256()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        for p in files:
            digest.update(f"{p.name}:{p.stat().st_size};".encode())
        return {"path": name, "files": len(files), "bytes": sum(p.stat().st_size for p in files),
                "digest": digest.hexdigest()[:16]}  # fmt: skip
    size = path.stat().st_size
    with open(path, "rb") as f:
        digest.update(f.read(SAMPLE))
        f.seek(max(size - SAMPLE, 0))
        digest.update(f.read(SAMPLE))
    return {"path": name, "bytes": size, "digest": digest.hexdigest()[:16]}


def _plain(value: Any) -> Any:
    """A resolved config value as plain data (lists, dicts, numbers, strings), savable with ``weights_only``."""
    if isinstance(value, ConfigComponent):
        value = value.get_config()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def training_fingerprint(parser: ConfigParser, datalist: str, settings: Sequence[str]) -> dict:
    """The fingerprint of the training ``parser`` describes: the ``training`` entries of ``datalist`` (the file
    ``load_datalist`` reads), the label table and the config values of ``settings`` (ids of ``parser``, resolved
    in a copy of it, so nothing is instantiated)."""
    root = Path(datalist).resolve().parent
    entries = load_decathlon_datalist(datalist, is_segmentation=True, data_list_key="training")
    resolver = ConfigParser(copy.deepcopy(parser.get()))
    return {
        "training": [{field: file_identity(entry[field], root) for field in ("image", "label")} for entry in entries],
        "labels": [[s.value, s.name] for s in LABELS],
        "settings": {key: _plain(resolver.get_parsed_content(key, instantiate=False)) for key in settings},
    }


def _changes(key: str, old: Any, new: Any) -> list[str]:
    if old == new:
        return []
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        return [c for k in sorted(set(old) | set(new)) for c in _changes(f"{key}#{k}", old.get(k, UNSET), new.get(k, UNSET))]
    return [f"{key} changed: {old!r} -> {new!r}"]


def _file_change(where: str, old: Mapping, new: Mapping) -> str | None:
    if old.get("path") != new["path"]:
        return f"{where} changed: {old.get('path')} -> {new['path']}"
    if old == new:
        return None
    if "files" in new and old.get("files") != new["files"]:
        what = f"{old.get('files')} -> {new['files']} files"
    elif old.get("bytes") != new["bytes"]:
        what = f"{old.get('bytes')} -> {new['bytes']} bytes"
    else:
        what = "same size, other content"
    return f"{where} {new['path']} is not the file it was ({what})"


def fingerprint_differences(saved: Mapping, current: Mapping) -> list[str]:
    """What differs between two fingerprints, one line each ("training[3].image changed: a.nii.gz -> b.nii.gz")."""
    found = []
    if not all(isinstance(saved.get(k), (list, dict)) for k in ("training", "labels", "settings")):
        return [f"the checkpoint's record of its training data and settings is unreadable ({sorted(saved)})"]
    old, new = saved["training"], current["training"]
    if len(old) != len(new):
        found.append(f"the training list has {len(new)} cases, the checkpoint's had {len(old)}")
    for i, (before, now) in enumerate(zip(old, new)):
        found += [c for field in now if (c := _file_change(f"training[{i}].{field}", before.get(field, {}), now[field]))]
    labels_old, labels_new = dict(map(tuple, saved["labels"])), dict(map(tuple, current["labels"]))
    found += [f"label {v} changed: {labels_old.get(v, UNSET)} -> {labels_new.get(v, UNSET)}"
              for v in sorted(set(labels_old) | set(labels_new)) if labels_old.get(v) != labels_new.get(v)]  # fmt: skip
    for key in sorted(set(saved["settings"]) | set(current["settings"])):
        found += _changes(key, saved["settings"].get(key, UNSET), current["settings"].get(key, UNSET))
    return found
