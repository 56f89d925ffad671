import json
from pathlib import Path

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


def test_entries_resolve_relative_paths_and_must_exist(tmp_path):
    (tmp_path / "img.nii.gz").write_bytes(b"")
    (tmp_path / "dicom").mkdir()
    (tmp_path / "lab.nii.gz").write_bytes(b"")
    path = _write(tmp_path, {"training": [{"image": "img.nii.gz", "label": "lab.nii.gz"},
                                          {"image": "dicom", "label": str(tmp_path / "lab.nii.gz")}]})  # fmt: skip
    entries = load_datalist(str(path), "training")
    assert entries[0]["image"] == str(tmp_path / "img.nii.gz") and entries[1]["image"] == str(tmp_path / "dicom")
    path = _write(tmp_path, {"training": [{"image": "img.nii.gz", "label": "missing.nii.gz"}]})
    with pytest.raises(FileNotFoundError, match=r"training\[0\]\.label = .*missing\.nii\.gz does not exist"):
        load_datalist(str(path), "training")


def test_resolve_datalist_prefers_the_users_and_generates_phantoms_otherwise(tmp_path):
    assert resolve_datalist("/data/mine.json", str(tmp_path / "unused")) == "/data/mine.json"
    assert not (tmp_path / "unused").exists()
    generated = resolve_datalist(None, str(tmp_path / "phantoms"), {"n_cases": 1, "spacing": [8.0, 8.0, 10.0]})
    assert Path(generated).is_file() and len(load_datalist(generated, "training")) == 1
