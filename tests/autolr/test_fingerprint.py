"""A resumed population refuses a checkpoint of another training: other data, labels, network or preprocessing."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from autolr_monai.autolr import fingerprint_differences, training_fingerprint
from tests.autolr.conftest import run_autolr
from tests.test_bundle import TINY
from tests.test_config_helpers import _bundle_parser


def _fingerprint(datalist: str, **overrides) -> dict:
    return training_fingerprint(_bundle_parser("demo.json", **overrides), datalist, ["network_def", "spacing", "patch_size"])


def test_the_fingerprint_names_what_changed(tmp_path):
    for name, data in {"a.nii.gz": b"a" * 100, "b.nii.gz": b"b" * 100, "la.nii.gz": b"1" * 10}.items():
        (tmp_path / name).write_bytes(data)
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": [{"image": "a.nii.gz", "label": "la.nii.gz"}] * 4}))
    saved = _fingerprint(str(datalist))
    assert saved["training"][0]["image"]["path"] == "a.nii.gz" and saved["training"][0]["image"]["bytes"] == 100
    assert saved["labels"][15] == [15, "pancreas"] and saved["settings"]["network_def"]["out_channels"] == 21
    assert fingerprint_differences(saved, _fingerprint(str(datalist))) == []

    entries = [{"image": "a.nii.gz", "label": "la.nii.gz"}] * 3 + [{"image": "b.nii.gz", "label": "la.nii.gz"}]
    datalist.write_text(json.dumps({"training": entries}))
    assert fingerprint_differences(saved, _fingerprint(str(datalist))) == ["training[3].image changed: a.nii.gz -> b.nii.gz"]
    (tmp_path / "la.nii.gz").write_bytes(b"2" * 10)  # same name and size, other content
    changed = fingerprint_differences(saved, _fingerprint(str(datalist), spacing=[3.0, 3.0, 5.0],
                                                          **{"network_def#dropout": 0.5}))  # fmt: skip
    assert changed[:2] == ["training[0].label la.nii.gz is not the file it was (same size, other content)",
                           "training[1].label la.nii.gz is not the file it was (same size, other content)"]  # fmt: skip
    assert changed[-2:] == ["network_def#dropout changed: 0.0 -> 0.5", "spacing changed: [3.0, 3.0, 4.5] -> [3.0, 3.0, 5.0]"]
    datalist.write_text(json.dumps({"training": entries[:2]}))
    assert fingerprint_differences(saved, _fingerprint(str(datalist)))[0] == "the training list has 2 cases, the checkpoint's had 4"
    relabelled = {**saved, "labels": [[0, "background"], [1, "spleen"]]}
    assert fingerprint_differences(relabelled, saved)[:2] == ["label 1 changed: spleen -> liver", "label 2 changed: unset -> spleen"]


def _other_datalist(datalist: str) -> str:
    """The same dataset with another case (of the same grid size) as the first training case."""
    content = json.loads(Path(datalist).read_text())
    content["training"] = [{"image": "imagesTr/phantom_002.nii.gz", "label": "labelsTr/phantom_002.nii.gz"}]
    other = Path(datalist).with_name("datalist_other_image.json")
    other.write_text(json.dumps(content))
    return str(other)


@pytest.mark.parametrize("overrides,message", [
    ("datalist", "training[0].image changed: imagesTr/phantom_000.nii.gz -> imagesTr/phantom_002.nii.gz; "
                 "training[0].label changed: labelsTr/phantom_000.nii.gz -> labelsTr/phantom_002.nii.gz"),
    ({"network_def": {**TINY["network_def"], "dropout": 0.25}}, "network_def#dropout changed: unset -> 0.25"),
], ids=["other-case", "other-network"])  # fmt: skip
def test_resuming_with_another_datalist_or_network_is_refused(overrides, message, trained, autolr_datalist, tmp_path):
    _, _, run_dir = trained
    datalist, overrides = (_other_datalist(autolr_datalist), {}) if overrides == "datalist" else (autolr_datalist, overrides)
    with pytest.raises(RuntimeError) as error:
        run_autolr(datalist, tmp_path, **{"autolr#resume_from": str(run_dir / "checkpoints" / "checkpoint_final.pt"),
                                          **overrides})  # fmt: skip
    cause = error.value
    while cause.__cause__ is not None:
        cause = cause.__cause__
    assert isinstance(cause, ValueError) and str(cause) == (
        f"AutoLR checkpoint was saved by a training with other data or settings: {message}; resume with those, or "
        "train afresh into another --run_dir")  # fmt: skip


def test_a_checkpoint_without_a_fingerprint_resumes_with_a_warning(trained, autolr_datalist, tmp_path):
    _, uninterrupted, run_dir = trained
    state = torch.load(run_dir / "checkpoints" / "autolr_iteration=2.pt", weights_only=True)
    assert state.pop("fingerprint")["training"][0]["image"]["path"] == "imagesTr/phantom_000.nii.gz"
    torch.save(state, tmp_path / "old.pt")
    warnings: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = warnings.append  # the workflow's logging.conf replaces the root handlers (and caplog's)
    logging.getLogger("autolr_monai.autolr").addHandler(handler)
    try:
        workflow = run_autolr(autolr_datalist, tmp_path / "run", **{"autolr#resume_from": str(tmp_path / "old.pt")})
    finally:
        logging.getLogger("autolr_monai.autolr").removeHandler(handler)
    assert any("the checkpoint has no record of its training data and settings" in r.getMessage() for r in warnings)
    assert workflow.parser.get_parsed_content("autolr#engine").history == uninterrupted.history


def test_a_dataset_reached_through_a_symlink_has_the_fingerprint_of_its_files(tmp_path):
    from autolr_monai.autolr.fingerprint import file_identity

    data = tmp_path / "data"
    data.mkdir()
    (data / "a.nii.gz").write_bytes(b"voxels")
    (tmp_path / "link").symlink_to(data, target_is_directory=True)
    assert file_identity(tmp_path / "link" / "a.nii.gz", data.resolve()) == file_identity(data / "a.nii.gz", data.resolve())
    assert file_identity(data / "a.nii.gz", data.resolve())["path"] == "a.nii.gz"


def test_an_unreadable_record_is_a_difference_not_a_crash():
    from autolr_monai.autolr.fingerprint import fingerprint_differences

    current = {"training": [], "labels": [], "settings": {}}
    assert fingerprint_differences({"training": []}, current) == [
        "the checkpoint's record of its training data and settings is unreadable (['training'])"]
