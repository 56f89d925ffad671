"""Checks of scan files before they are loaded, by name: MONAI's readers fail deep inside a transform, or worse
read a damaged file without a word (ITK reads a truncated or damaged ``.nii.gz`` and fills the rest, NaN voxels as 0,
a 4D or RGB file as channels, a sheared grid as if it were one, a NIfTI header differently from nibabel and the NIfTI
standard), or read only one of several DICOM series in a folder. Training (``load_datalist``) and inference
(``find_scans``) both run them.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import re
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .dicom import check_dicom_series, is_dicom_file  # noqa: F401 (is_dicom_file: for inputs)
from .grids import LPS_TO_RAS, corner_offsets_mm

if TYPE_CHECKING:
    import itk
    from nibabel.nifti1 import Nifti1Header  # Nifti2Header is one too

#: Single-file volume formats ITK reads (NIfTI first: the usual case).
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def check_scan(path: str | os.PathLike) -> None:
    """Raise ``FileNotFoundError``/``ValueError`` naming ``path`` unless it is a readable 3D volume file or a folder
    holding one complete DICOM series."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if not os.access(path, os.R_OK | (os.X_OK if path.is_dir() else 0)):
        raise ValueError(f"{path} is not readable (permissions)")
    if path.is_dir():
        check_dicom_series(path)
    else:
        check_volume_file(path)


def visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def check_volume_file(path: Path) -> None:
    """Raise ``ValueError`` naming ``path`` unless MONAI's ``ITKReader`` reads all of it as one scalar 3D volume on
    an unsheared grid, and for NIfTI unless ITK and nibabel (the NIfTI standard) read the same voxel grid and values
    from it. Reads all the data (``check_nifti_complete``, ``check_volume_data``)."""
    import itk
    import nibabel as nib

    header = read_nifti_header(path) if path.name.lower().endswith((".nii", ".nii.gz")) else None
    if isinstance(header, nib.Nifti2Header):
        raise ValueError(f"{path}: a NIfTI-2 file, which ITK cannot read; expected NIfTI-1 (convert it with nibabel: "
                         "nib.save(nib.Nifti1Image.from_image(nib.load(path)), 'ct_nifti1.nii.gz'))")  # fmt: skip
    if header is not None:  # before ITK reads it: ITK fails on some of these, or warns on stderr
        check_nifti_datatype(path, header)
        check_nifti_header(path, header)
    image_io = itk.ImageIOFactory.CreateImageIO(str(path), itk.CommonEnums.IOFileMode_ReadMode)
    if image_io is None:
        raise ValueError(f"{path}: not a readable image (corrupt or truncated, or not a "
                         f"{'/'.join(VOLUME_SUFFIXES)} volume)")  # fmt: skip
    image_io.SetFileName(str(path))
    try:
        image_io.ReadImageInformation()
    except RuntimeError as e:
        raise ValueError(f"{path}: cannot read the image header ({str(e).strip().splitlines()[-1]})") from None
    check_scalar_voxels(path, image_io)
    shape = tuple(image_io.GetDimensions(i) for i in range(image_io.GetNumberOfDimensions()))  # trailing 1s dropped
    if len(shape) == 4:
        raise ValueError(f"{path}: a 4D volume ({shape[3]} time points or channels of shape {shape[:3]}); "
                         "expected one 3D CT volume")  # fmt: skip
    if len(shape) > 4:
        raise ValueError(f"{path}: a {len(shape)}D volume of shape {shape}; expected one 3D CT volume")
    if len(shape) < 3 or sum(s > 1 for s in shape[:3]) < 3:
        raise ValueError(f"{path}: a 2D image of shape {shape}; expected a 3D CT volume (x, y, z)")
    check_unsheared(path, image_io)
    if header is not None:
        check_nifti_grid(path, image_io, shape)
        check_nifti_complete(path)
    else:
        check_volume_data(path, image_io)


def check_scalar_voxels(path: Path, image_io: itk.ImageIOBase) -> None:
    """Raise ``ValueError`` unless the voxels of ``path`` (``image_io``: its header read) are single real numbers
    (MONAI would read an RGB or vector image as channels, and fails on complex ones)."""
    pixel = image_io.GetPixelTypeAsString(image_io.GetPixelType())
    component = image_io.GetComponentTypeAsString(image_io.GetComponentType())
    if pixel == "complex":
        raise ValueError(f"{path}: a complex-valued image ({component} real and imaginary parts); expected one CT "
                         "intensity per voxel")  # fmt: skip
    count = image_io.GetNumberOfComponents()
    if pixel != "scalar" or count != 1:
        kind = {"rgb": "an RGB image", "rgba": "an RGBA image"}.get(pixel, f"a {pixel} image")
        raise ValueError(f"{path}: {kind} ({count} components per voxel, {component} each); expected one CT "
                         "intensity per voxel")  # fmt: skip


