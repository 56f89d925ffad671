"""Where the bundle lives, for configs that must work wherever ``python -m monai.bundle run`` is launched."""

from __future__ import annotations

from pathlib import Path

from .config import caller_instance


def bundle_root() -> str:
    """The bundle folder (the parent of ``configs/``) of the running MONAI bundle workflow.

    MONAI configs cannot see their own file name, so this looks for the ``ConfigWorkflow`` being run up the call
    stack and takes its ``config_root_path``; outside a workflow (a bare ``ConfigParser``) it falls back to the
    ``bundle/`` folder of this source tree, then to the working directory. ``--bundle_root`` overrides it.
    """
    from monai.bundle.workflows import ConfigWorkflow

    workflow = caller_instance(ConfigWorkflow)
    if workflow is not None:
        root = Path(workflow.config_root_path).resolve()
        return str(root.parent if root.name == "configs" else root)
    packaged = Path(__file__).resolve().parents[1] / "bundle"
    return str(packaged if (packaged / "configs").is_dir() else Path.cwd())
