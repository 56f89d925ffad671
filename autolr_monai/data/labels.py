"""The label table of the VISCERAL Anatomy3 structures: defined once here, used everywhere.

Label values 1..20 are the 20 structures of the VISCERAL Anatomy3 benchmark (Jimenez-del Toro et al. 2016) that
the paper segments with one 21-class network (section 3.3); 0 is background. ``table2`` names the column of the
paper's Table 2 a structure is scored in (left/right structures share one column); structures without a column
are segmented but not in that table. ``radlex`` is the RadLex identifier VISCERAL uses in its file names.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Structure:
    value: int
    name: str
    radlex: int | None
    table2: str | None


LABELS: tuple[Structure, ...] = (
    Structure(0, "background", None, None),
    Structure(1, "liver", 58, "Liver"),
    Structure(2, "spleen", 86, "Spleen"),
    Structure(3, "kidney_right", 29662, "Kidney"),
    Structure(4, "kidney_left", 29663, "Kidney"),
    Structure(5, "lung_right", 1302, "Lung"),
    Structure(6, "lung_left", 1326, "Lung"),
    Structure(7, "aorta", 480, "Aorta"),
    Structure(8, "trachea", 1247, "Trachea"),
    Structure(9, "sternum", 2473, "Sternum"),
    Structure(10, "urinary_bladder", 237, "Bladder"),
    Structure(11, "psoas_major_right", 32248, "PMajor"),
    Structure(12, "psoas_major_left", 32249, "PMajor"),
    Structure(13, "rectus_abdominis_right", 40357, "Abdom"),
    Structure(14, "rectus_abdominis_left", 40358, "Abdom"),
    Structure(15, "pancreas", 170, None),
    Structure(16, "gallbladder", 187, None),
    Structure(17, "vertebra_L1", 29193, None),
    Structure(18, "adrenal_gland_right", 30324, None),
    Structure(19, "adrenal_gland_left", 30325, None),
    Structure(20, "thyroid_gland", 7578, None),
)

NUM_CLASSES: int = len(LABELS)
LABEL_NAMES: dict[int, str] = {s.value: s.name for s in LABELS}
LABEL_VALUES: dict[str, int] = {s.name: s.value for s in LABELS}
TABLE2_COLUMNS: tuple[str, ...] = (
    "Aorta", "Lung", "Kidney", "PMajor", "Liver", "Abdom", "Spleen", "Sternum", "Trachea", "Bladder"
)  # fmt: skip

if [s.value for s in LABELS] != list(range(NUM_CLASSES)):
    raise RuntimeError("label values must be 0..N-1 in order")


def label_value(name: str) -> int:
    """Label value of a structure name; raises KeyError naming the known names."""
    try:
        return LABEL_VALUES[name]
    except KeyError:
        raise KeyError(f"unknown structure {name!r}; known: {sorted(LABEL_VALUES)}") from None