#: Largest ``|cos|`` of the angle between two voxel axes still taken as orthogonal (about 0.006 degrees off 90).
SHEAR_TOLERANCE = 1e-4


def axis_cosines(axes: np.ndarray) -> np.ndarray:
    """``|cos|`` of the angle between each pair of the voxel axes ``axes`` (3 x 3, one per column, any length), in
    the upper triangle of a 3 x 3 matrix: all 0 for an unsheared grid."""
    directions = axes / np.linalg.norm(axes, axis=0)
    return np.abs(np.triu(directions.T @ directions, 1))


def check_unsheared(path: Path, image_io: itk.ImageIOBase) -> None:
    """Raise ``ValueError`` if the voxel axes of ``path`` (``image_io``: its header read) are not orthogonal: ITK
    reads a sheared NRRD or MetaImage grid as it is, and the label maps written on it would be misplaced."""
    cosines = axis_cosines(np.array([image_io.GetDirection(i)[:3] for i in range(3)], dtype=float).T)
    if cosines.max() > SHEAR_TOLERANCE:
        i, j = np.unravel_index(int(np.argmax(cosines)), cosines.shape)
        raise ValueError(f"{path}: its voxel axes {i} and {j} are {math.degrees(math.acos(cosines[i, j])):.1f} degrees "
                         "apart, not 90 (a sheared grid: a tilted gantry?); expected orthogonal axes (resample the "
                         "scan to an unsheared grid)")  # fmt: skip


def check_volume_data(path: Path, image_io: itk.ImageIOBase) -> None:
    """Raise ``ValueError`` unless MONAI's ``ITKReader`` reads all the voxels of the NRRD or MetaImage file
    ``path`` (``image_io``: its header read), which their header does not tell (ITK would fail mid-run, for
    MetaImage with "No such file or directory"). Reads the whole volume, as loading it does."""
    import itk
    from monai.data import ITKReader

    if path.name.lower().endswith(".mhd"):
        field = re.search(r"^\s*ElementDataFile\s*=\s*(.+?)\s*$", path.read_text(errors="replace"), re.MULTILINE)
        if field and field[1] not in ("LOCAL", "LIST") and "%" not in field[1]:  # one file, not slices
            data_file = path.parent / field[1]
            if not data_file.is_file():
                raise ValueError(f"{path}: its data file {data_file} (ElementDataFile) does not exist; expected it "
                                 "next to the header")  # fmt: skip
    try:
        ITKReader().read(str(path))
    except RuntimeError:
        raise ValueError(f"{path}: truncated or corrupt: ITK cannot read all {image_io.GetImageSizeInBytes()} bytes "
                         "of its voxel data (an interrupted copy or download?)") from None  # fmt: skip
    except itk.TemplateTypeError:  # no itk.Image of its voxel type in ITK's Python wrapping
        component = image_io.GetComponentTypeAsString(image_io.GetComponentType())
        raise ValueError(f"{path}: voxels of ITK type {component}, which MONAI's ITK reader cannot load; save it as "
                         "int16 (a CT scan) or uint8/int16 (a label map)") from None  # fmt: skip


def read_nifti_header(path: Path) -> Nifti1Header | None:
    """The NIfTI-1 or NIfTI-2 header of ``path`` as stored (``nib.load`` fixes some fields, and refuses some
    datatypes), or ``None`` where it holds none (ITK then says what it is)."""
    import nibabel as nib
    from nibabel.openers import ImageOpener

    try:
        with ImageOpener(str(path)) as f:
            block = f.read(nib.Nifti2Header.sizeof_hdr)
    except (OSError, EOFError, zlib.error):
        return None
    for klass in (nib.Nifti1Header, nib.Nifti2Header):
        if klass.may_contain_header(block):
            return klass.from_fileobj(io.BytesIO(block[: klass.sizeof_hdr]), check=False)
    return None


#: NIfTI datatype codes MONAI's ``ITKReader`` loads with ITK 5.4, each tried (tests/data/test_checks.py): uint8 (2),
#: int16 (4), int32 (8), float32 (16), float64 (64), uint16 (512), uint32 (768); and complex (32, 1792), RGB (128) and
#: RGBA (2304), whose header ITK reads for ``check_scalar_voxels`` to refuse them. Not binary (1), float128 (1536),
#: complex256 (2048), which ITK cannot read, nor int8 (256), int64 (1024), uint64 (1280), which ITK reads but its
#: Python wrapping has no image type for.
ITK_NIFTI_DATATYPES = frozenset({2, 4, 8, 16, 32, 64, 128, 512, 768, 1792, 2304})


