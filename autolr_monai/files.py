"""Small file helpers shared by the training records."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path


def json_value(value):
    """``value`` with non-finite floats as ``None`` (JSON has no NaN), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    return value


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, flushed to disk, and a rename, so readers never see a
    partial file; on failure (``OSError``, e.g. a full disk) the earlier file at ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        with open(partial, "w", newline="") as f:  # the text as given: CSV rows keep their own line ends
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)  # a full disk leaves neither a partial file nor a broken target
        raise


def write_json_atomic(path: str | os.PathLike, record) -> None:
    write_text_atomic(path, json.dumps(json_value(record), indent=1))
