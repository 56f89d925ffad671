"""Evaluation tables: per case, per structure, and the paper's Table 2 layout (organs as columns, methods as rows)."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autolr_monai.data.labels import LABELS, TABLE2_COLUMNS
from autolr_monai.files import write_text_atomic


@dataclass(frozen=True)
class Score:
    """One structure of one case, predicted by one method."""

    case: str
    method: str
    structure: str
    dice: float
    hd95: float


def mean_scored(values: Sequence[float]) -> float:
    """Mean over the scored values (NaN: structure absent from both maps); NaN when none was scored."""
    scored = [v for v in values if not math.isnan(v)]
    return float(np.mean(scored)) if scored else math.nan


def _finite_mean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def _cell(value: float, digits: int) -> str:
    return "-" if math.isnan(value) else ("inf" if math.isinf(value) else f"{value:.{digits}f}")


def _by(scores: Sequence[Score], *fields: str) -> dict[tuple, list[Score]]:
    groups: dict[tuple, list[Score]] = {}
    for s in scores:
        groups.setdefault(tuple(getattr(s, f) for f in fields), []).append(s)
    return groups


def column_scores(scores: Sequence[Score], metric: str) -> dict[tuple[str, str], float]:
    """``{(method, Table 2 column): mean over cases}``; a column's value in one case is the mean over its structures
    present in that case (Kidney = mean of left and right kidney, as VISCERAL scores paired organs)."""
    columns = {s.name: s.table2 for s in LABELS if s.table2}
    reduce = mean_scored if metric == "dice" else _finite_mean
    per_case: dict[tuple[str, str], list[float]] = {}
    for (method, _), group in _by(scores, "method", "case").items():
        for column in TABLE2_COLUMNS:
            values = [getattr(s, metric) for s in group if columns.get(s.structure) == column]
            per_case.setdefault((method, column), []).append(reduce(values))
    return {key: reduce(values) for key, values in per_case.items()}


def summary_rows(scores: Sequence[Score]) -> list[dict]:
    """Per method and structure: cases scored, Dice mean and standard deviation, HD95 mean over cases where both maps
    hold the structure, and cases where only one of them does."""
    rows = []
    for (method, structure), group in _by(scores, "method", "structure").items():
        dice = [s.dice for s in group if not math.isnan(s.dice)]
        rows.append({
            "method": method, "structure": structure, "cases": len(dice),
            "dice_mean": mean_scored(dice), "dice_std": float(np.std(dice)) if dice else math.nan,
            "hd95_mean_mm": _finite_mean([s.hd95 for s in group]),
            "cases_missed_or_spurious": sum(math.isinf(s.hd95) for s in group),
        })  # fmt: skip
    return rows


def markdown_tables(scores: Sequence[Score], methods: Sequence[str]) -> str:
    """Table 2 layout for Dice and HD95, then every structure of the label table."""
    lines = []
    for metric, title, digits in (("dice", "Dice", 3), ("hd95", "95% Hausdorff distance (mm)", 1)):
        values = column_scores(scores, metric)
        lines += [f"**{title}**, mean over cases (Table 2 layout)", "", "| | " + " | ".join(TABLE2_COLUMNS) + " |",
                  "|---" * (len(TABLE2_COLUMNS) + 1) + "|"]  # fmt: skip
        for method in methods:
            lines.append(f"| {method} | " + " | ".join(_cell(values.get((method, c), math.nan), digits)
                                                      for c in TABLE2_COLUMNS) + " |")  # fmt: skip
        lines.append("")
    summary = {(r["method"], r["structure"]): r for r in summary_rows(scores)}
    names = [s.name for s in LABELS[1:]]
    lines += ["**Dice per structure**, mean over the cases that hold it (label map or prediction)", "",
              "| structure | " + " | ".join(methods) + " | cases |", "|---" * (len(methods) + 2) + "|"]  # fmt: skip
    for name in names:
        row = [summary.get((m, name)) for m in methods]
        cases = max((r["cases"] for r in row if r), default=0)
        lines.append(f"| {name} | " + " | ".join(_cell(r["dice_mean"] if r else math.nan, 3) for r in row)
                     + f" | {cases} |")  # fmt: skip
    lines += ["", "'-': the structure is in no case's label map or prediction. HD95 averages the cases where both "
              "hold the structure; a structure present in only one of them has Dice 0 and is counted in "
              "`cases_missed_or_spurious` of summary.csv."]  # fmt: skip
    return "\n".join(lines) + "\n"


def write_reports(scores: Sequence[Score], methods: Sequence[str], output_dir: str) -> dict[str, Path]:
    """Write ``metrics_per_case.csv``, ``summary.csv`` and ``table2.md`` to ``output_dir``, each complete or not at
    all (``write_text_atomic``); returns their paths."""
    out = Path(output_dir)
    paths = {"per_case": out / "metrics_per_case.csv", "summary": out / "summary.csv", "table": out / "table2.md"}
    per_case = io.StringIO()
    writer = csv.writer(per_case)
    writer.writerow(["case", "method", "structure", "dice", "hd95_mm"])
    writer.writerows([s.case, s.method, s.structure, s.dice, s.hd95] for s in scores)
    rows = summary_rows(scores)
    summary = io.StringIO()
    dict_writer = csv.DictWriter(summary, fieldnames=list(rows[0]) if rows else ["method"])
    dict_writer.writeheader()
    dict_writer.writerows(rows)
    write_text_atomic(paths["per_case"], per_case.getvalue())
    write_text_atomic(paths["summary"], summary.getvalue())
    write_text_atomic(paths["table"], markdown_tables(scores, methods))
    return paths
