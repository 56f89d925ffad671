"""Finding the checkpoint to resume a training from: the newest complete one in the run's checkpoint folder, of a
population (``kind="autolr"``: Ignite's ``autolr_iteration=<n>.pt``) or of a single run with a step schedule
(``kind="single"``: MONAI's ``checkpoint_epoch=<n>.pt``); both end with ``checkpoint_final.pt``.

The population's checkpoints are written by Ignite's ``DiskSaver`` with ``atomic=True``: into a temporary file in
the same folder, renamed into place when complete, so a kill during a write leaves at most a ``tmp*`` file and
never a truncated ``autolr_iteration=<n>.pt``. A file is still opened before it is chosen (``weights_only``, memory
mapped, without reading the tensors) so that a damaged disk or a copied-in partial file is passed over, and said.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

logger = logging.getLogger("autolr_monai.autolr")

PERIODIC = {"autolr": re.compile(r"^autolr_iteration=(\d+)\.pt$"), "single": re.compile(r"^checkpoint_epoch=(\d+)\.pt$")}
FINAL = "checkpoint_final.pt"
#: What a checkpoint of each kind holds at least.
CONTENTS = {"autolr": {"engine", "members", "schedule"}, "single": {"trainer", "model", "optimizer"}}
DESCRIPTION = {"autolr": "AutoLR population", "single": "single training run"}


def _unreadable(path: Path, kind: str) -> str | None:
    """Why ``path`` is not a checkpoint of ``kind`` to resume from, or None when it is one."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # any failure to read means: not a checkpoint to resume from
        return f"cannot be read ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
    state = state.get("autolr", state) if isinstance(state, dict) else state  # Ignite unwraps a single object
    if not isinstance(state, dict) or not CONTENTS[kind] <= set(state):
        return f"holds no {DESCRIPTION[kind]} (expected at least {', '.join(sorted(CONTENTS[kind]))})"
    return None


def _readable(path: Path, kind: str) -> bool:
    why = _unreadable(path, kind)
    if why:
        logger.warning("AutoLR: %s %s; looking for an older checkpoint", path, why)
    return why is None


def latest_checkpoint(folder: str | Path, kind: str = "autolr") -> str | None:
    """The newest readable checkpoint of ``kind`` in ``folder`` (the final one first, then by epoch), or None."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    candidates = [(int(m.group(1)), p) for p in folder.iterdir() if (m := PERIODIC[kind].match(p.name))]
    candidates.sort(reverse=True)
    if (folder / FINAL).is_file():
        candidates.insert(0, (None, folder / FINAL))
    return next((str(p) for _, p in candidates if _readable(p, kind)), None)


def checkpoint_to_load(resume_from: str | None, folder: str | Path, resume: bool, kind: str = "autolr") -> str | None:
    """The checkpoint ``run training`` loads: ``resume_from`` if given (it must exist and be of ``kind``), else
    with ``resume`` the newest complete one of ``kind`` in ``folder`` (none: a fresh start, said in the log)."""
    if resume_from:
        if not Path(resume_from).is_file():
            raise FileNotFoundError(f"autolr#resume_from: {resume_from} is not a file")
        why = _unreadable(Path(resume_from), kind)
        if why:
            raise ValueError(f"autolr#resume_from: {resume_from} {why}")
        return str(resume_from)
    if not resume:
        return None
    path = latest_checkpoint(folder, kind)
    if path is None:
        logger.info("AutoLR: --resume: no complete checkpoint in %s, starting from scratch", folder)
    else:
        logger.info("AutoLR: --resume: continuing from %s", path)
    return path
