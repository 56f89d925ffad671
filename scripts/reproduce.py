"""Reproduce the paper's Table 1 and figures 2-3: Sched A, Sched B and AutoLR, each with and without isample,
over seeds, on the synthetic phantoms or your own datalist.

    python scripts/reproduce.py run                          # CPU profile, 6 arms x 3 seeds, about 1 h on 2 cores
    python scripts/reproduce.py run --profile gpu            # the paper's sizes, 20k updates per run
    python scripts/reproduce.py run --datalist my_data.json  # your own NIfTI/DICOM datalist
    python scripts/reproduce.py run --arms "['sched_b','autolr']" --seeds "[0,1]" --overrides "{'max_epochs': 10}"
    python scripts/reproduce.py run --dry_run                # print the training commands only
    python scripts/reproduce.py report --threshold 0.6       # redo the table and figures from finished runs

Outputs in ``--out`` (default ``bundle/runs/study-<profile>``): ``table1.md``/``table1.json``, ``figure3_dice.png``,
``figure3_lr.png``, ``figure2_autolr_is_seed0.png``, ``study.json`` and one folder per arm and seed. Rerunning the
same command resumes: finished runs are kept, unfinished ones restarted.
"""

from __future__ import annotations

import sys

import fire

from autolr_monai.study import report as write_report
from autolr_monai.study import run_study
from autolr_monai.study.runner import StudyError, study_from_cli


def run(out: str | None = None, profile: str = "cpu", arms: list[str] | None = None, seeds: list[int] = (0, 1, 2),
        datalist: str | None = None, overrides: dict | None = None, jobs: int | None = None,
        threshold: float | None = None, dry_run: bool = False) -> None:  # fmt: skip
    """Run the arms not yet finished, then write the table and figures."""
    study = study_from_cli(out, profile, arms, seeds, datalist, overrides, jobs, threshold)
    result = run_study(study, dry_run=dry_run)
    if result is not None:
        print((study.out / "table1.md").read_text())
        print(f"written to {study.out}")


def report(out: str | None = None, profile: str = "cpu", arms: list[str] | None = None, seeds: list[int] = (0, 1, 2),
           datalist: str | None = None, overrides: dict | None = None, threshold: float | None = None) -> None:  # fmt: skip
    """The table and figures of a finished study (same settings as its ``run``), e.g. with another threshold."""
    study = study_from_cli(out, profile, arms, seeds, datalist, overrides, None, threshold)
    write_report(study)
    print((study.out / "table1.md").read_text())


if __name__ == "__main__":
    try:
        fire.Fire({"run": run, "report": report})
    except (StudyError, ValueError, FileNotFoundError) as error:  # the user's settings: the message says what
        sys.exit(f"reproduce.py: {error}")
