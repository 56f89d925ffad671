"""Scan checks before loading: what MONAI's readers would fail on deep inside, or read without a word."""

import gzip
import io
import re
import shutil
from pathlib import Path

import itk
import nibabel as nib
import numpy as np
import pytest
from monai.data import ITKReader
from monai.transforms import LoadImage

from autolr_monai.data import checks
from autolr_monai.data.checks import check_scan


def test_a_truncated_nifti_is_refused_though_itk_would_read_it(tmp_path):
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(np.arange(40 * 30 * 20, dtype=np.int16).reshape(40, 30, 20), np.eye(4)), str(path))
    check_scan(path)  # complete: fine
    data = path.read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(data[: len(data) // 2])
    LoadImage(reader="ITKReader", image_only=True)(str(cut))  # the silent wrong answer this check prevents
    with pytest.raises(ValueError, match=r"cut\.nii\.gz: truncated or corrupt"):
        check_scan(cut)
    plain = tmp_path / "ct.nii"
    nib.save(nib.load(str(path)), str(plain))
    short = tmp_path / "short.nii"
    short.write_bytes(plain.read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"short\.nii: truncated: .* bytes, its header announces"):
        check_scan(short)
    with pytest.raises(FileNotFoundError, match="nowhere.nii.gz does not exist"):
        check_scan(tmp_path / "nowhere.nii.gz")


def test_dicom_series_with_a_missing_or_repeated_slice(shared_data, tmp_path):
    series = tmp_path / "series"
    shutil.copytree(shared_data / "dicom_ct", series)
    check_scan(series)  # the complete series
    files = sorted(series.iterdir())
    import pydicom

    by_position = sorted(files, key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]))
    gapped = tmp_path / "gapped"
    shutil.copytree(series, gapped)
    (gapped / by_position[len(by_position) // 2].name).unlink()
    with pytest.raises(ValueError, match=r"gapped: the DICOM series has a gap .* about 1 slice\(s\) missing"):
        check_scan(gapped)


def _nifti(path: Path, data: np.ndarray | None = None, affine: np.ndarray | None = None, **fields) -> Path:
    """``data`` (default: a 6 x 5 x 4 int16 volume of 1000) saved by nibabel with the header ``fields`` then set as
    given: nibabel would fix some of them on save (scl_slope, pixdim), users' files come with them."""
    data = np.full((6, 5, 4), 1000, np.int16) if data is None else data
    raw = nib.Nifti1Image(data, np.eye(4) if affine is None else affine).to_bytes()
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(raw[:348]), check=False)
    for name, value in fields.items():
        header[name] = value
    raw = header.binaryblock + raw[348:]
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)
    return path


ITK = LoadImage(reader="ITKReader", image_only=True)


@pytest.mark.parametrize("slope", [np.nan, 0.0, np.inf])
def test_an_intercept_with_no_slope_is_refused_as_itk_would_apply_it(tmp_path, slope):
    path = _nifti(tmp_path / "ct.nii.gz", scl_slope=slope, scl_inter=-1024)
    assert np.asarray(nib.load(str(path)).dataobj).flat[0] == 1000  # NIfTI: slope 0 or not finite, no scaling
    assert float(ITK(str(path)).flatten()[0]) == -24.0  # ITK adds the intercept: the silent shift refused here
    with pytest.raises(ValueError, match=rf"^\S*ct\.nii\.gz: scl_slope is {slope:g} with scl_inter -1024: by the NIfTI "
                                         r"standard no scaling, but ITK .* would add -1024 to every voxel; set scl_slope"):  # fmt: skip
        check_scan(path)


@pytest.mark.parametrize("slope,inter", [(np.nan, np.nan), (0.0, 0.0), (np.nan, 0.0), (1.0, 0.0), (2.0, -1024.0)])
def test_scalings_itk_and_nibabel_agree_on_pass(tmp_path, slope, inter):
    path = _nifti(tmp_path / "ct.nii.gz", scl_slope=slope, scl_inter=inter)
    check_scan(path)
    assert np.asarray(nib.load(str(path)).dataobj).flat[0] == float(ITK(str(path)).flatten()[0])


