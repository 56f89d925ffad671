"""The bundle's configs resolve: paper-size components, schedule overlays, bundle root."""

from pathlib import Path

import pytest
import torch
from ignite.handlers import PiecewiseLinear
from monai.bundle import ConfigParser

from autolr_monai.paths import bundle_root
from tests.conftest import REPO

CONFIGS = REPO / "bundle" / "configs"


def _parser(*overlays: str) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), *[str(CONFIGS / o) for o in overlays]])
    parser.update({"bundle_root": str(REPO / "bundle")})
    return parser


def test_paper_config_components():
    parser = _parser()
    net = parser.get_parsed_content("network_def")
    assert sum(p.numel() for p in net.parameters()) == 653_413 and net.receptive_field == 123
    optimizer = parser.get_parsed_content("optimizer")
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.defaults["nesterov"] and optimizer.defaults["momentum"] == 0.8
    assert [g["weight_decay"] for g in optimizer.param_groups] == [1e-4, 0.0]
    assert parser.get_parsed_content("train#batch_size") * parser["patches_per_image"] == 40
    assert parser["batches_per_epoch"] == 100
    schedule = parser.get_parsed_content("lr_scheduler")
    assert isinstance(schedule, PiecewiseLinear)
    inferer = parser.get_parsed_content("validate#inferer")
    assert inferer.tile_size == (96, 96, 96) and inferer.output == "labels"


@pytest.mark.parametrize("overlay,eta0", [("sched_a.json", 0.05), ("sched_b.json", 0.025)])
def test_schedule_overlays(overlay, eta0):
    parser = _parser(overlay)
    scheduler = parser.get_parsed_content("lr_scheduler")
    assert max(scheduler.values) == pytest.approx(eta0)
    assert parser["lr_schedule"]["gamma"] == 400 and parser["lr_schedule"]["factor"] == 0.1
    assert parser.get("training").replace("::", "#") == "@train#run"  # one run with the step schedule


def test_autolr_is_the_default_with_the_papers_population():
    parser = _parser()
    assert parser.get("training").replace("::", "#") == "@autolr#run"
    schedule = parser.get_parsed_content("autolr#schedule")
    assert schedule.runs == 3 and schedule.current["lr"] == [0.05, 0.01, 0.005]
    assert schedule.factors["lr"] == [2.0, 1.0, 0.5] and schedule.period == 50
    assert schedule.warmup_iterations == 10 * 100
    assert parser.get_parsed_content("validate#key_metric#val_mean_dice").__class__.__name__ == "LocalMeanDice"
    # members override the step-schedule handler, the single run's history and its best-model saver
    assert parser["autolr"]["member_overrides"] == {"train#schedule_handlers": [], "train#history_handlers": [],
                                                    "validate#checkpoint_handlers": []}  # fmt: skip


def test_multi_gpu_overlay_initialises_ignite_distributed_and_keeps_autolr():
    parser = _parser("multi_gpu_train.json")
    assert parser.get("training").replace("::", "#") == "@autolr#run"
    assert any("ignite.distributed.initialize(@backend, timeout=" in line for line in parser["initialize"])
    assert parser["finalize"] == ["$ignite.distributed.finalize()"]
    assert parser.get_parsed_content("backend") == ("nccl" if torch.cuda.is_available() else "gloo")


def test_bundle_root_outside_a_workflow_is_the_source_bundle():
    assert Path(bundle_root()) == REPO / "bundle"


def _inference_parser(*overlays: str) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "inference.json"), *[str(CONFIGS / o) for o in overlays]])
    parser.read_meta(str(CONFIGS / "metadata.json"))
    parser.update({"bundle_root": str(REPO / "bundle")})
    return parser


def _declared(transform: dict) -> dict:
    """A transform declaration without its keys and label-only arguments, for comparing image steps."""
    drop = {"keys", "label_key", "mode"}
    return {k: v for k, v in transform.items() if k not in drop}


@pytest.mark.parametrize("overlays", [(), ("demo.json",)], ids=["paper", "demo"])
def test_inference_preprocesses_and_builds_the_network_as_training(overlays):
    """inference.json stands alone (the model-zoo layout), so it declares the image steps of train.json again:
    they must stay the same, and an overlay must set both the same way."""
    train, infer = _parser(*overlays), _inference_parser(*overlays)
    for key in ("spacing", "hu_window", "hu_scale", "network_def"):
        assert infer.get(key) == train.get(key), key
    assert infer.get_parsed_content("num_classes") == train.get_parsed_content("num_classes") == 21
    steps = infer.get("preprocessing#transforms")
    assert [_declared(t) for t in steps] == [_declared(t) for t in train.get("preprocessing")[: len(steps)] if
                                             t["_target_"] != "CastToTyped"]  # fmt: skip
    assert [t["keys"] for t in steps if "keys" in t] == ["image"] * 5
    assert steps[4]["mode"] == train.get("preprocessing")[4]["mode"][0] == "bilinear"
    net = infer.get_parsed_content("network_def")
    assert type(net) is type(train.get_parsed_content("network_def"))
    assert sum(p.numel() for p in net.parameters()) == (653_413 if not overlays else 55_013)


def test_metadata_documents_the_label_table():
    from autolr_monai.data import LABEL_NAMES

    meta = ConfigParser.load_config_file(str(CONFIGS / "metadata.json"))
    pred = meta["network_data_format"]["outputs"]["pred"]
    assert {int(k): v for k, v in pred["channel_def"].items()} == LABEL_NAMES
    assert pred["num_channels"] == len(LABEL_NAMES)
    listed = "; ".join(f"{v}: {n}" for v, n in LABEL_NAMES.items())
    assert meta["label_classes"] == meta["pred_classes"] == listed


@pytest.mark.parametrize("flags,expected", [
    ({}, ["KeepLargestConnectedComponentd", "CheckForegroundd", "Invertd", "CastToTyped", "CheckOriginalGridd",
          "SaveNiftid", "SaveDicomSegd"]),
    ({"largest_component": "false", "dicom_seg": "false"}, ["CheckForegroundd", "Invertd", "CastToTyped",
                                                             "CheckOriginalGridd", "SaveNiftid"]),
    ({"save_probabilities": "true"}, ["CopyItemsd", "AsDiscreted", "Invertd", "CheckOriginalGridd", "SaveNiftid",
                                      "KeepLargestConnectedComponentd", "CheckForegroundd", "Invertd", "CastToTyped",
                                      "CheckOriginalGridd", "SaveNiftid", "SaveDicomSegd"]),
], ids=["default", "no-filter-no-seg", "probabilities"])  # fmt: skip
def test_inference_flags_compose_the_postprocessing(flags, expected, tmp_path):
    parser = _inference_parser()
    parser.update({"input": str(tmp_path), "output_dir": str(tmp_path), "data_root": str(tmp_path), **flags})
    steps = parser.get_parsed_content("postprocessing").transforms
    assert [type(t).__name__ for t in steps] == expected
    inferer = parser.get_parsed_content("inferer")
    assert inferer.output == ("probabilities" if flags.get("save_probabilities") == "true" else "labels")
    cpu = not torch.cuda.is_available()
    assert inferer.tile_size == ((40,) * 3 if cpu else (96,) * 3) and inferer.tiles_per_batch == (1 if cpu else 4)
    assert inferer.memory_format == torch.channels_last_3d
