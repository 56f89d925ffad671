"""OrganMetrics on an Ignite engine: case names, per-method mean Dice, tables written at the end."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine
from monai.data import MetaTensor

from autolr_monai.data.labels import label_value
from autolr_monai.evaluation import OrganMetrics


def _item(path: str, liver_in_pred: slice) -> tuple[dict, dict]:
    affine = torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0], dtype=torch.float64))
    label = torch.zeros(1, 10, 10, 10, dtype=torch.uint8)
    label[0, 2:8, 2:8, 2:8] = label_value("liver")
    pred = torch.zeros_like(label)
    pred[0, liver_in_pred, 2:8, 2:8] = label_value("liver")
    image = MetaTensor(torch.zeros(1, 10, 10, 10), affine=affine, meta={"filename_or_obj": path})
    return ({"image": image, "original_label": MetaTensor(label, affine=affine)},
            {"pred": MetaTensor(pred, affine=affine), "postprocessed": MetaTensor(label.clone(), affine=affine)})


def _run(tmp_path, items) -> Engine:
    def step(engine, batch):
        engine.state.batch = [b for b, _ in batch]
        return [o for _, o in batch]

    engine = Engine(step)
    OrganMetrics(str(tmp_path / "eval"), {"A": "pred", "A + post-proc": "postprocessed"},
                 case_root=str(tmp_path)).attach(engine)  # fmt: skip
    engine.run([[item] for item in items], max_epochs=1)
    return engine


def test_mean_dice_per_method_and_case_names_below_the_root(tmp_path):
    items = [_item(str(tmp_path / "s1" / "ct.nii.gz"), slice(2, 8)),
             _item(str(tmp_path / "s2" / "ct.nii.gz"), slice(5, 8))]
    engine = _run(tmp_path, items)
    assert engine.state.metrics["mean_dice/A + post-proc"] == 1.0
    assert engine.state.metrics["mean_dice/A"] == pytest.approx((1.0 + 2 * 108 / (216 + 108)) / 2)
    rows = (tmp_path / "eval" / "metrics_per_case.csv").read_text().splitlines()
    assert {r.split(",")[0] for r in rows[1:]} == {"s1/ct", "s2/ct"}
    assert "| A + post-proc | - | - | - | - | 1.000 |" in (tmp_path / "eval" / "table2.md").read_text()


def test_two_cases_with_one_name_are_refused(tmp_path):
    items = [_item(str(tmp_path / "ct.nii.gz"), slice(2, 8)), _item(str(tmp_path / "ct.nii"), slice(2, 8))]
    with pytest.raises(ValueError, match="two evaluated cases are named ct"):
        _run(tmp_path, items)
