"""Write predicted label maps as DICOM Segmentation objects (SEG) that reference the CT series they came from.

MONAI writes NIfTI and other ITK formats but no DICOM SEG, so a prediction for a DICOM series could not go back to
a PACS or viewer next to its images. ``write_dicom_seg`` builds a binary SEG with highdicom: one segment per
structure present, coded in SNOMED CT (``STRUCTURE_CODES``), one frame per segment and source slice it appears in,
each referencing its source instance. ``SaveDicomSegd`` does this at the end of the inference pipeline.

Layout: a series loaded by ``autolr_monai.data.LoadScand`` (or ``LoadImage(reader=ScanReader())``) and
``EnsureChannelFirst`` is ``(1, X, Y, Z)`` with X the DICOM columns, Y the rows and Z the slices in the order of
``autolr_monai.data.dicom.series_geometry``, and a RAS voxel-to-world affine; the frame of the instance at slice
``k`` is therefore ``label_map[:, :, k].T`` (rows x columns). Instances are matched to slices by that geometry,
which their ImagePositionPatient and ImageOrientationPatient define, never by file order, InstanceNumber or
SpacingBetweenSlices; a label map on another grid (as plain ``ITKReader`` places some series) is refused.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform
from pydicom.errors import InvalidDicomError
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from autolr_monai import __version__
from autolr_monai.data.dicom import SeriesGeometry, series_geometry
from autolr_monai.data.grids import corner_offsets_mm
from autolr_monai.data.labels import LABEL_NAMES
from autolr_monai.files import replaced_atomically

from .marks import ALGORITHM_NAME, MANUFACTURER, SERIES_DESCRIPTION
from .outputs import OutputWriteError, ScanFolderLayout, cannot_write

logger = logging.getLogger("autolr_monai.inference")


#: How far (in voxels) a source pixel may lie from the label map's voxel grid: DS values have up to 16 characters,
#: so genuine matches are within 1e-3 voxels; a half-slice or one-pixel offset is far outside.
GRID_TOLERANCE_VOXELS = 0.05

# DICOM attributes a source instance needs for a SEG to reference it and to place its frames.
_REQUIRED = ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "FrameOfReferenceUID",
             "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")  # fmt: skip


class UnreferenceableSeriesError(ValueError):
    """The source series lacks the UIDs a SEG must reference (typically blanked by de-identification)."""


@dataclass(frozen=True)
class StructureCode:
    """SNOMED CT coding of a structure: the organ (segmented property type) and its laterality, if any."""

    type: Code
    laterality: Code | None = None


_RIGHT, _LEFT = codes.SCT.Right, codes.SCT.Left  # SCT 24028007, 7771000 (DICOM CID 244 Laterality)
_PSOAS_MAJOR = Code("71915004", "SCT", "Psoas major muscle")  # not in pydicom's DICOM code tables
_RECTUS_ABDOMINIS = Code("83573005", "SCT", "Rectus abdominis muscle")  # not in pydicom's DICOM code tables

#: Structure name (``autolr_monai.data.labels.LABELS``) -> SNOMED CT code; all are category "Anatomical Structure".
STRUCTURE_CODES: dict[str, StructureCode] = {
    "liver": StructureCode(codes.SCT.Liver),  # 10200004
    "spleen": StructureCode(codes.SCT.Spleen),  # 78961009
    "kidney_right": StructureCode(codes.SCT.Kidney, _RIGHT),  # 64033007
    "kidney_left": StructureCode(codes.SCT.Kidney, _LEFT),
    "lung_right": StructureCode(codes.SCT.Lung, _RIGHT),  # 39607008
    "lung_left": StructureCode(codes.SCT.Lung, _LEFT),
    "aorta": StructureCode(codes.SCT.Aorta),  # 15825003
    "trachea": StructureCode(codes.SCT.Trachea),  # 44567001
    "sternum": StructureCode(codes.SCT.Sternum),  # 56873002
    "urinary_bladder": StructureCode(codes.SCT.Bladder),  # 89837001 "Urinary bladder structure"
    "psoas_major_right": StructureCode(_PSOAS_MAJOR, _RIGHT),
    "psoas_major_left": StructureCode(_PSOAS_MAJOR, _LEFT),
    "rectus_abdominis_right": StructureCode(_RECTUS_ABDOMINIS, _RIGHT),
    "rectus_abdominis_left": StructureCode(_RECTUS_ABDOMINIS, _LEFT),
    "pancreas": StructureCode(codes.SCT.Pancreas),  # 15776009
    "gallbladder": StructureCode(codes.SCT.Gallbladder),  # 28231008
    "vertebra_L1": StructureCode(codes.SCT.L1Vertebra),  # 66794005
    "adrenal_gland_right": StructureCode(codes.SCT.AdrenalGland, _RIGHT),  # 23451007
    "adrenal_gland_left": StructureCode(codes.SCT.AdrenalGland, _LEFT),
    "thyroid_gland": StructureCode(codes.SCT.Thyroid),  # 69748006 "Thyroid structure"
}


def _to_numpy(array: np.ndarray | torch.Tensor) -> np.ndarray:
    return array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)


def _integer_labels(label_map: np.ndarray | torch.Tensor, series_dir: Path) -> tuple[np.ndarray, list[int]]:
    """``label_map`` as an integer (X, Y, Z) array of label-table values and the structures (values > 0) in it."""
    labels = _to_numpy(label_map)
    if labels.ndim == 4 and labels.shape[0] == 1:
        labels = labels[0]
    if labels.ndim != 3:
        raise ValueError(f"label map for {series_dir}: expected shape (X, Y, Z) or (1, X, Y, Z), got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.array_equal(labels, np.round(labels)):
            raise ValueError(f"label map for {series_dir}: values must be integer label values, got {labels.dtype} "
                             "with fractional values (probabilities need an argmax first)")  # fmt: skip
        labels = labels.astype(np.int64)
    values = np.unique(labels).tolist()
    unknown = [v for v in values if v not in LABEL_NAMES]
    if unknown:
        raise ValueError(f"label map for {series_dir}: values {unknown[:10]} are not in the label table "
                         f"(expected 0..{max(LABEL_NAMES)}; see autolr_monai/data/labels.py)")  # fmt: skip
    return labels, [v for v in values if v != 0]


def _series_grid(series_dir: Path, affine: np.ndarray, shape: tuple[int, ...]) -> SeriesGeometry:
    """The geometry the series' instance positions and orientations define (``series_geometry``: its instances in
    slice order ``k = 0..Z-1``), checked to be the label map's grid (shape and affine)."""
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"label map for {series_dir}: expected a 4x4 affine, got shape {affine.shape}")
    if not series_dir.is_dir():
        raise ValueError(f"{series_dir}: not a directory (expected the DICOM series folder the label map belongs to)")
    geometry = series_geometry(series_dir)
    for path, ds in zip(geometry.files, geometry.headers):
        missing = [name for name in _REQUIRED if ds.get(name) in (None, "")]
        if missing:
            raise UnreferenceableSeriesError(f"{series_dir}: {path.name} lacks {', '.join(missing)} (empty or "
                                             "absent); a DICOM SEG must reference the source study, series and "
                                             "instances (was the series de-identified by blanking UIDs instead of "
                                             "replacing them?)")  # fmt: skip
    x, y, z = shape
    columns, rows, slices = geometry.shape
    if (columns, rows) != (x, y):
        raise ValueError(f"{series_dir}: {geometry.files[0].name} has {rows} rows x {columns} columns, but the label "
                         f"map slices have {y} rows (Y) x {x} columns (X); label map shape {shape}")  # fmt: skip
    if slices != z:
        raise ValueError(f"{series_dir}: {slices} DICOM images for a label map of {z} slices")
    corners, offsets = corner_offsets_mm(affine, geometry.ras_affine, shape)
    voxel_mm = float(np.linalg.norm(geometry.lps_affine[:3, :3], axis=0).min())
    if offsets.max() > GRID_TOLERANCE_VOXELS * voxel_mm:
        corner = corners[int(np.argmax(offsets))].tolist()
        raise ValueError(f"label map for {series_dir}: not on the series' voxel grid as its instances' positions "
                         f"define it: voxel {corner} lies {offsets.max():.2f} mm from that voxel of the series (label "
                         f"map affine {np.round(affine, 4).tolist()}, series {np.round(geometry.ras_affine, 4).tolist()}"
                         "; another series' grid, or one read without the instances' positions?)")  # fmt: skip
    return geometry


