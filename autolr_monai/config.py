"""Helpers for values that arrive through bundle configs and command-line overrides."""

from __future__ import annotations

import difflib
import inspect
import os
import sys
from collections.abc import Mapping, Sequence

_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}
_PACKAGE = os.path.dirname(os.path.abspath(__file__))


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


def check_section_keys(parser, sections: Sequence[str], reference: str | None = None) -> None:
    """Refuse keys in our components' config sections (``isample``, ``autolr``, ...) that the bundle's
    ``train.json`` does not declare: MONAI adds any id it is given, so ``--isample#update_evry 5`` would otherwise
    be ignored without a word. ``reference`` is the config that declares the sections (default: the bundle's)."""
    from monai.bundle import ConfigParser

    from .paths import bundle_root

    reference = reference or os.path.join(bundle_root(), "configs", "train.json")
    known = ConfigParser.load_config_file(reference)
    for section in sections:
        given = parser.get(section)
        if not isinstance(given, Mapping):
            raise ValueError(f"config section {section!r} must be a mapping of settings, got {given!r}")
        allowed = set(known.get(section, {}))
        unknown = sorted(set(given) - allowed)
        if unknown:
            hints = [f"{k!r} (did you mean {', '.join(map(repr, close))}?)" if (close := difflib.get_close_matches(k, allowed, 2)) else repr(k)
                     for k in unknown]  # fmt: skip
            raise ValueError(f"config section {section!r}: unknown key {', '.join(hints)}; known keys: {sorted(allowed)}")


def _ours(error: BaseException) -> bool:
    """An error raised on purpose by this package: its message says what is wrong and where."""
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    in_package = tb is not None and os.path.abspath(tb.tb_frame.f_code.co_filename).startswith(_PACKAGE)
    own_type = type(error).__module__.startswith("autolr_monai")
    return in_package and (isinstance(error, (ValueError, OSError)) or own_type)


def short_errors() -> None:
    """Print an error this package raised on purpose (bad input or settings, a diverged population) as its
    message, without the traceback MONAI's config and transform layers wrap around it. ``AUTOLR_TRACEBACK=1``
    keeps the full traceback; any other error keeps it too."""
    if os.environ.get("AUTOLR_TRACEBACK") or getattr(sys.excepthook, "autolr_short", False):
        return
    previous = sys.excepthook

    def hook(kind, error, tb):
        chain, seen = [], set()
        while error is not None and id(error) not in seen:
            seen.add(id(error))
            chain.append(error)
            error = error.__cause__ or error.__context__
        ours = [e for e in chain if _ours(e)]
        if not ours:
            return previous(kind, chain[0], tb)
        print(f"{type(ours[-1]).__name__}: {ours[-1]}\n(set AUTOLR_TRACEBACK=1 for the full traceback)", file=sys.stderr)

    hook.autolr_short = True
    sys.excepthook = hook
