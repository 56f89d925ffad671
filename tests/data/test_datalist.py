import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from autolr_monai.data import load_datalist, resolve_datalist


def _write(tmp_path: Path, content) -> Path:
    path = tmp_path / "datalist.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_missing_datalist_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"datalist .*nowhere\.json does not exist"):
        load_datalist(str(tmp_path / "nowhere.json"), "training")


@pytest.mark.parametrize(
    "content,match",
    [
        ("{not json", "not valid JSON"),
        ({"validation": []}, r"expected a list under the key 'training'; found \['validation'\]"),
        ({"training": []}, "'training' list is empty"),
        ({"training": [{"image": "a.nii.gz"}]}, r"training\[0\] must be an object with fields \('image', 'label'\)"),
    ],
)
def test_malformed_datalists(tmp_path, content, match):
    with pytest.raises(ValueError, match=match):
        load_datalist(str(_write(tmp_path, content)), "training")


@pytest.mark.parametrize("field", ["image", "label"])
@pytest.mark.parametrize("value,said", [(None, "null"), (3, "3"), (["a.nii.gz"], '["a.nii.gz"]'), ("", '""'), (" ", '" "')])
def test_entry_paths_must_be_strings(tmp_path, field, value, said):
    _volume(tmp_path / "img.nii.gz")
    entries = [{"image": "img.nii.gz", "label": "img.nii.gz"} for _ in range(4)]
    entries[3][field] = value
    with pytest.raises(ValueError, match=rf"^datalist \S*datalist\.json: training\[3\]\.{field} must be a path "
                                         rf"\(string\), got {re.escape(said)}$"):  # fmt: skip
        load_datalist(str(_write(tmp_path, {"training": entries})), "training")


def _volume(path: Path, shape=(6, 5, 4)) -> Path:
    nib.save(nib.Nifti1Image(np.zeros(shape, np.int16), np.eye(4)), str(path))
    return path


def test_entries_resolve_relative_paths_and_must_exist(tmp_path):
    _volume(tmp_path / "img.nii.gz")
    _volume(tmp_path / "lab.nii.gz")
    path = _write(tmp_path, {"training": [{"image": "img.nii.gz", "label": "lab.nii.gz"},
                                          {"image": str(tmp_path / "img.nii.gz"), "label": "lab.nii.gz"}]})  # fmt: skip
    entries = load_datalist(str(path), "training")
    assert entries[0]["image"] == str(tmp_path / "img.nii.gz") and entries[1]["label"] == str(tmp_path / "lab.nii.gz")
    path = _write(tmp_path, {"training": [{"image": "img.nii.gz", "label": "missing.nii.gz"}]})
    with pytest.raises(FileNotFoundError, match=r"training\[0\]\.label = .*missing\.nii\.gz does not exist"):
        load_datalist(str(path), "training")


def test_entries_must_be_complete_3d_scans_named_by_entry_and_field(tmp_path):
    _volume(tmp_path / "img.nii.gz")
    _volume(tmp_path / "flat.nii.gz", shape=(6, 5, 1))
    complete = (tmp_path / "img.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(complete[: len(complete) * 2 // 3])
    (tmp_path / "junk.nii.gz").write_bytes(b"not an image at all")
    (tmp_path / "empty_dicom").mkdir()
    for label, match in (("flat.nii.gz", "a 2D image"), ("cut.nii.gz", "(truncated or corrupt|corrupt or truncated)"),
                         ("junk.nii.gz", "not a readable image"), ("empty_dicom", "no readable DICOM series")):  # fmt: skip
        path = _write(tmp_path, {"training": [{"image": "img.nii.gz", "label": label}]})
        with pytest.raises(ValueError, match=rf"datalist .*datalist\.json: training\[0\]\.label: .*{label}.*{match}"):
            load_datalist(str(path), "training")


def test_resolve_datalist_prefers_the_users_and_generates_phantoms_otherwise(tmp_path):
    assert resolve_datalist("/data/mine.json", str(tmp_path / "unused")) == "/data/mine.json"
    assert not (tmp_path / "unused").exists()
    generated = resolve_datalist(None, str(tmp_path / "phantoms"), {"n_cases": 1, "spacing": [8.0, 8.0, 10.0]})
    assert Path(generated).is_file() and len(load_datalist(generated, "training")) == 1