def test_a_slope_with_a_non_finite_intercept_is_refused(tmp_path):
    path = _nifti(tmp_path / "ct.nii.gz", scl_slope=2.0, scl_inter=np.nan)
    with pytest.raises(ValueError, match=r"ct\.nii\.gz: scl_inter is nan with scl_slope 2: expected a finite intercept"):
        check_scan(path)


RGB = np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")])


@pytest.mark.parametrize(
    "data,match",
    [
        (np.zeros((6, 5, 4, 3), np.int16), r"a 4D volume \(3 time points or channels of shape \(6, 5, 4\)\); expected one 3D CT"),
        (np.zeros((6, 5, 4, 1, 2), np.int16), r"a 5D volume of shape \(6, 5, 4, 1, 2\); expected one 3D CT volume"),
        (np.zeros((6, 5, 4), RGB), r"an RGB image \(3 components per voxel, unsigned_char each\); expected one CT intensity"),
        (np.zeros((6, 5, 4), np.complex64), r"a complex-valued image \(float real and imaginary parts\); expected one CT"),
    ],
    ids=["4d", "5d", "rgb", "complex"],
)
def test_volumes_that_are_not_one_scalar_3d_volume_are_refused(tmp_path, data, match):
    path = tmp_path / "ct4d.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    with pytest.raises(ValueError, match=rf"^\S*ct4d\.nii\.gz: {match}"):
        check_scan(path)


def test_a_4d_file_with_one_time_point_is_a_3d_volume(tmp_path):
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((6, 5, 4, 1), np.int16), np.eye(4)), str(path))
    check_scan(path)
    assert tuple(ITK(str(path)).shape) == (6, 5, 4)


@pytest.mark.parametrize(
    "fields,match",
    [
        ({"datatype": 1536, "bitpix": 128}, r"datatype 1536 \(float128\), which MONAI's ITK reader cannot load; save"),
        ({"datatype": 2048, "bitpix": 256, "dim": [3, 6, 5, 2, 1, 1, 1, 1]}, r"datatype 2048 \(complex256\), which MONAI"),
        ({"datatype": 1, "bitpix": 1}, r"datatype 1 \(binary\), which MONAI's ITK reader cannot load"),
        ({"datatype": 9999}, r"datatype 9999 \(not a NIfTI datatype\), which MONAI's ITK reader cannot load"),
    ],
    ids=["float128", "complex256", "binary", "unknown"],
)
def test_datatypes_itk_cannot_read_are_refused_by_name(tmp_path, fields, match):
    path = _nifti(tmp_path / "ct.nii", np.zeros((6, 5, 4), np.complex128), **fields)  # 16 bytes a voxel
    with pytest.raises(ValueError, match=rf"^\S*ct\.nii: {match}"):
        check_scan(path)


def _itk_loads(path: Path) -> bool:
    """Whether MONAI's ``ITKReader`` reads all the voxels of ``path`` (``LoadImage`` would fall back to nibabel)."""
    try:
        ITKReader().read(str(path))
    except (RuntimeError, itk.TemplateTypeError):  # TemplateTypeError: no itk.Image of the file's voxel type
        return False
    return True


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32",
                                   "float64"])  # fmt: skip
def test_the_datatypes_let_through_are_those_itk_loads(tmp_path, dtype):
    path = tmp_path / "ct.nii"
    nib.save(nib.Nifti1Image(np.ones((6, 5, 4), dtype), np.eye(4), dtype=dtype), str(path))
    code = int(nib.load(path).header["datatype"])
    if _itk_loads(path):
        assert code in checks.ITK_NIFTI_DATATYPES
        check_scan(path)
    else:  # int8, int64, uint64 in ITK 5.4: its Python wrapping has no image type for them
        with pytest.raises(ValueError, match=rf"^\S*ct\.nii: datatype {code} \({dtype}\), which MONAI's ITK reader cannot "
                                             r"load; save it as int16 \(a CT scan\) or uint8/int16 \(a label map\)$"):  # fmt: skip
            check_scan(path)


@pytest.mark.parametrize("name,dtype", [("ct.nii.gz", np.float32), ("ct.nii", np.float64)])
def test_nan_or_infinite_voxels_are_refused_as_itk_reads_them_as_0(tmp_path, name, dtype):
    data = np.full((6, 5, 4), -1000, dtype)
    path = tmp_path / name
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    check_scan(path)  # finite: fine
    data[1, 2, 3], data[0, 0, 0], data[5, 4, 3] = np.nan, np.inf, -np.inf
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    assert float(ITK(str(path))[1, 2, 3]) == 0.0  # the silent wrong answer refused here
    with pytest.raises(ValueError, match=rf"^\S*{re.escape(name)}: 3 of 120 voxels are NaN or infinite \(ITK would read "
                                         r"them as 0\); expected finite values$"):  # fmt: skip
        check_scan(path)


