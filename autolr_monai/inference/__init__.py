"""Inference: finding the scans, loading the weights, exact tiled whole-volume inference and DICOM SEG output.

Imports nothing of the training code (``autolr_monai.autolr``, ``sampling``, ``engines``): a packed bundle runs
inference with the network, the label table and this package only.
"""

from .dicom_seg import SaveDicomSegd, UnreferenceableSeriesError, write_dicom_seg
from .inputs import find_scans, scan_stem, scans_root
from .model import load_model
from .outputs import CheckOriginalGridd, ScanFolderLayout
from .tiled import ExactTiledInferer

__all__ = [
    "CheckOriginalGridd", "ExactTiledInferer", "SaveDicomSegd", "ScanFolderLayout", "UnreferenceableSeriesError",
    "find_scans", "load_model", "scan_stem", "scans_root", "write_dicom_seg",
]  # fmt: skip
