"""Scan checks before loading: what MONAI's readers would fail on deep inside, or read without a word."""

import gzip
import io
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
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
        ({"datatype": 1536, "bitpix": 128}, r"datatype 1536 \(float128\), which ITK cannot read; expected"),
        ({"datatype": 2048, "bitpix": 256, "dim": [3, 6, 5, 2, 1, 1, 1, 1]}, r"datatype 2048 \(complex256\), which ITK"),
        ({"datatype": 1, "bitpix": 1}, r"datatype 1 \(binary\), which ITK cannot read"),
        ({"datatype": 9999}, r"datatype 9999 \(not a NIfTI datatype\), which ITK cannot read"),
    ],
    ids=["float128", "complex256", "binary", "unknown"],
)
def test_datatypes_itk_cannot_read_are_refused_by_name(tmp_path, fields, match):
    path = _nifti(tmp_path / "ct.nii", np.zeros((6, 5, 4), np.complex128), **fields)  # 16 bytes a voxel
    with pytest.raises(ValueError, match=rf"^\S*ct\.nii: {match}"):
        check_scan(path)


def test_a_multi_member_gzip_is_complete(tmp_path, monkeypatch):
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
    single = tmp_path / "single.nii.gz"
    single.write_bytes(gzip.compress(raw))

    def no_decompression(path):
        raise AssertionError(f"decompressed {path}")

    monkeypatch.setattr(checks, "gzip_data_size", no_decompression)
    check_scan(single)  # the gzip trailer suffices


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
