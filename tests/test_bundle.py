"""The MONAI bundle end to end: `python -m monai.bundle run training` on tiny phantoms, and a short training run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigWorkflow

from tests.conftest import REPO, TINY_NETWORK

CONFIGS = REPO / "bundle" / "configs"
TINY = {
    "spacing": [6.0, 6.0, 8.0],
    "patch_size": 8,
    "patches_per_batch": 16,
    "patches_per_image": 4,
    "batches_per_epoch": 6,
    "max_epochs": 6,
    "inference_tile": 32,
    "lr_schedule": {"eta0": 0.05, "factor": 0.1, "gamma": 4, "warmup_epochs": 1},
    "network_def": {"_target_": "autolr_monai.networks.DualPathResNet3D", "out_channels": "@num_classes", **TINY_NETWORK},
}


def test_bundle_cli_runs_training_from_another_directory(tiny_datalist, tmp_path):
    run_dir = tmp_path / "run"
    overrides = {**TINY, "max_epochs": 1, "batches_per_epoch": 2, "num_workers": 2, "datalist": tiny_datalist,
                 "isample#update_every": 1, "autolr#period": 1,
                 "run_dir": str(run_dir)}  # fmt: skip
    args = [f"--{k}={json.dumps(v)}" if not isinstance(v, str) else f"--{k}={v}" for k, v in overrides.items()]
    command = [sys.executable, "-m", "monai.bundle", "run", "training",
               "--config_file", f"['{CONFIGS / 'train.json'}','{CONFIGS / 'demo.json'}']", *args]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (run_dir / "model.pt").is_file()  # best validation checkpoint of the population
    assert (run_dir / "checkpoints" / "checkpoint_final.pt").is_file()
    assert (run_dir / "autolr_history.csv").is_file() and (run_dir / "autolr.png").is_file()
    assert any((run_dir / "tensorboard").iterdir())
    final = torch.load(run_dir / "checkpoints" / "checkpoint_final.pt", weights_only=True)
    assert len(final["members"]) == 3  # AutoLR with the paper's 3 runs is the default
    assert {"model", "optimizer", "error_maps"} == set(final["members"][0]["swapped"])
    # isample is on by default: after one epoch each run's map of the training case was refreshed
    for run in range(3):
        maps = sorted((run_dir / "members" / f"run_{run}" / "error_maps").glob("case_*.npy"))
        assert len(maps) == 1 and np.load(maps[0]).mean() < 1.0
    assert "isample: refreshed error maps" in result.stdout
    assert "AutoLR: new best validation score" in result.stdout


def test_single_run_with_the_step_schedule_lowers_the_loss(tiny_datalist, tmp_path):
    """'Sched A' (the sched_a.json overlay: one run, step schedule) stays runnable next to AutoLR."""
    workflow = ConfigWorkflow(
        config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "demo.json"), str(CONFIGS / "sched_a.json")],
        workflow_type="train",
        **{**TINY, "num_workers": 0, "datalist": tiny_datalist, "run_dir": str(tmp_path)},
    )
    workflow.initialize()
    trainer = workflow.parser.get_parsed_content("train#trainer")
    history: list[dict] = []
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: history.append(dict(e.state.metrics)))
    workflow.run()
    losses = [h["train_loss"] for h in history]
    assert len(losses) == TINY["max_epochs"]
    assert min(losses[-2:]) < 0.8 * losses[0], losses
    # warm-up over the first epoch, then the step at epoch gamma = 4 (logged at the end of each epoch)
    assert [h["lr"] for h in history] == pytest.approx([0.05, 0.05, 0.05, 0.05, 0.005, 0.005])
    evaluator = workflow.parser.get_parsed_content("validate#evaluator")
    assert 0.0 <= evaluator.state.best_metric <= 1.0 and evaluator.state.best_metric_epoch >= 1
    final = torch.load(tmp_path / "checkpoints" / "checkpoint_final.pt", weights_only=True)
    assert {"model", "optimizer", "lr_scheduler", "trainer", "error_maps"} <= set(final)
    assert (tmp_path / "model.pt").is_file() and not (tmp_path / "members").exists()
    assert not (tmp_path / "training.lock").exists()  # released at the end


def test_isample_off_keeps_class_balanced_sampling(tiny_datalist, tmp_path):
    workflow = ConfigWorkflow(
        config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "demo.json"), str(CONFIGS / "sched_b.json")],
        workflow_type="train",
        **{**TINY, "max_epochs": 1, "batches_per_epoch": 2, "num_workers": 0, "datalist": tiny_datalist,
           "run_dir": str(tmp_path), "isample#enabled": "false"},  # as the command line delivers it  # fmt: skip
    )
    workflow.initialize()
    workflow.run()
    store = workflow.parser.get_parsed_content("error_maps")
    assert store.version(0) == 0 and (np.asarray(store.map(0)) == 1).all()
    handlers = workflow.parser.get_parsed_content("train#handlers")
    assert not any(type(h).__name__ == "ErrorMapRefresher" for h in handlers)


def _workflow(tmp_path, tiny_datalist, *overlays: str, **overrides) -> ConfigWorkflow:
    workflow = ConfigWorkflow(
        config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "demo.json"), *[str(CONFIGS / o) for o in overlays]],
        workflow_type="train",
        **{**TINY, "max_epochs": 1, "batches_per_epoch": 2, "num_workers": 0, "datalist": tiny_datalist,
           "isample#update_every": 1, "run_dir": str(tmp_path / "run"), **overrides},  # fmt: skip
    )
    workflow.initialize()
    return workflow


def _cause(error: BaseException) -> BaseException:
    while error.__cause__ is not None:
        error = error.__cause__
    return error


@pytest.mark.parametrize("overlays", [(), ("sched_a.json",)], ids=["autolr", "single-run"])
def test_a_training_refuses_a_run_folder_in_use_before_writing_there(overlays, tiny_datalist, tmp_path):
    from autolr_monai.engines import RunFolderError
    from tests.engines.test_run_folder import held_by_another_process

    with held_by_another_process(tmp_path / "run") as pid:
        with pytest.raises(RuntimeError) as error:
            _workflow(tmp_path, tiny_datalist, *overlays).run()
    assert isinstance(_cause(error.value), RunFolderError) and f"pid {pid}" in str(_cause(error.value))
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == []  # no error maps, logs or checkpoints of its own


def test_amp_false_from_the_command_line_turns_amp_off(tiny_datalist, tmp_path):
    """``--amp false`` arrives as the string 'false', which MONAI's engines would take as true."""
    workflow = _workflow(tmp_path, tiny_datalist, "sched_a.json", amp="false")
    refresher = next(h for h in workflow.parser.get_parsed_content("train#handlers") if type(h).__name__ == "ErrorMapRefresher")
    assert workflow.parser.get_parsed_content("train#trainer").amp is False and refresher.amp is False
    assert workflow.parser.get_parsed_content("validate#evaluator").amp is False
