"""Finding the checkpoint to resume a population from: the newest complete one in the run's checkpoint folder.

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

PERIODIC = re.compile(r"^autolr_iteration=(\d+)\.pt$")
FINAL = "checkpoint_final.pt"


def _readable(path: Path) -> bool:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # any failure to read means: not a checkpoint to resume from
        logger.warning("AutoLR: %s cannot be read (%s: %s); looking for an older checkpoint",
                       path, type(error).__name__, str(error).splitlines()[0] if str(error) else "")  # fmt: skip
        return False
    state = state.get("autolr", state) if isinstance(state, dict) else state  # Ignite unwraps a single object
    if not isinstance(state, dict) or not {"engine", "members", "schedule"} <= set(state):
        logger.warning("AutoLR: %s holds no AutoLR population; looking for an older checkpoint", path)
        return False
    return True


def latest_checkpoint(folder: str | Path) -> str | None:
    """The newest readable population checkpoint in ``folder`` (the final one first, then by epoch), or None."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    candidates = [(int(m.group(1)), p) for p in folder.iterdir() if (m := PERIODIC.match(p.name))]
    candidates.sort(reverse=True)
    if (folder / FINAL).is_file():
        candidates.insert(0, (None, folder / FINAL))
    return next((str(p) for _, p in candidates if _readable(p)), None)


def checkpoint_to_load(resume_from: str | None, folder: str | Path, resume: bool) -> str | None:
    """The checkpoint ``run training`` loads: ``resume_from`` if given (it must exist), else with ``resume`` the
    newest complete one in ``folder`` (none: a fresh start, said in the log), else None."""
    if resume_from:
        if not Path(resume_from).is_file():
            raise FileNotFoundError(f"autolr#resume_from: {resume_from} is not a file")
        return str(resume_from)
    if not resume:
        return None
    path = latest_checkpoint(folder)
    if path is None:
        logger.info("AutoLR: --resume: no complete checkpoint in %s, starting from scratch", folder)
    else:
        logger.info("AutoLR: --resume: continuing from %s", path)
    return path
