"""A tiny AutoLR population built from the bundle's own configs, run in this process."""

from __future__ import annotations

from pathlib import Path

import pytest
from monai.bundle import ConfigWorkflow

from autolr_monai.data import write_phantom_dataset
from tests.test_bundle import CONFIGS, TINY

TINY_AUTOLR = {**TINY, "max_epochs": 4, "num_workers": 0, "autolr#period": 2, "autolr#warmup_epochs": 1,
               "checkpoint_interval": 1, "autolr#checkpoint#n_saved": 4}  # fmt: skip


def run_autolr(datalist: str, run_dir: Path, before_run=None, **overrides) -> ConfigWorkflow:
    """Train the population to the end; returns the workflow (``parser`` holds the AutoLR engine).
    ``before_run(autolr)`` is called with the engine before training starts."""
    workflow = ConfigWorkflow(
        config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "demo.json")],
        workflow_type="train",
        **{**TINY_AUTOLR, "datalist": datalist, "run_dir": str(run_dir), **overrides},
    )
    workflow.initialize()
    if before_run is not None:
        before_run(workflow.parser.get_parsed_content("autolr#engine"))
    workflow.run()
    return workflow


@pytest.fixture(scope="package")
def autolr_datalist(tmp_path_factory) -> str:
    return write_phantom_dataset(str(tmp_path_factory.mktemp("phantoms")), n_cases=3, seed=5, spacing=(6.0, 6.0, 8.0))


@pytest.fixture(scope="package")
def trained(autolr_datalist, tmp_path_factory):
    """(workflow, AutoLR engine, run folder) of one uninterrupted 4-epoch, 2-period run of 3 members."""
    run_dir = tmp_path_factory.mktemp("autolr_run")
    workflow = run_autolr(autolr_datalist, run_dir)
    return workflow, workflow.parser.get_parsed_content("autolr#engine"), run_dir