@pytest.mark.parametrize("members", [1, 3])
def test_a_gzip_stream_damaged_in_the_middle_is_refused(tmp_path, members):
    data = np.arange(64 * 64 * 32, dtype=np.int16).reshape(64, 64, 32)  # smaller: ITK's header read sees the damage
    raw = nib.Nifti1Image(data, np.eye(4)).to_bytes()
    ends = np.linspace(0, len(raw), members + 1).astype(int)
    stored = b"".join(gzip.compress(raw[a:b], compresslevel=0) for a, b in zip(ends[:-1], ends[1:]))  # uncompressed
    path = tmp_path / "ct.nii.gz"
    path.write_bytes(stored)
    check_scan(path)
    damaged = bytearray(stored)
    damaged[len(damaged) // 2] ^= 0xFF  # a voxel's byte: the CRC no longer matches, the length still does
    path.write_bytes(damaged)
    assert not np.array_equal(itk.array_from_image(ITKReader().read(str(path))).T, data)  # ITK reads it regardless
    with pytest.raises(ValueError, match=r"^\S*ct\.nii\.gz: truncated or corrupt: the gzip stream is damaged \(CRC check "
                                         r"failed"):  # fmt: skip
        check_scan(path)


def test_a_nifti2_file_is_refused_with_how_to_convert_it(tmp_path):
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti2Image(np.arange(120, dtype=np.int16).reshape(6, 5, 4), GRID), str(path))
    assert not _itk_loads(path)
    with pytest.raises(ValueError, match=r"^\S*ct\.nii\.gz: a NIfTI-2 file, which ITK cannot read; expected NIfTI-1 "
                                         r"\(convert it with nibabel: nib\.save\(nib\.Nifti1Image\.from_image\(nib\.load"
                                         r"\(path\)\), 'ct_nifti1\.nii\.gz'\)\)$"):  # fmt: skip
        check_scan(path)
    converted = tmp_path / "ct_nifti1.nii.gz"
    nib.save(nib.Nifti1Image.from_image(nib.load(path)), str(converted))  # as the message says
    check_scan(converted)
    assert np.array_equal(ITK(str(converted)).affine, nib.load(path).affine)


def _itk_image(direction: np.ndarray = np.eye(3)) -> itk.Image:
    """A 6 x 5 x 4 int16 volume (x, y, z) of 3 mm voxels with the voxel axes ``direction`` (columns)."""
    image = itk.image_from_array(np.arange(120, dtype=np.int16).reshape(4, 5, 6))
    image.SetSpacing([3.0, 3.0, 3.0])
    image.SetDirection(itk.matrix_from_array(np.ascontiguousarray(direction, dtype=float)))
    return image


@pytest.mark.parametrize("name", ["shear.nrrd", "shear.mha"])
def test_sheared_voxel_axes_are_refused_in_every_format(tmp_path, name):
    path = tmp_path / name
    itk.imwrite(_itk_image(np.array([[1, 0, 0], [0, 1, 0.8 / 3], [0, 0, 1]])), str(path))
    if name.endswith(".nrrd"):
        assert "space directions: (3,0,0) (0,3,0) (0,0.8" in path.read_text(errors="replace")
    axes = ITK(str(path)).affine[:3, :3].numpy()
    assert abs(axes[:, 1] @ axes[:, 2]) > 1  # ITK reads it sheared, and the label map would be written so
    with pytest.raises(ValueError, match=rf"^\S*{re.escape(name)}: its voxel axes 1 and 2 are 75\.1 degrees apart, not 90 "
                                         r"\(a sheared grid: a tilted gantry\?\); expected orthogonal axes"):  # fmt: skip
        check_scan(path)