def check_nifti_datatype(path: Path, header: Nifti1Header) -> None:
    """Raise ``ValueError`` if the NIfTI ``header`` of ``path`` has a datatype MONAI's ``ITKReader`` cannot load
    (ITK would say "Unknown component type" or "not recognized as a NIFTI file", or mid-run "itk.Image is not
    wrapped for input type")."""
    from nibabel.nifti1 import data_type_codes

    code = int(header["datatype"])
    if code not in ITK_NIFTI_DATATYPES:
        name = data_type_codes.label[code] if code in data_type_codes.code else "not a NIfTI datatype"
        raise ValueError(f"{path}: datatype {code} ({name}), which MONAI's ITK reader cannot load; save it as int16 "
                         "(a CT scan) or uint8/int16 (a label map)")  # fmt: skip


#: NIfTI spatial unit codes (``xyzt_units & 7``) ITK converts to mm, and by how much.
ITK_UNIT_SCALES = {1: ("meter", 1000), 3: ("micron", 0.001)}


def check_nifti_header(path: Path, header: Nifti1Header) -> None:
    """Raise ``ValueError`` for NIfTI header fields ITK and nibabel (the NIfTI standard) read differently: a voxel
    size that is not > 0, a qfac other than 1 or -1, a sheared sform, a scaling that is not one (slope 0 or not
    finite with an intercept, an intercept that is not finite), a spatial unit other than mm, no orientation at
    all, voxels that start inside the header."""
    offset, first = float(header["vox_offset"]), header.single_vox_offset
    if offset < first:
        raise ValueError(f"{path}: vox_offset is {offset:g}, inside its header; expected at least {first} (ITK and "
                         "nibabel would read the voxels from different bytes)")  # fmt: skip
    for axis, size in enumerate(float(v) for v in header["pixdim"][1:4]):
        if not (math.isfinite(size) and size > 0):
            itk = "a flipped axis, nibabel its absolute value" if size < 0 else "1 mm"
            raise ValueError(f"{path}: pixdim[{axis + 1}] (the voxel size along axis {axis}) is {size:g}; expected a "
                             f"size in mm > 0 (ITK would read {itk})")  # fmt: skip
    qfac = float(header["pixdim"][0])
    if int(header["qform_code"]) > 0 and qfac not in (-1.0, 0.0, 1.0):
        raise ValueError(f"{path}: pixdim[0] (qfac) is {qfac:g}; expected 1 or -1 (ITK takes its sign, nibabel reads "
                         "it as 1)")  # fmt: skip
    if int(header["sform_code"]) > 0:
        if axis_cosines(header.get_sform()[:3, :3]).max() > SHEAR_TOLERANCE:
            raise ValueError(f"{path}: its sform (code {int(header['sform_code'])}) is sheared (a tilted gantry?): ITK "
                             "cannot hold a shear and reads the qform instead or fails, nibabel reads the sform; "
                             "resample the scan to an unsheared grid")  # fmt: skip
    slope, inter = float(header["scl_slope"]), float(header["scl_inter"])
    if not (math.isfinite(slope) and slope != 0) and math.isfinite(inter) and inter != 0:
        raise ValueError(f"{path}: scl_slope is {slope:g} with scl_inter {inter:g}: by the NIfTI standard no scaling, "
                         f"but ITK (which reads the scans here) would add {inter:g} to every voxel; set scl_slope to 1 "
                         "to apply the intercept, or scl_inter to 0 to not")  # fmt: skip
    if math.isfinite(slope) and slope != 0 and not math.isfinite(inter):
        raise ValueError(f"{path}: scl_inter is {inter:g} with scl_slope {slope:g}: expected a finite intercept "
                         "(ITK would read it as 0, nibabel refuses the file)")  # fmt: skip
    unit = int(header["xyzt_units"]) & 7
    if unit in ITK_UNIT_SCALES:
        name, scale = ITK_UNIT_SCALES[unit]
        raise ValueError(f"{path}: its spatial unit is {name} (xyzt_units): ITK scales the voxel grid by {scale:g} to "
                         "mm, nibabel and most viewers do not; expected mm (xyzt_units 2)")  # fmt: skip
    if int(header["qform_code"]) == 0 and int(header["sform_code"]) == 0:
        raise ValueError(f"{path}: no orientation: qform_code and sform_code are both 0, and ITK and nibabel then "
                         "place the voxels differently; expected the scan's voxel-to-world affine in the sform or "
                         "qform")  # fmt: skip


#: How far apart (mm) ITK and nibabel may place a voxel of a NIfTI file and still read one grid from it.
READERS_AGREE_MM = 0.1


