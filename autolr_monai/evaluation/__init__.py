"""Evaluation like the paper's Table 2: per-organ Dice and HD95 on the original grid, with and without the
post-processing."""

from .handler import OrganMetrics, case_name
from .metrics import on_prediction_grid, structure_metrics, voxel_spacing
from .report import Score, column_scores, markdown_tables, summary_rows, write_reports

__all__ = [
    "OrganMetrics", "Score", "case_name", "column_scores", "markdown_tables", "on_prediction_grid",
    "structure_metrics", "summary_rows", "voxel_spacing", "write_reports",
]  # fmt: skip
