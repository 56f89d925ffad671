"""Checks of scan files before they are loaded, by name: MONAI's readers fail deep inside a transform, or worse
read a damaged file without a word (ITK reads a truncated ``.nii.gz`` and fills the rest, a 4D or RGB file as
channels, a NIfTI header differently from nibabel and the NIfTI standard), or read only one of several DICOM series
in a folder. Training (``load_datalist``) and inference (``find_scans``) both run them.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .dicom import check_dicom_series, is_dicom_file  # noqa: F401 (is_dicom_file: for inputs)

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
    """Raise ``ValueError`` naming ``path`` unless ITK can read it as one scalar 3D volume (header only), and for
    NIfTI unless ITK and nibabel (the NIfTI standard) read the same voxel grid and values from its header."""
    import itk

    header = read_nifti_header(path) if path.name.lower().endswith((".nii", ".nii.gz")) else None
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
    if header is not None:
        check_nifti_grid(path, image_io, shape)
        check_nifti_complete(path)


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


def read_nifti_header(path: Path) -> Nifti1Header | None:
    """The NIfTI-1 or NIfTI-2 header of ``path`` as stored (``nib.load`` fixes some fields, and refuses some
    datatypes), or ``None`` where it holds none (ITK then says what it is)."""
    import io

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


#: NIfTI datatype codes ITK's NiftiImageIO reads (``check_scalar_voxels`` then refuses complex, RGB and RGBA): all
#: but binary (1), float128 (1536) and complex256 (2048).
ITK_NIFTI_DATATYPES = frozenset({2, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024, 1280, 1792, 2304})


def check_nifti_datatype(path: Path, header: Nifti1Header) -> None:
    """Raise ``ValueError`` if the NIfTI ``header`` of ``path`` has a datatype ITK cannot read (it would say
    "Unknown component type", or "not recognized as a NIFTI file")."""
    from nibabel.nifti1 import data_type_codes

    code = int(header["datatype"])
    if code not in ITK_NIFTI_DATATYPES:
        name = data_type_codes.label[code] if code in data_type_codes.code else "not a NIfTI datatype"
        raise ValueError(f"{path}: datatype {code} ({name}), which ITK cannot read; expected an integer or float "
                         "type (e.g. int16, float32)")  # fmt: skip


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
        sform = header.get_sform()[:3, :3]
        directions = sform / np.linalg.norm(sform, axis=0)
        if not np.allclose(directions.T @ directions, np.eye(3), atol=1e-4):
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
    corners = np.array([[i, j, k, 1] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)])

    def apart(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.max(np.linalg.norm((corners @ (a - b).T)[:, :3], axis=1)))

    lps = np.eye(4)
    for i in range(3):
        lps[:3, i] = np.asarray(image_io.GetDirection(i)[:3]) * image_io.GetSpacing(i)
        lps[i, 3] = image_io.GetOrigin(i)
    itk_affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # LPS to RAS, as MONAI's ITKReader
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


def gzip_data_size(path: Path) -> int:
    """The uncompressed length of all the gzip members of ``path``, decompressing it (``EOFError`` if it is cut
    off, ``OSError``/``zlib.error`` if it is damaged)."""
    size = 0
    with gzip.open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            size += len(chunk)
    return size


def check_nifti_complete(path: Path) -> None:
    """Raise ``ValueError`` if a NIfTI file holds fewer bytes than its header announces (a cut-off copy or
    download). For ``.nii.gz`` the uncompressed size is read from the gzip trailer, without decompressing; only
    when it does not match (a file of several gzip members, as ``cat``, pigz or bgzip write, has the last
    member's there) is the file decompressed to count."""
    import nibabel as nib

    image = nib.load(str(path))
    header = image.header
    expected = image.dataobj.offset + math.prod(int(d) for d in header.get_data_shape()) * header.get_data_dtype().itemsize
    if path.name.lower().endswith(".gz"):
        with open(path, "rb") as f:
            f.seek(-4, os.SEEK_END)
            (size,) = struct.unpack("<I", f.read(4))  # ISIZE: the uncompressed length (of the last member) mod 2^32
        if size == expected % 2**32:
            return
        try:
            size = gzip_data_size(path)
        except EOFError:
            raise ValueError(f"{path}: truncated or corrupt: its header announces {expected} bytes of data, the gzip "
                             "stream is cut off (an interrupted copy or download?)") from None  # fmt: skip
        except (OSError, zlib.error) as e:
            raise ValueError(f"{path}: truncated or corrupt: the gzip stream is damaged ({e})") from None
        if size < expected:
            raise ValueError(f"{path}: truncated or corrupt: its header announces {expected} bytes of data, the gzip "
                             f"stream holds {size} (an interrupted copy or download?)")  # fmt: skip
    elif path.stat().st_size < expected:
        raise ValueError(f"{path}: truncated: {path.stat().st_size} bytes, its header announces {expected}")