def check_nifti_grid(path: Path, image_io: itk.ImageIOBase, shape: tuple[int, ...]) -> None:
    """Raise ``ValueError`` if ITK (``image_io``: its header read) places the corners of the NIfTI volume ``path``
    elsewhere than nibabel does (ITK may read the qform where nibabel reads the sform)."""
    import nibabel as nib

    image = nib.load(str(path))

    def apart(a: np.ndarray, b: np.ndarray) -> float:
        return float(corner_offsets_mm(a, b, shape)[1].max())

    lps = np.eye(4)
    for i in range(3):
        lps[:3, i] = np.asarray(image_io.GetDirection(i)[:3]) * image_io.GetSpacing(i)
        lps[i, 3] = image_io.GetOrigin(i)
    itk_affine = LPS_TO_RAS @ lps  # as MONAI's ITKReader
    gap = apart(itk_affine, image.affine)
    if gap <= READERS_AGREE_MM:
        return
    header = image.header
    codes = {"qform": int(header["qform_code"]), "sform": int(header["sform_code"])}
    nib_form = "sform" if codes["sform"] else "qform"
    itk_form = "qform" if nib_form == "sform" else "sform"
    why = "rewrite its qform and sform from the scan's geometry"
    itk_form_affine = header.get_qform() if itk_form == "qform" else header.get_sform()
    if codes[itk_form] and apart(itk_affine, itk_form_affine) <= READERS_AGREE_MM:
        why = (f"ITK reads its {itk_form} (code {codes[itk_form]}), nibabel and most tools its {nib_form} (code "
               f"{codes[nib_form]}); make them agree (e.g. nibabel: img.set_qform(img.get_sform()), then save)")
    raise ValueError(f"{path}: ITK and nibabel read different voxel grids (voxels up to {gap:.1f} mm apart): {why}")


#: Bytes read at a time to check the data of a NIfTI file (a multiple of every voxel size).
CHUNK_BYTES = 1 << 22


def read_to_end(f: io.BufferedIOBase, offset: int, count: int, dtype: np.dtype | None) -> tuple[int, int]:
    """Read the binary file ``f`` to its end: how many bytes it holds, and how many of the ``count`` voxels of
    ``dtype`` from byte ``offset`` on are NaN or infinite (none counted where ``dtype`` is ``None``)."""
    size = len(f.read(offset))
    left = 0 if dtype is None else count
    nonfinite = 0
    while chunk := f.read(CHUNK_BYTES):  # whole chunks until the end: each starts at a voxel
        size += len(chunk)
        if left:
            values = np.frombuffer(chunk, dtype, count=min(left, len(chunk) // dtype.itemsize))
            nonfinite += values.size - int(np.count_nonzero(np.isfinite(values)))
            left -= values.size
    return size, nonfinite


def check_nifti_complete(path: Path) -> None:
    """Raise ``ValueError`` if a NIfTI file holds fewer bytes than its header announces (a cut-off copy or
    download), if a ``.nii.gz`` is damaged (the CRC and length of each of its gzip members, as ``cat``, pigz or
    bgzip write several), or if float voxels are NaN or infinite (ITK reads them as 0, without a word).

    One pass: a ``.nii.gz`` is decompressed once, about 0.5 s per 100 MB of uncompressed data (zlib, one core;
    measured 0.42 s for float32, 0.53 s for int16 CT on an AMD EPYC), its floats checked on the way; a ``.nii`` is
    read only for float voxels, otherwise its size suffices."""
    import nibabel as nib

    image = nib.load(str(path))
    header = image.header
    dtype = header.get_data_dtype()
    count = math.prod(int(d) for d in header.get_data_shape())
    expected = image.dataobj.offset + count * dtype.itemsize
    compressed = path.name.lower().endswith(".gz")
    size, nonfinite = path.stat().st_size, 0
    if compressed or dtype.kind == "f":
        try:
            with (gzip.open if compressed else open)(path, "rb") as f:
                size, nonfinite = read_to_end(f, image.dataobj.offset, count, dtype if dtype.kind == "f" else None)
        except EOFError:
            raise ValueError(f"{path}: truncated or corrupt: its header announces {expected} bytes of data, the gzip "
                             "stream is cut off (an interrupted copy or download?)") from None  # fmt: skip
        except (gzip.BadGzipFile, zlib.error) as e:
            raise ValueError(f"{path}: truncated or corrupt: the gzip stream is damaged ({e})") from None
    if size < expected and compressed:
        raise ValueError(f"{path}: truncated or corrupt: its header announces {expected} bytes of data, the gzip "
                         f"stream holds {size} (an interrupted copy or download?)")  # fmt: skip
    if size < expected:
        raise ValueError(f"{path}: truncated: {size} bytes, its header announces {expected}")
    if nonfinite:
        raise ValueError(f"{path}: {nonfinite} of {count} voxels are NaN or infinite (ITK would read them as 0); "
                         "expected finite values")  # fmt: skip