@pytest.mark.parametrize("name,compression", [("ct.nrrd", False), ("ct.nrrd", True), ("ct.mha", False), ("ct.mha", True)])
def test_a_truncated_nrrd_or_metaimage_is_refused(tmp_path, name, compression):
    path = tmp_path / name
    itk.imwrite(_itk_image(), str(path), compression=compression)
    check_scan(path)
    cut = tmp_path / f"cut{path.suffix}"
    cut.write_bytes(path.read_bytes()[:-50])
    assert not _itk_loads(cut)  # MetaImage: "No such file or directory"
    with pytest.raises(ValueError, match=rf"^\S*cut\{path.suffix}: truncated or corrupt: ITK cannot read all 240 bytes of "
                                         r"its voxel data \(an interrupted copy or download\?\)$"):  # fmt: skip
        check_scan(cut)


def test_a_metaimage_header_without_its_data_file_is_refused(tmp_path):
    path = tmp_path / "ct.mhd"
    itk.imwrite(_itk_image(), str(path))
    check_scan(path)
    (tmp_path / "ct.raw").unlink()  # ITK reads the header, then fails with "No such file or directory"
    with pytest.raises(ValueError, match=r"^\S*ct\.mhd: its data file \S*ct\.raw \(ElementDataFile\) does not exist; "
                                         r"expected it next to the header$"):  # fmt: skip
        check_scan(path)


@pytest.mark.parametrize("nrrd_type,itk_type", [("signed char", "char"), ("int64", "long_long")])
def test_an_nrrd_of_a_voxel_type_itk_cannot_load_is_refused(tmp_path, nrrd_type, itk_type):
    path = tmp_path / "ct.nrrd"
    header = (f"NRRD0004\ntype: {nrrd_type}\ndimension: 3\nspace: left-posterior-superior\nsizes: 6 5 4\nspace "
              "directions: (3,0,0) (0,3,0) (0,0,3)\nendian: little\nencoding: raw\nspace origin: (0,0,0)\n\n")  # fmt: skip
    path.write_bytes(header.encode() + np.zeros(120, np.int8 if nrrd_type == "signed char" else np.int64).tobytes())
    assert not _itk_loads(path)
    with pytest.raises(ValueError, match=rf"^\S*ct\.nrrd: voxels of ITK type {itk_type}, which MONAI's ITK reader cannot "
                                         r"load; save it as int16 \(a CT scan\) or uint8/int16 \(a label map\)$"):  # fmt: skip
        check_scan(path)


def test_a_multi_member_gzip_is_complete(tmp_path):
    path = tmp_path / "ct.nii"
    nib.save(nib.Nifti1Image(np.arange(40 * 30 * 20, dtype=np.int16).reshape(40, 30, 20), np.eye(4)), str(path))
    raw = path.read_bytes()
    joined = tmp_path / "joined.nii.gz"  # as `cat a.gz b.gz`, pigz or bgzip write it
    joined.write_bytes(gzip.compress(raw[:5000]) + gzip.compress(raw[5000:20000]) + gzip.compress(raw[20000:]))
    assert np.array_equal(ITK(str(joined)), nib.load(str(path)).get_fdata())
    check_scan(joined)
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(joined.read_bytes()[:-3000])
    with pytest.raises(ValueError, match=r"cut\.nii\.gz: truncated or corrupt: its header announces 48352 bytes of "
                                         r"data, the gzip stream is cut off"):  # fmt: skip
        check_scan(cut)


