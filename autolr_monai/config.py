"""Helpers for values that arrive through bundle configs and command-line overrides."""

from __future__ import annotations

import difflib
import inspect
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence

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


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _numbers(value: object, count: int | None = None) -> bool:
    return isinstance(value, (list, tuple)) and (len(value) == count if count else len(value) > 0) and all(map(_number, value))


def _boolean(value: object) -> bool:
    try:
        flag(value, "")
    except ValueError:
        return False
    return True


Rule = tuple[str, Callable[[object], bool]]
POSITIVE_INT: Rule = ("a positive integer", lambda v: _integer(v) and v >= 1)
NON_NEGATIVE_INT: Rule = ("an integer >= 0", lambda v: _integer(v) and v >= 0)
POSITIVE: Rule = ("a number > 0", lambda v: _number(v) and v > 0)
NON_NEGATIVE: Rule = ("a number >= 0", lambda v: _number(v) and v >= 0)
BOOLEAN: Rule = ("true or false", _boolean)
POSITIVE_LIST: Rule = ("a non-empty list of numbers > 0", lambda v: _numbers(v) and min(v) > 0)

#: Preprocessing settings shared by training, evaluation and inference (``check_preprocessing``).
PREPROCESSING: dict[str, Rule] = {
    "spacing": ("3 voxel sizes > 0 in mm (Spacingd would keep the scan's own spacing on an axis <= 0)",
                lambda v: _numbers(v, 3) and min(v) > 0),
    "hu_window": ("[low, high] in HU with low < high", lambda v: _numbers(v, 2) and v[0] < v[1]),
    "hu_scale": POSITIVE,
}  # fmt: skip

#: The training settings of ``train.json`` and what each must be (``check_training_settings``).
TRAINING: dict[str, Rule] = {
    "seed": NON_NEGATIVE_INT, "max_epochs": POSITIVE_INT, "batches_per_epoch": POSITIVE_INT,
    "val_interval": POSITIVE_INT, "checkpoint_interval": POSITIVE_INT, "patch_size": POSITIVE_INT,
    "patches_per_batch": POSITIVE_INT, "patches_per_image": POSITIVE_INT, "num_workers": NON_NEGATIVE_INT,
    "inference_tile": ("a positive integer or 3 of them (voxels)", lambda v: POSITIVE_INT[1](v) or (
        isinstance(v, (list, tuple)) and len(v) == 3 and all(map(POSITIVE_INT[1], v)))),
    "spacing_jitter": NON_NEGATIVE, "rotate_range": ("3 angles >= 0 in degrees", lambda v: _numbers(v, 3) and min(v) >= 0),
    "momentum": ("a number in [0, 1)", lambda v: _number(v) and 0 <= v < 1), "weight_decay": NON_NEGATIVE,
    "amp": BOOLEAN, "resume": BOOLEAN,
    "lr_schedule#eta0": POSITIVE, "lr_schedule#factor": POSITIVE, "lr_schedule#gamma": POSITIVE_INT,
    "lr_schedule#warmup_epochs": NON_NEGATIVE_INT,
    "isample#enabled": BOOLEAN, "isample#mode": ("'exact' or 'rejection'", lambda v: v in ("exact", "rejection")),
    "isample#update_every": POSITIVE_INT, "isample#n_cases": POSITIVE_INT, "isample#tensorboard_every": POSITIVE_INT,
    "autolr#initial_lrs": POSITIVE_LIST, "autolr#factors": POSITIVE_LIST, "autolr#period": POSITIVE_INT,
    "autolr#warmup_epochs": NON_NEGATIVE_INT, "autolr#warmup_start": NON_NEGATIVE,
    "autolr#same_start": BOOLEAN, "autolr#swap_from": ("'end' (the winner's state at the end of the period) or 'best' (at its best epoch)",
                    lambda v: v in ("end", "best")),
    "autolr#max_grad_norm": ("null or a number > 0", lambda v: v is None or POSITIVE[1](v)),
}  # fmt: skip


