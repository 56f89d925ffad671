"""Per-structure Dice and HD95, the original-grid check, and the Table 2 report."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import EnsureChannelFirst, LoadImage, MapLabelValue

from autolr_monai.data.labels import LABELS, label_value
from autolr_monai.data.totalseg import totalseg_label_mapping
from autolr_monai.evaluation import (Score, column_scores, markdown_tables, on_prediction_grid, structure_metrics,
                                     voxel_spacing, write_reports)  # fmt: skip


def _map(*regions: tuple[tuple[slice, ...], str], shape=(20, 20, 20)) -> torch.Tensor:
    x = torch.zeros((1, *shape), dtype=torch.uint8)
    for region, name in regions:
        x[(0, *region)] = label_value(name)
    return x


def test_dice_and_hd95_of_known_shapes():
    cube = (slice(5, 15), slice(5, 15), slice(5, 15))
    label = _map((cube, "liver"), ((slice(2, 3), slice(2, 3), slice(2, 3)), "spleen"))
    pred = _map(((slice(5, 15), slice(5, 15), slice(10, 15)), "liver"),  # half the cube
                ((slice(2, 3), slice(2, 3), slice(4, 5)), "spleen"),  # one voxel, 2 voxels off along z
                ((slice(18, 19), slice(18, 19), slice(18, 19)), "aorta"))  # a false positive  # fmt: skip
    scores = structure_metrics(pred, label, spacing=(1.0, 1.0, 2.5))
    assert scores["liver"][0] == pytest.approx(2 * 500 / (1000 + 500))
    assert scores["spleen"] == (0.0, pytest.approx(5.0))  # no overlap; 2 voxels x 2.5 mm
    assert scores["aorta"] == (0.0, math.inf)  # in the prediction only
    assert all(math.isnan(d) and math.isnan(h) for n, (d, h) in scores.items() if n not in ("liver", "spleen", "aorta"))
    assert set(scores) == {s.name for s in LABELS[1:]}


def _real_label(shared_data) -> MetaTensor:
    label = EnsureChannelFirst()(LoadImage(reader="ITKReader", image_only=True)(shared_data / "labels_totalseg.nii.gz"))
    orig, target = totalseg_label_mapping(str(shared_data / "totalseg_label_names.json"))
    return MapLabelValue(orig_labels=orig, target_labels=target, dtype=np.uint8)(label)


def test_a_real_label_map_against_itself_gives_dice_1(shared_data):
    label = _real_label(shared_data)
    scores = structure_metrics(label, label, voxel_spacing(label))
    present = {s.name for s in LABELS[1:] if (label == s.value).any()}
    assert {"liver", "spleen", "kidney_left", "kidney_right", "urinary_bladder"} <= present
    assert all(scores[n] == (1.0, 0.0) for n in present)
    assert all(math.isnan(scores[n][0]) for n in set(scores) - present)
    assert voxel_spacing(label) == pytest.approx((3.0, 3.0, 3.0))


def test_label_stored_with_other_axis_directions_is_reoriented(shared_data):
    label = _real_label(shared_data)
    flipped = MetaTensor(label.flip(1), affine=label.affine @ torch.tensor(
        [[-1.0, 0, 0, label.shape[1] - 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.float64))  # fmt: skip
    aligned = on_prediction_grid(flipped, label)
    assert torch.equal(torch.as_tensor(aligned), torch.as_tensor(label))
    shifted = MetaTensor(label.clone(), affine=label.affine.clone())
    shifted.affine[0, 3] += 3.0
    with pytest.raises(ValueError, match="is not on the grid of its image"):
        on_prediction_grid(shifted, label)


def _scores() -> list[Score]:
    return [
        Score("case1", "A", "kidney_right", 0.8, 2.0), Score("case1", "A", "kidney_left", 0.6, 4.0),
        Score("case1", "A", "liver", 0.9, 1.0), Score("case1", "A", "spleen", math.nan, math.nan),
        Score("case2", "A", "kidney_right", 1.0, 0.0), Score("case2", "A", "kidney_left", 0.0, math.inf),
        Score("case2", "A", "liver", 0.7, 3.0), Score("case2", "A", "spleen", math.nan, math.nan),
        Score("case1", "A + post", "liver", 0.95, 0.5), Score("case2", "A + post", "liver", 0.75, 2.5),
    ]  # fmt: skip


def test_table2_columns_average_paired_organs_then_cases():
    dice = column_scores(_scores(), "dice")
    assert dice[("A", "Kidney")] == pytest.approx(((0.8 + 0.6) / 2 + (1.0 + 0.0) / 2) / 2)
    assert dice[("A", "Liver")] == pytest.approx(0.8) and math.isnan(dice[("A", "Spleen")])
    hd95 = column_scores(_scores(), "hd95")
    assert hd95[("A", "Kidney")] == pytest.approx((3.0 + 0.0) / 2)  # the infinite one is left out


def test_reports_lay_out_organs_as_columns_and_methods_as_rows(tmp_path):
    paths = write_reports(_scores(), ["A", "A + post"], str(tmp_path))
    table = paths["table"].read_text()
    header = "| | Aorta | Lung | Kidney | PMajor | Liver | Abdom | Spleen | Sternum | Trachea | Bladder |"
    assert header in table
    assert "| A | - | - | 0.600 | - | 0.800 | - | - | - | - | - |" in table
    assert "| A + post | - | - | - | - | 0.850 | - | - | - | - | - |" in table
    assert table == markdown_tables(_scores(), ["A", "A + post"])
    rows = list(csv.DictReader(paths["per_case"].open()))
    assert len(rows) == len(_scores()) and rows[0]["structure"] == "kidney_right"
    summary = {(r["method"], r["structure"]): r for r in csv.DictReader(paths["summary"].open())}
    assert summary[("A", "kidney_left")]["cases_missed_or_spurious"] == "1"
    assert float(summary[("A", "liver")]["dice_mean"]) == pytest.approx(0.8)
