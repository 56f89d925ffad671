"""The Table 1 study end to end, in miniature: tiny network, 2 arms, 1 seed, a few epochs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from autolr_monai.study import PROFILES, Study, select_arms
from tests.conftest import REPO
from tests.test_bundle import TINY

SCRIPT = REPO / "scripts" / "reproduce.py"
# the tiny network and volumes; the schedules' shared settings by id (a whole "lr_schedule" would erase Sched A/B)
MINI = {**{k: v for k, v in TINY.items() if k != "lr_schedule"}, "max_epochs": 4, "batches_per_epoch": 3,
        "autolr#period": 2, "isample#update_every": 1, "lr_schedule#gamma": 2, "lr_schedule#warmup_epochs": 1,
        "num_workers": 0}  # fmt: skip


def reproduce(*args, cwd):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=900)  # fmt: skip


def test_miniature_study_writes_table_and_figures_and_resumes(tiny_datalist, tmp_path):
    out = tmp_path / "my study, v1"  # a space and a comma: every override reaches the training as given
    args = ["run", "--out", str(out), "--arms", "['sched_a_is','autolr']", "--seeds", "[0]",
            "--datalist", tiny_datalist, "--overrides", repr(MINI)]  # fmt: skip
    first = reproduce(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "2 runs, 0 already done, 2 to run" in first.stdout
    result = json.loads((out / "table1.json").read_text())
    assert [a["label"] for a in result["arms"]] == ["AutoLR", "Sched A + is"]  # Table 1 order
    assert result["budget_updates"] == 12
    for arm in result["arms"]:
        for share in ("0.25", "1"):
            assert 0.0 <= arm["dice"][share]["mean"] <= 1.0
    auto = next(a for a in result["arms"] if a["name"] == "autolr")
    assert auto["runs"] == 3 and len(auto["schedule_shape"][0]["eta_star"]) == 2  # one eta* per period
    table = (out / "table1.md").read_text()
    assert table.splitlines()[0] == "| (updates per run) | AutoLR | Sched A + is |"
    assert "| Validation Dice (3, 25%) |" in table and "| Validation Dice (12, 100%) |" in table
    for figure in ("figure3_dice.png", "figure3_lr.png", "figure2_autolr_seed0.png"):
        assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", figure
    # each arm ran the bundle's own overlays: sched_a.json for Sched A, isample switched off for AutoLR
    sched = json.loads((out / "sched_a_is" / "seed_0" / "study_run.json").read_text())
    assert "sched_a.json" in sched["command"] and "isample#enabled" not in sched["command"]
    auto_run = json.loads((out / "autolr" / "seed_0" / "study_run.json").read_text())
    assert "sched_" not in auto_run["command"] and "--isample#enabled=False" in auto_run["command"]
    history = json.loads((out / "sched_a_is" / "seed_0" / "history.json").read_text())
    assert [r["lr"] for r in history["epochs"]] == pytest.approx([0.05, 0.05, 0.005, 0.005])  # gamma 2: one step
    assert sched["curve"]["dice"] == [r["val_dice"] for r in history["epochs"]]

    # rerun: both arms are done and kept as they were
    marker = out / "autolr" / "seed_0" / "study_run.json"
    stamp = marker.stat().st_mtime_ns
    again = reproduce(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "2 runs, 2 already done, 0 to run" in again.stdout and marker.stat().st_mtime_ns == stamp

    # an interrupted run (no marker, a stale checkpoint) is run again from scratch; the finished one is kept
    (out / "sched_a_is" / "seed_0" / "study_run.json").unlink()
    (out / "sched_a_is" / "seed_0" / "checkpoints" / "stale.pt").write_bytes(b"half a checkpoint")
    resumed = reproduce(*args, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "2 runs, 1 already done, 1 to run" in resumed.stdout and marker.stat().st_mtime_ns == stamp
    assert not (out / "sched_a_is" / "seed_0" / "checkpoints" / "stale.pt").exists()

    # other settings in the same folder are refused rather than mixed into one table
    changed = reproduce(*args[:-1], repr({**MINI, "max_epochs": 5}), cwd=tmp_path)
    assert changed.returncode != 0 and "made with other settings" in changed.stderr
    assert "Traceback" not in changed.stderr  # a message, not a stack


def test_overrides_cannot_erase_what_tells_the_arms_apart(tmp_path):
    for key in ("lr_schedule", "lr_schedule#eta0", "isample#enabled", "isample", "seed", "run_dir"):
        with pytest.raises(ValueError, match="would change what tells the arms apart"):
            Study(tmp_path, overrides={key: 1})
    Study(tmp_path, overrides={"lr_schedule#gamma": 4, "isample#n_cases": 1})  # resizing is fine


def test_one_study_per_folder_at_a_time(tmp_path):
    import fcntl

    from autolr_monai.study import run_study
    from autolr_monai.study.runner import StudyError

    study = Study(tmp_path, arms=select_arms(["sched_a"]), seeds=[0])
    with open(tmp_path / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(StudyError, match="another study is running in this folder"):
            run_study(study)


def test_profiles_are_overlays_of_existing_settings():
    """The study's profiles only resize the bundle's pipeline: every key they set already exists in the configs
    below them, so no component is redefined (copied) for the study."""
    from monai.bundle import ConfigParser

    configs = REPO / "bundle" / "configs"
    for name, profile in PROFILES.items():
        below = ConfigParser()
        below.read_config([str(configs / "train.json")])
        for overlay in profile["overlays"]:
            content = json.loads((configs / overlay).read_text())
            for key, value in content.items():
                if overlay.startswith("study_"):
                    assert key.lstrip("+") in below, f"{overlay} sets {key}, which the configs below do not have"
                    assert not isinstance(value, dict) or "_target_" not in value, f"{overlay} redefines {key}"
            below.update(content)
        arms = Study(Path("unused"), name).config_files(select_arms(["sched_b_is"])[0])
        assert [Path(p).name for p in arms] == ["train.json", *profile["overlays"], "sched_b.json"]


def test_study_settings_are_checked():
    with pytest.raises(ValueError, match="profile: unknown 'laptop'"):
        Study(Path("x"), "laptop")
    with pytest.raises(ValueError, match="seeds: .* repeats"):
        Study(Path("x"), seeds=[1, 1])
    with pytest.raises(ValueError, match="jobs: expected a positive integer"):
        Study(Path("x"), jobs=0)
    with pytest.raises(FileNotFoundError, match="datalist: .*missing.json is not a file"):
        Study(Path("x"), datalist="missing.json")


@pytest.mark.parametrize(
    "profile,expected",
    [("cpu", {"max_epochs": 30, "batches_per_epoch": 20, "patches_per_batch": 10, "autolr#period": 3,
              "lr_schedule#gamma": 12, "spacing": [3.0, 3.0, 4.5]}),
     ("gpu", {"max_epochs": 200, "batches_per_epoch": 100, "patches_per_batch": 40, "autolr#period": 10,
              "lr_schedule#gamma": 80, "spacing": [1.0, 1.0, 1.5]})],
)  # fmt: skip
def test_profiles_keep_the_papers_proportions(profile, expected):
    """Both profiles step the rate at 40% and 80% of the budget (the paper: gamma 400 of 1000 epochs) and keep
    the arms' learning rates; the GPU profile is the paper's recipe and network with a fifth of its updates."""
    from monai.bundle import ConfigParser

    study = Study(Path("unused"), profile)
    for arm in select_arms():
        parser = ConfigParser()
        parser.read_config(study.config_files(arm))
        parser.update(arm.overrides())
        for key, value in expected.items():
            assert parser.get_parsed_content(key) == value, (profile, arm.name, key)
        assert parser.get_parsed_content("lr_schedule#gamma") / parser.get_parsed_content("max_epochs") == 0.4
        assert parser.get_parsed_content("isample#enabled") == arm.isample
        if not arm.autolr:
            assert parser.get_parsed_content("lr_schedule#eta0") == {"Sched A": 0.05, "Sched B": 0.025}[arm.schedule]
            assert parser.get("training").replace("::", "#") == "@train#run"
        else:
            assert parser.get_parsed_content("autolr#initial_lrs") == [0.05, 0.01, 0.005]
    if profile == "gpu":
        parser = ConfigParser()
        parser.read_config(study.config_files(select_arms(["autolr"])[0]))
        assert "high_blocks" not in parser.get("network_def")  # the paper-size network (the class default)