#: Patient and study attributes of type 2 (present, maybe empty) that highdicom copies from the source into the
#: SEG; de-identification tools often delete them instead of emptying them.
_COPIED_TYPE_2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                  "ReferringPhysicianName", "StudyID", "AccessionNumber")  # fmt: skip


def _as_source(ds: pydicom.Dataset, step_mm: float) -> pydicom.Dataset:
    """An instance's header as highdicom should see it (the files are not touched). highdicom copies
    SpacingBetweenSlices into the SEG, where it may not be negative (some vendors write it so): it becomes the step
    between the instances' positions. An empty SpecificCharacterSet is legal (the default repertoire; as the first
    of several values, the default with code extensions) but highdicom refuses it: spelled out or removed. Type 2
    patient and study attributes that a de-identification deleted (highdicom fails on them) are present, empty."""
    for name in _COPIED_TYPE_2:
        if name not in ds:
            setattr(ds, name, "")
    if "SpacingBetweenSlices" in ds:
        ds.SpacingBetweenSlices = step_mm
    if "SpecificCharacterSet" in ds:
        value = ds.data_element("SpecificCharacterSet").value
        values = [value] if isinstance(value, (str, type(None))) else list(value)
        if not any(str(v or "").strip() for v in values):
            del ds.SpecificCharacterSet
        elif not str(values[0] or "").strip():
            ds.SpecificCharacterSet = ["ISO 2022 IR 6", *values[1:]]
    return ds


