"""SIGKILL at three points (mid-epoch, mid-period, during a checkpoint write), each followed by ``--resume true``:
the population ends on the trajectory of an uninterrupted run, and no checkpoint is ever left corrupt. Ctrl-C and a
full disk end with their own message as the last line."""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.autolr.conftest import TINY_AUTOLR
from tests.test_bundle import CONFIGS
from tests.conftest import REPO

EPOCHS, BATCHES = 6, TINY_AUTOLR["batches_per_epoch"]


def _train(run_dir: Path, datalist: str, extra: dict) -> subprocess.CompletedProcess:
    overrides = {**TINY_AUTOLR, "max_epochs": EPOCHS, "datalist": datalist, "run_dir": str(run_dir), "resume": True,
                 **extra}  # fmt: skip
    args = [f"--{k}={v!r}" for k, v in overrides.items()]
    command = [sys.executable, "-m", "monai.bundle", "run", "training",
               "--config_file", json.dumps([str(CONFIGS / "train.json"), str(CONFIGS / "demo.json")]), *args]  # fmt: skip
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _checkpoints_are_whole(folder: Path) -> list[str]:
    names = sorted(p.name for p in folder.glob("*.pt"))
    for name in names:  # every file named as a checkpoint loads completely
        state = torch.load(folder / name, map_location="cpu", weights_only=True)
        assert len(state["members"]) == 3 and state["engine"]["iteration"] >= 1, name
    return names


def test_sigkill_anywhere_then_resume_gives_the_uninterrupted_trajectory(autolr_datalist, tmp_path):
    reference = _train(tmp_path / "reference", autolr_datalist, {})
    assert reference.returncode == 0, reference.stderr[-3000:]
    expected = json.loads((tmp_path / "reference" / "autolr_history.json").read_text())

    run_dir, markers = tmp_path / "killed", tmp_path / "markers"
    markers.mkdir()
    killers = {
        # run 1 dies mid-epoch 2 (period 1), after 2 of its iterations of that epoch
        "autolr#member_overrides": {
            "train#schedule_handlers": [], "validate#checkpoint_handlers": [],
            "train#history_handlers": [{"_target_": "tests.autolr.killer.KillMidEpoch", "iteration": BATCHES + 2,
                                        "member": "@member", "run": 1, "marker": str(markers / "mid_epoch")}]},
        # the write of the epoch-3 checkpoint dies halfway
        "autolr#saver": {"_target_": "tests.autolr.killer.KillingDiskSaver", "dirname": "@autolr#checkpoint_dir",
                         "require_empty": False, "atomic": True, "filename": "autolr_iteration=3.pt",
                         "marker": str(markers / "mid_write")},
        # the process dies at the end of epoch 5, mid-period 3, before that epoch's checkpoint
        "autolr#handlers#1": {"_target_": "tests.autolr.killer.KillAfterEpoch", "epoch": 5,
                              "marker": str(markers / "mid_period")},  # in place of the progress bar
    }  # fmt: skip
    seen = []
    for attempt in range(4):
        result = _train(run_dir, autolr_datalist, killers)
        seen.append(result.returncode)
        names = _checkpoints_are_whole(run_dir / "checkpoints") if (run_dir / "checkpoints").is_dir() else []
        if result.returncode == 0:
            break
        assert result.returncode == -9, result.stderr[-3000:]  # SIGKILL, nothing else
        if attempt == 1:  # killed during the write: only a temporary file, never a half "autolr_iteration=3.pt"
            assert "autolr_iteration=3.pt" not in names and any(p.name.startswith("tmp") for p in (run_dir / "checkpoints").iterdir())
    assert seen == [-9, -9, -9, 0]
    assert sorted(p.name for p in markers.iterdir()) == ["mid_epoch", "mid_period", "mid_write"]
    resumed = json.loads((run_dir / "autolr_history.json").read_text())
    assert [p["winner"] for p in resumed["periods"]] == [p["winner"] for p in expected["periods"]]
    assert [p["next"] for p in resumed["periods"]] == [p["next"] for p in expected["periods"]]
    assert [(r["epoch"], r["run"], r["lr"]) for r in resumed["epochs"]] == [(r["epoch"], r["run"], r["lr"]) for r in expected["epochs"]]
    assert [r["val_dice"] for r in resumed["epochs"]] == [r["val_dice"] for r in expected["epochs"]]  # deterministic on CPU
    assert "continuing from" in result.stdout + result.stderr


SHORT = {"max_epochs": 2, "autolr#period": 1}


def _on_run_1(handler: str, iteration: int, marker: Path) -> dict:
    """Member overrides that put ``tests.autolr.killer.<handler>`` on run 1's trainer at ``iteration``."""
    return {"train#schedule_handlers": [], "validate#checkpoint_handlers": [],
            "train#history_handlers": [{"_target_": f"tests.autolr.killer.{handler}", "iteration": iteration,
                                        "member": "@member", "run": 1, "marker": str(marker)}]}  # fmt: skip


def _visible_lines(stderr: str) -> list[str]:
    """What a terminal shows of ``stderr``, line by line: progress-bar redraws and cursor moves taken out."""
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", stderr)
    return [line.strip() for line in re.split(r"[\r\n]", text) if line.strip()]


def test_a_full_disk_mid_epoch_is_the_last_word_not_an_ignite_error(autolr_datalist, tmp_path):
    full = tmp_path / "disk_full"  # the marker file, named in the error as the file a write failed on
    result = _train(tmp_path / "run", autolr_datalist, {**SHORT, "autolr#member_overrides": _on_run_1("FailMidEpoch", BATCHES + 2, full)})
    assert result.returncode == 1, result.stderr[-3000:]
    assert _visible_lines(result.stderr)[-1] == f"OSError: [Errno 28] No space left on device: '{full}'", result.stderr[-3000:]
    assert "Engine reference not resolved" not in result.stderr and "Exception ignored" not in result.stderr
    assert not (tmp_path / "run" / "training.lock").exists()


@pytest.mark.xfail(strict=False, reason="open defect: in a full clean-clone run (after tests/autolr/test_choices.py "
                   "and test_distributed.py) the interrupted training completes instead; passes alone; see issue 14 note")
def test_ctrl_c_says_how_to_resume_and_the_resumed_run_completes(autolr_datalist, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    extra = {**SHORT, "autolr#member_overrides": _on_run_1("InterruptMidEpoch", BATCHES + 2, markers / "ctrl_c")}
    interrupted = _train(tmp_path / "run", autolr_datalist, extra)
    assert interrupted.returncode == -signal.SIGINT, interrupted.stderr[-3000:]  # Python's exit status of Ctrl-C
    assert _visible_lines(interrupted.stderr)[-1] == "interrupted; resume with --resume true", interrupted.stderr[-3000:]
    assert "Engine reference not resolved" not in interrupted.stderr
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("*.pt")) == ["autolr_iteration=1.pt"]
    resumed = _train(tmp_path / "run", autolr_datalist, extra)  # --resume true, as every _train
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "continuing from" in resumed.stdout and "autolr_iteration=1.pt" in resumed.stdout
    assert [p["epoch"] for p in json.loads((tmp_path / "run" / "autolr_history.json").read_text())["periods"]] == [1, 2]
