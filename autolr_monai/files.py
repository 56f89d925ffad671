"""Small file helpers: records and outputs written completely or not at all."""

from __future__ import annotations

import json
import math
import os
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
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


@contextmanager
def replaced_atomically(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """A hidden temporary file next to ``path`` (ending in ``suffix``, for writers that go by the extension), to
    write and check in the ``with`` block; when the block ends without error, the file is flushed to disk and
    renamed over ``path`` (``os.replace``: a reader sees the earlier file or the new one, never a partial one); on
    any error it is removed and the error propagates. Created with the user's umask (``mkstemp`` would make it
    0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp{suffix}")
    try:
        yield partial
        with open(partial, "rb") as f:
            os.fsync(f.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` completely or not at all (``replaced_atomically``); on failure (``OSError``, e.g.
    a full disk) the earlier file at ``path`` is left as it was."""
    with replaced_atomically(path) as partial:
        with open(partial, "w", newline="") as f:  # the text as given: CSV rows keep their own line ends
            f.write(text)


def write_json_atomic(path: str | os.PathLike, record) -> None:
    write_text_atomic(path, json.dumps(json_value(record), indent=1))
