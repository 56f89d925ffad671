"""Map TotalSegmentator label maps onto the label table (for using its silver-standard masks as labels)."""

from __future__ import annotations

import json
from pathlib import Path

from .labels import LABEL_VALUES

# TotalSegmentator structure -> our structure. Lung lobes merge into lungs; iliopsoas (psoas major + iliacus) stands
# in for psoas major. TotalSegmentator has no sternum or rectus abdominis in its 'total' task.
TOTALSEG_TO_TABLE: dict[str, str] = {
    "liver": "liver",
    "spleen": "spleen",
    "kidney_right": "kidney_right",
    "kidney_left": "kidney_left",
    "lung_upper_lobe_right": "lung_right",
    "lung_middle_lobe_right": "lung_right",
    "lung_lower_lobe_right": "lung_right",
    "lung_upper_lobe_left": "lung_left",
    "lung_lower_lobe_left": "lung_left",
    "aorta": "aorta",
    "trachea": "trachea",
    "urinary_bladder": "urinary_bladder",
    "iliopsoas_right": "psoas_major_right",
    "iliopsoas_left": "psoas_major_left",
    "pancreas": "pancreas",
    "gallbladder": "gallbladder",
    "vertebrae_L1": "vertebra_L1",
    "adrenal_gland_right": "adrenal_gland_right",
    "adrenal_gland_left": "adrenal_gland_left",
    "thyroid_gland": "thyroid_gland",
}


def totalseg_label_mapping(names_json: str) -> tuple[list[int], list[int]]:
    """``(orig_labels, target_labels)`` for MONAI's ``MapLabelValued``: every TotalSegmentator value in
    ``names_json`` (``{"1": "spleen", ...}``) goes to its structure in the label table, or to 0."""
    names = json.loads(Path(names_json).read_text())
    orig = sorted(int(k) for k in names)
    target = [LABEL_VALUES[TOTALSEG_TO_TABLE[names[str(v)]]] if names[str(v)] in TOTALSEG_TO_TABLE else 0 for v in orig]
    return orig, target