def _segment_description(
    number: int, name: str, algorithm: hd.AlgorithmIdentificationSequence
) -> hd.seg.SegmentDescription:
    code = STRUCTURE_CODES[name]
    description = hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=name,
        segmented_property_category=codes.SCT.AnatomicalStructure,  # SCT 91723000
        segmented_property_type=code.type,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
    )
    if code.laterality is not None:
        # highdicom has no argument for it; DICOM puts laterality in the property type's modifier (PS3.3 C.8.20.2).
        type_item = description.SegmentedPropertyTypeCodeSequence[0]
        type_item.SegmentedPropertyTypeModifierCodeSequence = [hd.sr.CodedConcept.from_code(code.laterality)]
    return description


def write_dicom_seg(
    label_map: np.ndarray | torch.Tensor,
    affine: np.ndarray | torch.Tensor,
    series_dir: str | os.PathLike,
    output_path: str | os.PathLike,
    *,
    algorithm_version: str = __version__,
    series_number: int = 900,
) -> Path | None:
    """Write ``label_map`` as a binary DICOM SEG referencing the CT series in ``series_dir``; return its path.

    ``label_map``: integer label values of the label table, shape (X, Y, Z) or (1, X, Y, Z), on the grid of the
    series as ``ScanReader`` loads it (X = columns, Y = rows, Z = slices); ``affine``: its RAS voxel-to-world affine,
    which must be the grid the instances' positions define (``series_geometry``), else ``ValueError`` naming the
    folder and what does not match. Structures present become segments 1..N (in label order), labelled with their
    structure names; ``algorithm_version`` goes into their algorithm identification, ``series_number`` is the new
    SEG series'. A map without any structure writes nothing, logs a warning and returns None. The file is written
    to a temporary file next to ``output_path``, read back and moved into place, so readers never see a partial
    SEG; a failed write raises ``OSError`` naming ``output_path``.
    """
    series_dir, output_path = Path(series_dir), Path(output_path)
    labels, present = _integer_labels(label_map, series_dir)
    if not present:
        logger.warning("%s: the label map holds no structure (all background); no DICOM SEG written", series_dir)
        return None
    geometry = _series_grid(series_dir, _to_numpy(affine), labels.shape)
    sources = [_as_source(ds, geometry.step_mm) for ds in geometry.headers]

    lookup = np.zeros(max(LABEL_NAMES) + 1, dtype=np.uint8)
    lookup[present] = np.arange(1, len(present) + 1)
    frames = np.ascontiguousarray(lookup[labels].transpose(2, 1, 0))  # frame k = label_map[:, :, k].T
    algorithm = hd.AlgorithmIdentificationSequence(
        name=ALGORITHM_NAME, family=codes.DCM.ArtificialIntelligence, version=algorithm_version
    )
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[_segment_description(i, LABEL_NAMES[v], algorithm) for i, v in enumerate(present, 1)],
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=ALGORITHM_NAME,
        software_versions=algorithm_version,
        device_serial_number="0",
        series_description=SERIES_DESCRIPTION,
        content_label="SEGMENTATION",
        content_description=f"{ALGORITHM_NAME} {algorithm_version}",
    )
    if sources[0].get("BodyPartExamined"):  # General Series; highdicom does not copy it, and without it the
        seg.BodyPartExamined = sources[0].BodyPartExamined  # validator wants Laterality, unknown for a segmentation

    _save_atomically(seg, output_path)
    return output_path