@pytest.mark.parametrize("value,itk", [(0.0, "1 mm"), (-2.0, "a flipped axis"), (np.nan, "1 mm")])
def test_a_zero_negative_or_nan_voxel_size_is_refused(tmp_path, value, itk):
    path = _nifti(tmp_path / "ct.nii.gz", pixdim=[1.0, value, 3.0, 4.0, 1.0, 1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=rf"ct\.nii\.gz: pixdim\[1\] \(the voxel size along axis 0\) is {value:g}; "
                                         rf"expected a size in mm > 0 \(ITK would read {itk}"):  # fmt: skip
        check_scan(path)


@pytest.mark.parametrize("offset", [0, 348])
def test_voxels_inside_the_header_are_refused(tmp_path, offset):
    path = _nifti(tmp_path / "ct.nii", np.arange(120, dtype=np.int16).reshape(6, 5, 4), vox_offset=offset)
    with pytest.raises(ValueError, match=rf"ct\.nii: vox_offset is {offset}, inside its header; expected at least 352 "
                                         r"\(ITK and nibabel would read the voxels from different bytes\)"):  # fmt: skip
        check_scan(path)
    check_scan(_nifti(tmp_path / "ok.nii", vox_offset=352))


def _forms(qform: np.ndarray, sform: np.ndarray, qcode: int, scode: int) -> nib.Nifti1Image:
    image = nib.Nifti1Image(np.zeros((6, 5, 4), np.int16), None)
    image.set_qform(qform, qcode)
    image.set_sform(sform, scode)
    return image


GRID = np.array([[2.0, 0, 0, 10], [0, 3, 0, 20], [0, 0, 4, 30], [0, 0, 0, 1]])


def test_qform_and_sform_must_describe_one_grid(tmp_path):
    nib.save(_forms(GRID, GRID, 1, 2), str(tmp_path / "agree.nii.gz"))
    check_scan(tmp_path / "agree.nii.gz")
    moved = GRID.copy()
    moved[:3, 3] += 40
    nib.save(_forms(GRID, moved, 1, 2), str(tmp_path / "qs.nii.gz"))
    assert not np.allclose(ITK(str(tmp_path / "qs.nii.gz")).affine, nib.load(tmp_path / "qs.nii.gz").affine)
    with pytest.raises(ValueError, match=r"qs\.nii\.gz: ITK and nibabel read different voxel grids \(voxels up to 69\.3 "
                                         r"mm apart\): ITK reads its qform \(code 1\), nibabel and most tools its sform "
                                         r"\(code 2\); make them agree"):  # fmt: skip
        check_scan(tmp_path / "qs.nii.gz")


@pytest.mark.parametrize("qcode", [1, 0])
def test_a_sheared_sform_is_refused(tmp_path, qcode):
    sheared = GRID.copy()
    sheared[0, 1] = 1.0  # a tilted gantry, as some converters write it
    nib.save(_forms(GRID, sheared, qcode, 2), str(tmp_path / "shear.nii.gz"))
    with pytest.raises(ValueError, match=r"shear\.nii\.gz: its sform \(code 2\) is sheared .*: ITK cannot hold a shear"):
        check_scan(tmp_path / "shear.nii.gz")


def test_a_qfac_other_than_1_or_minus_1_is_refused(tmp_path):
    path = _nifti(tmp_path / "ct.nii.gz", affine=GRID, pixdim=[-0.5, 2, 3, 4, 1, 1, 1, 1], qform_code=1, sform_code=0)
    assert not np.allclose(ITK(str(path)).affine, nib.load(path).affine)  # ITK takes the sign, nibabel 1
    with pytest.raises(ValueError, match=r"ct\.nii\.gz: pixdim\[0\] \(qfac\) is -0\.5; expected 1 or -1"):
        check_scan(path)


def test_a_volume_without_orientation_is_refused(tmp_path):
    nib.save(_forms(GRID, GRID, 0, 0), str(tmp_path / "analyze.nii.gz"))
    with pytest.raises(ValueError, match=r"analyze\.nii\.gz: no orientation: qform_code and sform_code are both 0"):
        check_scan(tmp_path / "analyze.nii.gz")


@pytest.mark.parametrize("unit,factor", [("meter", "1000"), ("micron", "0.001")])
def test_spatial_units_other_than_mm_are_refused(tmp_path, unit, factor):
    image = nib.Nifti1Image(np.zeros((6, 5, 4), np.int16), GRID)
    image.header.set_xyzt_units(xyz=unit)
    nib.save(image, str(tmp_path / "ct.nii.gz"))
    with pytest.raises(ValueError, match=rf"ct\.nii\.gz: its spatial unit is {unit} \(xyzt_units\): ITK scales the "
                                         rf"voxel grid by {factor} to mm, nibabel and most viewers do not; expected mm"):  # fmt: skip
        check_scan(tmp_path / "ct.nii.gz")
    image.header.set_xyzt_units(xyz="mm")
    nib.save(image, str(tmp_path / "mm.nii.gz"))
    check_scan(tmp_path / "mm.nii.gz")


def test_the_real_ct_and_the_phantoms_pass(shared_data, tiny_datalist):
    check_scan(shared_data / "ct.nii.gz")
    check_scan(shared_data / "labels_totalseg.nii.gz")
    for path in sorted(Path(tiny_datalist).parent.rglob("*.nii.gz")):
        check_scan(path)
