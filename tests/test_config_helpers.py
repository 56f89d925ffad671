"""Config helpers: boolean flags, unknown keys, settings checks and the short error messages."""

import re

import pytest

from autolr_monai.config import flag


@pytest.mark.parametrize("value,expected", [(True, True), (False, False), ("false", False), ("True", True), ("0", False)])
def test_flag_accepts_booleans_and_their_spellings(value, expected):
    assert flag(value, "isample#enabled") is expected


def test_flag_rejects_anything_else():
    with pytest.raises(ValueError, match="isample#enabled must be true or false, got 'maybe'"):
        flag("maybe", "isample#enabled")


def test_unknown_keys_in_our_sections_are_refused_with_a_suggestion():
    from monai.bundle import ConfigParser

    from autolr_monai.config import check_section_keys
    from tests.conftest import REPO

    parser = ConfigParser()
    parser.read_config([str(REPO / "bundle" / "configs" / "train.json"), str(REPO / "bundle" / "configs" / "demo.json")])
    check_section_keys(parser, ["isample", "autolr", "lr_schedule"])  # the bundle's own: fine
    parser.update({"isample#update_evry": 5})
    with pytest.raises(ValueError, match=r"section 'isample': unknown key 'update_evry' \(did you mean 'update_every'\?\)"):
        check_section_keys(parser, ["isample"])
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundle" / "configs" / "train.json"))
    parser.update({"autolr#perod": 3})
    with pytest.raises(ValueError, match=r"section 'autolr': unknown key 'perod' \(did you mean 'period'"):
        check_section_keys(parser, ["autolr"])


def _report(error: BaseException, wrap: bool = True) -> None:
    """Hand ``error`` to ``sys.excepthook`` as MONAI would deliver it: wrapped in a RuntimeError of its config layer."""
    import sys

    try:
        try:
            raise error
        except BaseException as inner:
            if not wrap:
                raise
            raise RuntimeError("Failed to evaluate ConfigExpression") from inner
    except BaseException as outer:
        sys.excepthook(type(outer), outer, outer.__traceback__)


@pytest.fixture
def short(monkeypatch):
    """``short_errors()`` installed over a recording fallback hook; yields the errors the fallback got."""
    import sys

    from autolr_monai.config import short_errors

    monkeypatch.delenv("AUTOLR_TRACEBACK", raising=False)
    fallback = []
    monkeypatch.setattr(sys, "excepthook", lambda *args: fallback.append(args))
    short_errors()
    return fallback


def test_short_errors_print_our_message_not_the_traceback(short, capsys):
    from autolr_monai.data import load_datalist

    try:  # as MONAI wraps a transform's error: our error inside a RuntimeError
        load_datalist("/nowhere/datalist.json", "training")
    except FileNotFoundError as ours:
        _report(ours)
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("FileNotFoundError: datalist /nowhere/datalist.json does not exist")
    assert "AUTOLR_TRACEBACK=1" in err and "Traceback" not in err and not short
    _report(KeyError("missing"))  # an error not raised by this package keeps the full report
    assert len(short) == 1 and isinstance(short[0][1], RuntimeError) and isinstance(short[0][1].__cause__, KeyError)


def test_short_errors_end_with_a_failed_system_call_or_the_interrupt(short, capsys):
    """A full disk, wherever the write failed, is the last line (not MONAI's wrapper); Ctrl-C prints how to go on."""
    import errno

    _report(OSError(errno.ENOSPC, "No space left on device", "/runs/x/checkpoints/tmp123"))
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        "OSError: [Errno 28] No space left on device: '/runs/x/checkpoints/tmp123'"  # fmt: skip
    _report(KeyboardInterrupt("interrupted; resume with --resume true"), wrap=False)
    assert capsys.readouterr().err.strip().splitlines() == ["interrupted; resume with --resume true"]
    _report(KeyboardInterrupt(), wrap=False)
    assert capsys.readouterr().err.strip() == "interrupted"
    assert not short


def test_short_errors_print_our_message_not_the_system_error_it_replaced(short, capsys, tmp_path, monkeypatch):
    """``raise ValueError(...) from None`` inside ``except OSError``: our prepared message is the last line, not
    the OSError it deliberately hid (a read-only output folder printed the raw OSError)."""
    import tempfile

    from autolr_monai.inference import check_output_dir

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system", str(tmp_path / ".autolr-write-check-x"))

    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    try:
        check_output_dir(tmp_path)
    except ValueError as ours:
        _report(ours)
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"ValueError: output_dir {tmp_path} is not writable (Read-only file system, errno 30)")