def _save_atomically(seg: hd.seg.Segmentation, output_path: Path) -> None:
    """Write ``seg`` to ``output_path`` completely or not at all (``replaced_atomically``), read back before it
    is renamed into place; ``OutputWriteError`` names the file."""
    try:
        with replaced_atomically(output_path) as partial:
            seg.save_as(partial, enforce_file_format=True)
            try:
                frames = int(pydicom.dcmread(partial).NumberOfFrames)
            except (InvalidDicomError, EOFError, ValueError, AttributeError) as e:
                raise OutputWriteError(f"{output_path}: cannot write (the file written does not read back: {e})") from e
            if frames != int(seg.NumberOfFrames):
                raise OutputWriteError(f"{output_path}: cannot write (the file written holds {frames} frames of "
                                       f"{seg.NumberOfFrames})")  # fmt: skip
    except OSError as e:
        if isinstance(e, OutputWriteError):
            raise
        raise cannot_write(output_path, e) from e


class SaveDicomSegd(MapTransform):
    """Save predictions for DICOM series as DICOM SEG files (``SaveImaged`` for SEG, which MONAI does not write).

    For each key, when the image's source (``data[image_key].meta["filename_or_obj"]``) is a folder, i.e. a DICOM
    series, writes ``data[key]`` (a label map MetaTensor (1, X, Y, Z) on that series' grid, with its own affine)
    to ``<output_dir>/<folder name>_<output_postfix>.dcm`` with ``write_dicom_seg`` (``ScanFolderLayout``, the
    naming of the NIfTI outputs: with ``data_root_dir`` the folders between it and the series folder are kept
    below ``output_dir``). Scans read
    from files (NIfTI and other volumes) have no DICOM instances to reference: they are skipped by design, their
    NIfTI output being ``SaveImaged``'s. A series whose UIDs were blanked (``UnreferenceableSeriesError``) gets no
    SEG either, with a warning naming it and the missing attributes, so that one such scan does not stop the
    inference of the others; any other mismatch raises. The file name does not contain the key, so use one key per
    transform. Returns the data unchanged.
    """

    def __init__(
        self,
        keys: KeysCollection = "pred",
        output_dir: str | os.PathLike = ".",
        image_key: str = "image",
        output_postfix: str = "seg",
        data_root_dir: str | os.PathLike | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.image_key = image_key
        self.layout = ScanFolderLayout(output_dir, output_postfix, ".dcm", data_root_dir or None)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        source = getattr(d[self.image_key], "meta", {}).get("filename_or_obj")
        if source is None:
            raise ValueError(f"{self.image_key!r} has no meta['filename_or_obj']: SaveDicomSegd needs the MetaTensor "
                             "that LoadImaged made, to find the source DICOM series")  # fmt: skip
        series_dir = Path(str(source))
        if not series_dir.is_dir():
            return d
        for key in self.key_iterator(d):
            pred = d[key]
            if not isinstance(pred, MetaTensor):
                raise ValueError(f"{key!r} for {series_dir}: expected a MetaTensor (its affine places the label map), "
                                 f"got {type(pred).__name__}")  # fmt: skip
            try:
                write_dicom_seg(pred, pred.affine, series_dir, self.layout.filename(subject=str(series_dir)))
            except UnreferenceableSeriesError as e:
                logger.warning("no DICOM SEG written (the NIfTI label map is): %s", e)
        return d
