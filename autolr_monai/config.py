"""Helpers for values that arrive through bundle configs and command-line overrides."""

from __future__ import annotations

import inspect

_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


def flag(value: object, name: str) -> bool:
    """A boolean setting: ``True``/``False`` or their usual spellings (``--isample#enabled false`` arrives from the
    command line as the string ``'false'``, which Python would take as true)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE | _FALSE:
        return text in _TRUE
    raise ValueError(f"config value {name} must be true or false, got {value!r}")


def caller_instance(cls: type):
    """The nearest ``self`` up the call stack that is an instance of ``cls``, or None.

    MONAI configs cannot refer to the parser or workflow evaluating them; the helpers that need one find it here.
    """
    frame = inspect.currentframe()
    while frame is not None:
        owner = frame.f_locals.get("self")
        if isinstance(owner, cls):
            return owner
        frame = frame.f_back
    return None


def current_parser():
    """The ``monai.bundle.ConfigParser`` evaluating the calling config expression: AutoLR needs it to instantiate
    one copy of the run's components per population member (``autolr_monai.autolr.members_from_config``)."""
    from monai.bundle import ConfigParser

    parser = caller_instance(ConfigParser)
    if parser is None:
        raise RuntimeError("current_parser() must be called from an expression of a MONAI bundle config")
    return parser


def single_process(what: str) -> None:
    """Refuse to start ``what`` under ``torchrun`` with several processes: each would train the same run and write
    the same files. Only the AutoLR population splits its runs across processes."""
    import ignite.distributed as idist

    if idist.get_world_size() > 1:
        raise ValueError(f"{what} cannot run in {idist.get_world_size()} processes: every process would train the "
                         "same run into the same folder; use AutoLR (the default training) with multi_gpu_train.json")
