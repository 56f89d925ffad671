"""Data: the label table, datalists, the synthetic CT phantoms and the preprocessing steps MONAI lacks."""

from .datalist import load_datalist
from .labels import LABEL_NAMES, LABELS, NUM_CLASSES, label_value
from .readers import LoadScand, ScanReader
from .phantom import ensure_phantom_dataset, generate_phantom, write_phantom_dataset
from .seeding import SeededDataset, SeededSampler
from .transforms import BoxSmoothd, CheckImageLabeld, ClassIndexd

__all__ = [
    "LABELS", "LABEL_NAMES", "NUM_CLASSES", "label_value", "load_datalist", "resolve_datalist",
    "ensure_phantom_dataset", "generate_phantom", "write_phantom_dataset",
    "BoxSmoothd", "CheckImageLabeld", "ClassIndexd", "LoadScand", "ScanReader", "SeededDataset", "SeededSampler",
]  # fmt: skip


def resolve_datalist(datalist: str | None, phantom_dir: str, phantom: dict | None = None) -> str:
    """The datalist to train on: the user's ``datalist`` if given, else the synthetic phantom dataset in
    ``phantom_dir``, generated there on first use with ``phantom`` (arguments of ``write_phantom_dataset``)."""
    if datalist:
        return str(datalist)
    return ensure_phantom_dataset(phantom_dir, **(phantom or {}))