def _bundle_parser(*overlays: str, **overrides):
    from monai.bundle import ConfigParser

    from tests.conftest import REPO

    parser = ConfigParser()
    parser.read_config([str(REPO / "bundle" / "configs" / name) for name in ("train.json", *overlays)])
    parser.update({"bundle_root": str(REPO / "bundle"), **overrides})
    return parser


@pytest.mark.parametrize("overlays", [(), ("demo.json",), ("sched_a.json",), ("sched_b.json",), ("multi_gpu_train.json",),
                                      ("demo.json", "study_cpu.json"), ("study_gpu.json",), ("evaluate.json",)])  # fmt: skip
def test_the_bundles_own_settings_pass_the_checks(overlays):
    """Every overlay, and `run evaluate` (train.json's checks run there too)."""
    from autolr_monai.config import check_training_settings

    check_training_settings(_bundle_parser(*overlays))


@pytest.mark.parametrize("overrides,message", [
    ({"autolr#period": 1.5}, "autolr#period: expected a positive integer, got 1.5"),
    ({"autolr#period": "abc"}, "autolr#period: expected a positive integer, got 'abc'"),
    ({"spacing": [0, 6, 8]}, "spacing: expected 3 voxel sizes > 0 in mm (Spacingd would keep the scan's own spacing on an "
                             "axis <= 0), got [0, 6, 8]"),
    ({"spacing": [3.0, 3.0]}, "spacing: expected 3 voxel sizes > 0 in mm"),
    ({"patches_per_batch": 16, "patches_per_image": 5},
     "patches_per_batch 16 is not a multiple of patches_per_image 5: a batch would hold 15 patches"),
    ({"patches_per_batch": 4, "patches_per_image": 5},
     "patches_per_batch 4 is not a multiple of patches_per_image 5: a batch would hold 0 patches"),
    ({"lr_schedule#eta0": -0.05}, "lr_schedule#eta0: expected a number > 0, got -0.05"),
    ({"batches_per_epoch": 0}, "batches_per_epoch: expected a positive integer, got 0"),
    ({"max_epochs": 20.0}, "max_epochs: expected a positive integer, got 20.0"),
    ({"max_epochs": True}, "max_epochs: expected a positive integer, got True"),
    ({"val_interval": -1}, "val_interval: expected a positive integer, got -1"),
    ({"checkpoint_interval": "5"}, "checkpoint_interval: expected a positive integer, got '5'"),
    ({"patch_size": 0}, "patch_size: expected a positive integer, got 0"),
    ({"num_workers": -2}, "num_workers: expected an integer >= 0, got -2"),
    ({"isample#n_cases": 0}, "isample#n_cases: expected a positive integer, got 0"),
    ({"isample#update_every": 0.5}, "isample#update_every: expected a positive integer, got 0.5"),
    ({"isample#mode": "exakt"}, "isample#mode: expected 'exact' or 'rejection', got 'exakt'"),
    ({"isample#enabled": "maybe"}, "isample#enabled: expected true or false, got 'maybe'"),
    ({"autolr#factors": [2.0, 0.0, 0.5]}, "autolr#factors: expected a non-empty list of numbers > 0, got [2.0, 0.0, 0.5]"),
    ({"autolr#factors": [2.0, 1.0]}, "autolr#factors has 2 entries and autolr#initial_lrs 3: give one rate and one factor per run"),
    ({"autolr#initial_lrs": []}, "autolr#initial_lrs: expected a non-empty list of numbers > 0, got []"),
    ({"autolr#initial_lrs": [0.05, float("nan"), 0.01]}, "autolr#initial_lrs: expected a non-empty list of numbers > 0, got [0.05, nan, 0.01]"),
    ({"autolr#warmup_epochs": -1}, "autolr#warmup_epochs: expected an integer >= 0, got -1"),
    ({"lr_schedule#warmup_epochs": 1.5}, "lr_schedule#warmup_epochs: expected an integer >= 0, got 1.5"),
    ({"autolr#max_grad_norm": 0}, "autolr#max_grad_norm: expected null or a number > 0, got 0"),
    ({"hu_window": [1000, -1000]}, "hu_window: expected [low, high] in HU with low < high, got [1000, -1000]"),
    ({"hu_scale": 0}, "hu_scale: expected a number > 0, got 0"),
    ({"momentum": 1.0}, "momentum: expected a number in [0, 1), got 1.0"),
    ({"rotate_range": [10.0, -4.0, 4.0]}, "rotate_range: expected 3 angles >= 0 in degrees, got [10.0, -4.0, 4.0]"),
    ({"amp": "perhaps"}, "amp: expected true or false, got 'perhaps'"),
    ({"seed": -1}, "seed: expected an integer >= 0, got -1"),
    ({"val_interval": 30}, "val_interval 30 is more than max_epochs 20: training would end without a validation score"),
    ({"isample#update_every": 21}, "isample#update_every 21 is more than max_epochs 20: the error maps would never be "
                                   "refreshed"),
    ({"spacing_jitter": 3.0}, "spacing_jitter 3.0 mm is not smaller than the smallest voxel size 3.0 mm"),
])  # fmt: skip
def test_settings_of_the_wrong_type_range_or_combination_are_refused_naming_key_value_and_expectation(overrides, message):
    from autolr_monai.config import check_training_settings

    with pytest.raises(ValueError) as error:
        check_training_settings(_bundle_parser("demo.json", **overrides))
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_isample_off_needs_no_refresh_interval_within_training():
    from autolr_monai.config import check_training_settings

    check_training_settings(_bundle_parser("demo.json", **{"isample#enabled": "false", "isample#update_every": 50}))