#: The inference settings of ``inference.json`` and what each must be (``check_inference_settings``).
INFERENCE: dict[str, Rule] = {
    "inference_tile": TRAINING["inference_tile"], "tiles_per_batch": POSITIVE_INT, "num_workers": NON_NEGATIVE_INT,
}  # fmt: skip


def _check(values: Mapping[str, object], rules: Mapping[str, Rule]) -> None:
    for key, (expected, valid) in rules.items():
        if not valid(values[key]):
            raise ValueError(f"{key}: expected {expected}, got {values[key]!r}")


def check_preprocessing(spacing: object, hu_window: object, hu_scale: object) -> None:
    """Refuse preprocessing settings that MONAI would take without a word but not as meant (a voxel size of 0
    keeps the scan's spacing; a reversed window inverts the intensities), naming the setting, the value and what
    was expected. For every config that preprocesses scans (training, evaluation, inference)."""
    _check({"spacing": spacing, "hu_window": hu_window, "hu_scale": hu_scale}, PREPROCESSING)


def check_inference_settings(inference_tile: object, tiles_per_batch: object, num_workers: object,
                             device: object) -> None:  # fmt: skip
    """Refuse inference settings of the wrong type or range (``INFERENCE``: a tile of 16.5 voxels would run as 16,
    a worker count of -1 fails inside the DataLoader) and a device this machine does not have, before the model
    is loaded, naming the setting, the value and what was expected."""
    import torch

    _check({"inference_tile": inference_tile, "tiles_per_batch": tiles_per_batch, "num_workers": num_workers}, INFERENCE)
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device: expected 'cpu', 'cuda' or 'cuda:<index>', got {device!r} ({e})") from None
    if chosen.type == "cuda" and not (torch.cuda.is_available() and (chosen.index or 0) < torch.cuda.device_count()):
        found = f"{torch.cuda.device_count()} CUDA GPU(s)" if torch.cuda.is_available() else "no CUDA GPU"
        raise ValueError(f"device: {device!r} was asked for, but this machine has {found} (torch {torch.__version__}); "
                         "pass --device cpu, or leave the default to pick a GPU when there is one")  # fmt: skip


def check_top_level_keys(parser=None, reference_dir: str | None = None) -> None:
    """Refuse a top-level setting that no config of the bundle declares and nothing refers to: MONAI adds any id
    it is given, so ``--max_epoch 2`` or ``--largest_componet false`` would be ignored without a word. Declared are
    the top-level keys of the JSON files in ``reference_dir`` (default: the bundle's ``configs/``), MONAI's own
    (``_meta_``, keys starting with ``_``) and any key that another setting refers to (``@key``) in the config
    being run; ``parser`` is that config's (default: ``current_parser()``)."""
    import glob
    import json
    import re

    from .paths import bundle_root

    parser = parser or current_parser()
    reference_dir = reference_dir or os.path.join(bundle_root(), "configs")
    declared: set[str] = set()
    for name in glob.glob(os.path.join(reference_dir, "*.json")):
        with open(name) as f:
            content = json.load(f)
        declared |= {key.lstrip("+") for key in content} if isinstance(content, dict) else set()
    config = parser.get()
    referred = set(re.findall(r"@([A-Za-z_]\w*)", json.dumps(config, default=str)))
    unknown = sorted(k for k in config if not k.startswith("_") and k not in declared | referred)
    if unknown:
        hints = [f"{k!r} (did you mean {', '.join(map(repr, close))}?)" if (close := difflib.get_close_matches(k, declared, 2)) else repr(k)
                 for k in unknown]  # fmt: skip
        raise ValueError(f"unknown setting {', '.join(hints)}: no config of the bundle ({reference_dir}) declares it, "
                         "so it would change nothing")  # fmt: skip


