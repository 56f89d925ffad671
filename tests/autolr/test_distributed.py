"""The population across processes: `torchrun` with gloo, one or two runs per process, gives the in-process
trajectory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.autolr.conftest import TINY_AUTOLR
from tests.test_bundle import CONFIGS

TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")


def _cli(overrides: dict) -> list[str]:
    return [f"--{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in overrides.items()]


def _train(prefix: list[str], files: list[str], run_dir: Path, datalist: str) -> dict:
    overrides = {**TINY_AUTOLR, "datalist": datalist, "run_dir": str(run_dir)}
    config = "[" + ",".join(f"'{CONFIGS / f}'" for f in files) + "]"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # torchrun's default; the same for both runs
    command = [*prefix, "-m", "monai.bundle", "run", "training", "--config_file", config, *_cli(overrides)]
    result = subprocess.run(command, cwd=run_dir.parent, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads((run_dir / "autolr_history.json").read_text())


@pytest.fixture(scope="module")
def in_process(autolr_datalist, tmp_path_factory) -> dict:
    return _train([sys.executable], ["train.json", "demo.json"], tmp_path_factory.mktemp("single") / "run", autolr_datalist)


@pytest.mark.skipif(TORCHRUN is None, reason="torchrun (installed with torch) not found")
@pytest.mark.parametrize("processes", [3, 2])  # 2: process 0 holds runs 0 and 2, process 1 holds run 1
def test_gloo_processes_give_the_in_process_winners_rates_and_scores(processes, in_process, autolr_datalist, tmp_path):
    files = ["train.json", "demo.json", "multi_gpu_train.json"]
    distributed = _train([TORCHRUN, f"--nproc_per_node={processes}", f"--master_port={29530 + processes}"], files,
                         tmp_path / "gloo", autolr_datalist)  # fmt: skip
    assert [p["winner"] for p in distributed["periods"]] == [p["winner"] for p in in_process["periods"]]
    assert [p["next"] for p in distributed["periods"]] == [p["next"] for p in in_process["periods"]]
    assert [r["lr"] for r in distributed["epochs"]] == [r["lr"] for r in in_process["epochs"]]
    # each process scored its own runs on the whole validation set (no sharding, no Dice averaged across ranks)
    assert [r["val_dice"] for r in distributed["epochs"]] == pytest.approx([r["val_dice"] for r in in_process["epochs"]])
    assert len({r["val_dice"] for r in distributed["epochs"] if r["epoch"] == 1}) == 3
    for i in range(3):  # every process wrote its own runs' folders; process 0 wrote the population's files
        assert (tmp_path / "gloo" / "members" / f"run_{i}" / "error_maps").is_dir()
    assert (tmp_path / "gloo" / "model.pt").is_file() and (tmp_path / "gloo" / "autolr.png").is_file()