def test_preprocessing_check_for_inference():
    from autolr_monai.config import check_preprocessing

    check_preprocessing([1.0, 1.0, 1.5], [-1000, 1000], 218.0)
    with pytest.raises(ValueError, match=r"^spacing: expected 3 voxel sizes > 0 in mm .*, got \[1.0, -1.0, 1.5\]$"):
        check_preprocessing([1.0, -1.0, 1.5], [-1000, 1000], 218.0)
    with pytest.raises(ValueError, match=r"^hu_window: expected \[low, high\] in HU with low < high, got \[0, 0\]$"):
        check_preprocessing([1.0, 1.0, 1.5], [0, 0], 218.0)


def test_training_checks_run_when_the_workflow_starts(tiny_datalist, tmp_path):
    """train.json's checks call them: a bad override stops `run training` before anything is built or written."""
    from monai.bundle import ConfigWorkflow

    from tests.conftest import REPO

    configs = REPO / "bundle" / "configs"
    workflow = ConfigWorkflow(config_file=[str(configs / "train.json"), str(configs / "demo.json")], workflow_type="train",
                              **{"datalist": tiny_datalist, "run_dir": str(tmp_path / "run"), "autolr#period": 1.5})  # fmt: skip
    with pytest.raises(RuntimeError) as error:
        workflow.initialize()
    assert "autolr#period: expected a positive integer, got 1.5" in str(error.value.__cause__)
    assert not (tmp_path / "run").exists()


def test_a_misspelled_top_level_setting_is_refused_with_a_hint():
    """MONAI adds any id it is given: ``--max_epoch 2`` trained the default number of epochs without a word."""
    from autolr_monai.config import check_top_level_keys

    check_top_level_keys(_bundle_parser("demo.json"))  # the bundle's own settings pass
    with pytest.raises(ValueError, match=r"^unknown setting 'max_epoch' \(did you mean 'max_epochs'"):
        check_top_level_keys(_bundle_parser("demo.json", max_epoch=2))
    check_top_level_keys(_bundle_parser(my_window=[-200, 300], hu_window="@my_window"))  # a key referred to is used


@pytest.mark.parametrize("settings,message", [
    ({"inference_tile": 16.5}, "inference_tile: expected a positive integer or 3 of them (voxels), got 16.5"),
    ({"inference_tile": 0}, "inference_tile: expected a positive integer or 3 of them (voxels), got 0"),
    ({"tiles_per_batch": 1.5}, "tiles_per_batch: expected a positive integer, got 1.5"),
    ({"num_workers": -1}, "num_workers: expected an integer >= 0, got -1"),
    ({"device": "gpu"}, "device: expected 'cpu', 'cuda' or 'cuda:<index>', got 'gpu'"),
    ({"device": "cuda:7"}, "device: 'cuda:7' was asked for, but this machine has"),
], ids=["fractional-tile", "zero-tile", "fractional-batch", "negative-workers", "unknown-device", "missing-gpu"])  # fmt: skip
def test_inference_settings_are_checked_before_the_model_is_loaded(settings, message):
    from autolr_monai.config import check_inference_settings

    values = {"inference_tile": 40, "tiles_per_batch": 1, "num_workers": 0, "device": "cpu"}
    check_inference_settings(**values)
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        check_inference_settings(**{**values, **settings})