def check_training_settings(parser) -> None:
    """Refuse, before anything is built, training settings (``TRAINING``, ``PREPROCESSING``) of the wrong type or
    range, and combinations that would train otherwise than asked, instead of letting them be rounded (a period
    of 1.5 epochs run as 1), taken as "keep" or quietly shrunk (a batch of 16 patches at 5 per image holds 15).
    ``parser`` is the config's (``current_parser()``); values come as resolved there (command-line overrides
    included)."""
    values = {key: parser.get_parsed_content(key) for key in (*PREPROCESSING, *TRAINING)}
    _check(values, PREPROCESSING)
    _check(values, TRAINING)
    batch, per_image = values["patches_per_batch"], values["patches_per_image"]
    if batch % per_image:
        raise ValueError(f"patches_per_batch {batch} is not a multiple of patches_per_image {per_image}: a batch "
                         f"would hold {batch // per_image * per_image} patches")  # fmt: skip
    epochs = values["max_epochs"]
    if values["val_interval"] > epochs:
        raise ValueError(f"val_interval {values['val_interval']} is more than max_epochs {epochs}: training would "
                         "end without a validation score, and write no model.pt")  # fmt: skip
    if flag(values["isample#enabled"], "isample#enabled") and values["isample#update_every"] > epochs:
        raise ValueError(f"isample#update_every {values['isample#update_every']} is more than max_epochs {epochs}: "
                         "the error maps would never be refreshed (isample#enabled false turns isample off)")  # fmt: skip
    if values["spacing_jitter"] >= min(values["spacing"]):
        raise ValueError(f"spacing_jitter {values['spacing_jitter']} mm is not smaller than the smallest voxel size "
                         f"{min(values['spacing'])} mm of spacing {values['spacing']}")  # fmt: skip
    if len(values["autolr#factors"]) != len(values["autolr#initial_lrs"]):
        raise ValueError(f"autolr#factors has {len(values['autolr#factors'])} entries and autolr#initial_lrs "
                         f"{len(values['autolr#initial_lrs'])}: give one rate and one factor per run")  # fmt: skip


def _ours(error: BaseException) -> bool:
    """An error raised on purpose by this package (any of its modules): its message says what is wrong and where."""
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    in_package = tb is not None and os.path.abspath(tb.tb_frame.f_code.co_filename).startswith(_PACKAGE)
    own_type = type(error).__module__.startswith("autolr_monai")
    return in_package and (isinstance(error, (ValueError, OSError)) or own_type)


def _environment(error: BaseException) -> bool:
    """A failed system call, wherever it was made (disk full, permission denied, I/O error): the machine's fault,
    said completely by its message."""
    return isinstance(error, OSError) and error.errno is not None


def short_errors() -> None:
    """Print an error this package raised on purpose (bad input or settings, a diverged population) or a failed
    system call (``OSError`` with an errno: disk full, ...) as its message alone, as the last line, without the
    traceback MONAI's config and transform layers wrap around it; Ctrl-C prints the interrupt's message
    (``"interrupted"`` unless the training that stopped says how to resume). ``AUTOLR_TRACEBACK=1`` keeps the full
    traceback; any other error keeps it too."""
    if os.environ.get("AUTOLR_TRACEBACK") or getattr(sys.excepthook, "autolr_short", False):
        return
    previous = sys.excepthook

    def hook(kind, error, tb):
        chain, seen = [], set()
        while error is not None and id(error) not in seen:
            seen.add(id(error))
            chain.append(error)
            error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)  # "from None"
        interrupt = next((e for e in chain if isinstance(e, KeyboardInterrupt)), None)
        if interrupt is not None:
            print(f"\n{str(interrupt) or 'interrupted'}", file=sys.stderr)
            return
        ours = [e for e in chain if _ours(e) or _environment(e)]
        if not ours:
            return previous(kind, chain[0], tb)
        print(f"\n(set AUTOLR_TRACEBACK=1 for the full traceback)\n{type(ours[-1]).__name__}: {ours[-1]}", file=sys.stderr)

    hook.autolr_short = True
    sys.excepthook = hook
