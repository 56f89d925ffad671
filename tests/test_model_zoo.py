"""The bundle in the MONAI model-zoo format: required files, metadata valid against the schema, MONAI's bundle
checks (verify_metadata, verify_net_in_out, ckpt_export), and a packed zip that runs where autolr_monai is not
installed."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from autolr_monai.networks import DualPathResNet3D
from tests.conftest import REPO, TINY_NETWORK
from tests.test_inference_bundle import TINY

BUNDLE = REPO / "bundle"
SCHEMA = REPO.parent / "shared" / "monai-schema" / "meta_schema_20240725.json"
SCHEMA_MD5 = "06954cad2cc5d3784e72077ac76f0fc8"


def _monai_bundle(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "monai.bundle", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)  # fmt: skip


def _ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_the_files_the_zoo_requires_and_expects():
    for name in ("LICENSE", "large_files.yml", "docs/README.md", "docs/data_license.txt", "scripts/__init__.py",
                 *(f"configs/{c}" for c in ("metadata.json", "train.json", "evaluate.json", "inference.json",
                                             "multi_gpu_train.json", "logging.conf"))):  # fmt: skip
        assert (BUNDLE / name).is_file(), name
    assert "Apache License" in (BUNDLE / "LICENSE").read_text()
    readme = (BUNDLE / "docs" / "README.md").read_text()
    for section in ("## Model", "## Data", "## Training", "## Performance", "## Commands", "## Limitations",
                    "## Citation"):  # fmt: skip
        assert f"\n{section}" in readme, section
    large = ConfigParser.load_config_file(str(BUNDLE / "large_files.yml"))
    assert [f["path"] for f in large["large_files"]] == ["models/model.pt", "models/model.ts"]


def test_metadata_lists_the_pinned_package_versions():
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    assert meta["schema"].endswith("/meta_schema_20240725.json")
    pins = dict(re.findall(r"^([\w.-]+)==([\w.]+)", (REPO / "requirements.txt").read_text(), re.M))
    assert meta["monai_version"] == pins["monai"] and meta["pytorch_version"] == pins["torch"]
    assert meta["numpy_version"] == pins["numpy"]
    for package, version in meta["required_packages_version"].items():
        assert pins[package.lower()] == version, package
    required = set(meta["required_packages_version"])
    assert {"pytorch-ignite", "nibabel", "itk", "highdicom", "pydicom", "pyyaml", "scikit-image", "tqdm"} <= required


def test_verify_metadata_against_the_offline_schema(tmp_path):
    if not SCHEMA.is_file():
        pytest.skip(f"offline MONAI metadata schema not found at {SCHEMA}")
    schema = tmp_path / "meta_schema.json"
    schema.write_bytes(SCHEMA.read_bytes())  # verify_metadata only downloads when the file is absent
    result = _monai_bundle("verify_metadata", "--meta_file", str(BUNDLE / "configs" / "metadata.json"),
                           "--filepath", str(schema), "--hash_val", SCHEMA_MD5, "--hash_type", "md5")  # fmt: skip
    _ok(result)
    assert "metadata is verified with no error" in result.stdout + result.stderr


def test_verify_net_in_out_with_the_paper_network():
    result = _monai_bundle("verify_net_in_out", "network_def", "--meta_file", str(BUNDLE / "configs" / "metadata.json"),
                           "--config_file", str(BUNDLE / "configs" / "inference.json"), "--device", "cpu")  # fmt: skip
    _ok(result)
    assert "data shape of network is verified with no error" in result.stdout + result.stderr


def test_ckpt_export_gives_a_torchscript_model_equal_to_the_eager_one(tmp_path):
    torch.manual_seed(0)
    net = DualPathResNet3D()
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.1)
    torch.save(net.state_dict(), tmp_path / "model.pt")
    result = _monai_bundle("ckpt_export", "network_def", "--filepath", str(tmp_path / "model.ts"),
                           "--ckpt_file", str(tmp_path / "model.pt"),
                           "--meta_file", str(BUNDLE / "configs" / "metadata.json"),
                           "--config_file", str(BUNDLE / "configs" / "inference.json"))  # fmt: skip
    _ok(result)
    scripted = torch.jit.load(str(tmp_path / "model.ts"))
    assert not scripted.training
    x = torch.randn(1, 1, 130, 127, 126)  # output (8, 5, 4)
    with torch.no_grad():
        assert torch.allclose(scripted(x), net.eval()(x), atol=1e-5)


def _python_without_autolr_monai(root: Path) -> Path:
    """A virtualenv that sees this one's site-packages as a plain path: monai, torch, itk ... import, but the
    editable install of autolr_monai (a .pth hook, not processed for plain paths) does not."""
    venv.create(root, with_pip=False)
    python = root / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    ours = next(p for p in sys.path if p.endswith("site-packages") and Path(p, "monai").is_dir())
    Path(site, "shared.pth").write_text(ours + "\n")
    return python


def test_packed_zip_runs_inference_where_autolr_monai_is_not_installed(phantom_scan, tmp_path):
    torch.manual_seed(3)
    net = DualPathResNet3D(**TINY_NETWORK)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.3)
    torch.save(net.state_dict(), tmp_path / "tiny.pt")
    overlay = tmp_path / "tiny.json"
    overlay.write_text(json.dumps({"network_def": {"_target_": "autolr_monai.networks.DualPathResNet3D",
                                                   "in_channels": 1, "out_channels": "@num_classes", **TINY_NETWORK},
                                   "spacing": TINY["spacing"], "inference_tile": TINY["inference_tile"],
                                   "autolr#period": 1}))  # fmt: skip
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "pack_bundle.py"), "--output", str(tmp_path / "b.zip"),
                           "--checkpoint", str(tmp_path / "tiny.pt"), "--overlays", f"['{overlay}']"],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    _ok(done)
    with zipfile.ZipFile(tmp_path / "b.zip") as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "unzipped")
    bundle = tmp_path / "unzipped" / "autolr_dualpath_ct"
    for name in ("configs/inference.json", "models/model.pt", "models/model.ts", "scripts/autolr_monai/__init__.py",
                 "LICENSE", "large_files.yml", "docs/README.md"):  # fmt: skip
        assert f"autolr_dualpath_ct/{name}" in names, name
    assert not any("__pycache__" in n for n in names)
    large = ConfigParser.load_config_file(str(bundle / "large_files.yml"))["large_files"]
    assert large[0]["path"] == "models/model.pt"
    assert large[0]["hash_val"] == hashlib.md5((bundle / "models" / "model.pt").read_bytes()).hexdigest()

    python = _python_without_autolr_monai(tmp_path / "env")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    probe = subprocess.run([str(python), "-c", "import autolr_monai"], cwd=tmp_path, env=env, capture_output=True)
    assert probe.returncode != 0  # the package is not importable there
    for run_id in (["inference"], []):  # `run inference`, and the zoo's plain `run`
        out = tmp_path / f"out_{'_'.join(run_id) or 'run'}"
        result = subprocess.run([str(python), "-m", "monai.bundle", "run", *run_id, "--config_file",
                                 str(bundle / "configs" / "inference.json"), "--input", str(phantom_scan),
                                 "--output_dir", str(out), "--num_workers", "0"],
                                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
        _ok(result)
        source, seg = nib.load(phantom_scan), nib.load(out / "phantom_000_seg.nii.gz")
        assert seg.shape == source.shape and np.array_equal(seg.affine, source.affine)


def test_pack_refuses_weights_that_do_not_fit_the_packed_network(tmp_path):
    torch.save(DualPathResNet3D(**TINY_NETWORK).state_dict(), tmp_path / "tiny.pt")
    command = [sys.executable, str(REPO / "scripts" / "pack_bundle.py"), "--output", str(tmp_path / "b.zip"),
               "--checkpoint", str(tmp_path / "tiny.pt")]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0 and "does not fit the configured network_def" in done.stderr
    assert not (tmp_path / "b.zip").exists()
