"""Evaluation like the paper's Table 2: predictions brought back to the original grid and scored against the
original label files; `python -m monai.bundle run evaluate` end to end."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor

from autolr_monai.data import label_value
from autolr_monai.data.totalseg import totalseg_label_mapping
from autolr_monai.evaluation import on_prediction_grid, structure_metrics, voxel_spacing
from autolr_monai.networks import DualPathResNet3D
from tests.conftest import REPO, TINY_NETWORK
from tests.test_bundle import TINY
from tests.test_inference_bundle import run_bundle

CONFIGS = REPO / "bundle" / "configs"


def _parser(datalist: Path, **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")])
    parser.update({"bundle_root": str(REPO / "bundle"), "datalist": str(datalist), "num_workers": 0, **overrides})
    return parser


def _perfect_prediction(parser: ConfigParser) -> dict:
    """The evaluation's own pre- and post-processing of the first case, with the resampled label as prediction."""
    data = parser.get_parsed_content("evaluation#preprocessing")(parser.get_parsed_content("evaluation#datalist")[0])
    data["pred"] = MetaTensor(data["label"].clone(), meta=dict(data["image"].meta))
    return parser.get_parsed_content("evaluation#postprocessing")(data)


def _mapped_totalseg_label(shared_data: Path, name: str, out: Path) -> Path:
    source = nib.load(shared_data / name)
    orig, target = totalseg_label_mapping(str(shared_data / "totalseg_label_names.json"))
    lut = np.zeros(max(orig) + 1, np.uint8)
    lut[orig] = target
    nib.save(nib.Nifti1Image(lut[np.asarray(source.dataobj).astype(np.int64)], source.affine, source.header), out)
    return out


def test_dicom_series_scored_against_its_label_file_stored_in_another_orientation(shared_data, tmp_path):
    """The series is LPS, its label file LAS: at the series' own spacing a perfect prediction goes back to the
    series grid and scores Dice 1 against the label file, whose orientation differs."""
    label = _mapped_totalseg_label(shared_data, "dicom_labels_totalseg.nii.gz", tmp_path / "label.nii.gz")
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"test": [{"image": str(shared_data / "dicom_ct"), "label": str(label)}]}))
    spacing = [float(s) for s in nib.load(label).header.get_zooms()]
    out = _perfect_prediction(_parser(datalist, spacing=spacing))
    assert tuple(out["pred"].shape[1:]) == (512, 512, 20)  # the series' own grid
    original = on_prediction_grid(out["original_label"], out["pred"])
    assert not torch.equal(torch.as_tensor(out["original_label"]), torch.as_tensor(original))  # it was reoriented
    scores = structure_metrics(out["pred"], original, voxel_spacing(out["pred"]))
    scored = {n: d for n, (d, _) in scores.items() if not math.isnan(d)}
    assert len(scored) >= 4 and all(d == 1.0 for d in scored.values()), scored


def test_scores_come_from_the_original_label_not_the_resampled_one(tiny_datalist):
    """Phantoms are stored rotated, LPS: at their own spacing a perfect prediction scores 1 everywhere; resampled to
    a coarser grid and back it cannot, which only scoring on the original grid shows."""
    at_native = _perfect_prediction(_parser(tiny_datalist, spacing=[6.0, 6.0, 8.0]))
    coarse = _perfect_prediction(_parser(tiny_datalist, spacing=[9.0, 9.0, 12.0]))
    for out, check in ((at_native, lambda d: d == 1.0), (coarse, lambda d: 0.3 < d < 0.99)):
        assert tuple(out["pred"].shape) == tuple(out["original_label"].shape)
        scores = structure_metrics(out["pred"], on_prediction_grid(out["original_label"], out["pred"]),
                                   voxel_spacing(out["pred"]))  # fmt: skip
        assert check(scores["liver"][0]), scores["liver"]


def test_largest_component_filter_removes_an_island_from_the_postprocessed_prediction_only(tiny_datalist):
    parser = _parser(tiny_datalist, spacing=[6.0, 6.0, 8.0])
    data = parser.get_parsed_content("evaluation#preprocessing")(parser.get_parsed_content("evaluation#datalist")[0])
    pred = data["label"].clone()
    liver = label_value("liver")
    background = torch.nonzero(pred[0] == 0)
    far = background[torch.argmax(background.float().sum(1))]  # a background voxel far from the origin corner
    pred[(0, *far.tolist())] = liver  # a one-voxel island of liver
    data["pred"] = MetaTensor(pred, meta=dict(data["image"].meta))
    out = parser.get_parsed_content("evaluation#postprocessing")(data)
    original = on_prediction_grid(out["original_label"], out["pred"])
    raw, filtered = (structure_metrics(out[k], original, voxel_spacing(out[k]))["liver"][0]
                     for k in ("pred", "postprocessed"))  # fmt: skip
    assert filtered == 1.0 and raw < 1.0  # one voxel too many: below 1 without the filter


@pytest.mark.parametrize("overlay,isample,label",
                         [(None, "true", "AutoLR + isample"), ("sched_b.json", "false", "Sched B")])  # fmt: skip
def test_method_names_follow_the_training_configuration(tiny_datalist, overlay, isample, label):
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / f) for f in ("train.json", *([overlay] if overlay else []), "evaluate.json")])
    parser.update({"bundle_root": str(REPO / "bundle"), "isample#enabled": isample})
    assert parser.get_parsed_content("method_label") == label


def test_bundle_cli_writes_table2(tiny_datalist, tmp_path):
    torch.manual_seed(0)
    net = DualPathResNet3D(**TINY_NETWORK)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.3)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    torch.save(net.state_dict(), run_dir / "model.pt")
    configs = f"['{CONFIGS / 'train.json'}','{CONFIGS / 'demo.json'}','{CONFIGS / 'evaluate.json'}']"
    result = run_bundle("evaluate", configs, tmp_path, datalist=str(tiny_datalist), run_dir=str(run_dir),
                        num_workers=0, eval_tile=16, **{k: v for k, v in TINY.items() if k in ("spacing", "network_def")})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = run_dir / "evaluation"
    table = (out / "table2.md").read_text()
    assert "| | Aorta | Lung | Kidney | PMajor | Liver | Abdom | Spleen | Sternum | Trachea | Bladder |" in table
    assert "| AutoLR + isample |" in table and "| AutoLR + isample + post-proc |" in table
    rows = list(csv.DictReader((out / "metrics_per_case.csv").open()))
    assert len(rows) == 1 * 2 * 20  # one test case, two methods, 20 structures
    assert {r["case"] for r in rows} == {"phantom_002"}
    liver = [r for r in rows if r["structure"] == "liver"]
    assert all(0.0 <= float(r["dice"]) <= 1.0 for r in liver)
    assert "evaluation of 1 cases written to" in result.stdout + result.stderr
