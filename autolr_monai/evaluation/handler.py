"""The evaluation as an Ignite handler of a MONAI evaluator."""

from __future__ import annotations

import logging

import numpy as np
from ignite.engine import Engine, Events
from monai.data import MetaTensor

from autolr_monai.inference.inputs import scan_stem

from .metrics import on_prediction_grid, structure_metrics, voxel_spacing
from .report import Score, mean_scored, write_reports

logger = logging.getLogger("autolr_monai.evaluation")


def case_name(image, root: str) -> str:
    """The case's name: its scan's path below ``root`` without the volume suffix (``s0001/ct``), as inference names
    its outputs."""
    if not isinstance(image, MetaTensor) or "filename_or_obj" not in image.meta:
        raise ValueError("the evaluated image has no meta['filename_or_obj'] to name its case by")
    return scan_stem(str(image.meta["filename_or_obj"]), root)


class OrganMetrics:
    """Per-structure Dice and 95% Hausdorff distance of every case, for each prediction of the evaluator, against the
    case's original label map on its original grid; at the end writes ``metrics_per_case.csv``, ``summary.csv`` and
    ``table2.md`` to ``output_dir`` and puts each method's mean Dice over structures and cases in
    ``engine.state.metrics["mean_dice/<method>"]``.

    Args:
        output_dir: where the tables go.
        methods: ``{row name in the tables: prediction key}``, e.g. ``{"AutoLR + isample": "pred"}``; predictions
            must already be on the original grid (MONAI ``Invertd``).
        case_root: the folder the case names are relative to (``scans_root`` of the evaluated datalist), so that
            ``s0001/ct.nii.gz`` and ``s0002/ct.nii.gz`` are two cases; a name that repeats raises ``ValueError``.
        label_key: the original label map, loaded without resampling.
        image_key: names the case (its file name).

    MONAI's ``MeanDice``/``HausdorffDistance`` handlers want one-hot tensors of every class (21 float maps of the
    original scan), score one prediction per handler, and score a structure absent from both maps as 1 or skip a
    false positive; here each structure is scored from its two binary masks (``structure_metrics``).
    """

    def __init__(self, output_dir: str, methods: dict[str, str], case_root: str, label_key: str = "original_label",
                 image_key: str = "image") -> None:  # fmt: skip
        if not methods:
            raise ValueError("OrganMetrics needs at least one method: {row name: prediction key}")
        self.output_dir, self.methods, self.case_root = output_dir, dict(methods), case_root
        self.label_key, self.image_key = label_key, image_key
        self.scores: list[Score] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _reset(self, engine: Engine) -> None:
        self.scores = []

    def _collect(self, engine: Engine) -> None:
        for batch_item, output_item in zip(engine.state.batch, engine.state.output):
            item = {**batch_item, **output_item}
            case = case_name(item[self.image_key], self.case_root)
            if any(s.case == case for s in self.scores):
                raise ValueError(f"two evaluated cases are named {case} (below {self.case_root}): rename one")
            reference = item[next(iter(self.methods.values()))]
            label = on_prediction_grid(item[self.label_key], reference)
            spacing = voxel_spacing(reference)
            summary = []
            for method, key in self.methods.items():
                scores = structure_metrics(item[key], label, spacing)
                self.scores += [Score(case, method, name, dice, hd95) for name, (dice, hd95) in scores.items()]
                summary.append(f"{method} {np.nanmean([d for d, _ in scores.values()]):.4f}")
            logger.info("evaluated %s: mean Dice %s", case, ", ".join(summary))

    def _write(self, engine: Engine) -> None:
        paths = write_reports(self.scores, list(self.methods), self.output_dir)
        for method in self.methods:
            dice = [s.dice for s in self.scores if s.method == method]
            engine.state.metrics[f"mean_dice/{method}"] = mean_scored(dice)
        logger.info("evaluation of %d cases written to %s\n%s", len({s.case for s in self.scores}),
                    ", ".join(str(p) for p in paths.values()), paths["table"].read_text())  # fmt: skip
