"""Inference: finding the scans, loading the weights, exact tiled whole-volume inference, and writing the outputs
(NIfTI and DICOM SEG) completely or failing the scan.

Imports nothing of the training code (``autolr_monai.autolr``, ``sampling``, ``engines``): a packed bundle runs
inference with the network, the label table and this package only.
"""

from .dicom_seg import SaveDicomSegd, UnreferenceableSeriesError, write_dicom_seg
from .inputs import find_scans, scan_stem, scans_root
from .model import load_model
from .outputs import CheckForegroundd, CheckOriginalGridd, ScanFolderLayout
from .tiled import ExactTiledInferer
from .writing import OutputWriteError, SaveNiftid, ScanOutputs, WriteFailures, check_output_dir

__all__ = [
    "CheckForegroundd", "CheckOriginalGridd", "ExactTiledInferer", "OutputWriteError", "SaveDicomSegd", "SaveNiftid",
    "ScanFolderLayout", "ScanOutputs", "UnreferenceableSeriesError", "WriteFailures", "check_output_dir",
    "find_scans", "load_model", "scan_stem", "scans_root", "write_dicom_seg",
]  # fmt: skip
