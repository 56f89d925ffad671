"""The reproducibility contract: on one machine and software, a population's history does not depend on how its
DataLoader workers are scheduled, how many there are or how far they prefetch, and a run resumed with worker
processes continues bit for bit."""

from __future__ import annotations

import os
import random
import time

import pytest
import torch

from autolr_monai.sampling import RandDualPathPatchd
from tests.autolr.conftest import run_autolr

WORKERS = {"num_workers": 2, "isample#update_every": 1, "isample#n_cases": 3}  # maps refreshed every epoch


def _record(autolr) -> tuple[list, list]:
    return autolr.history, [(p["winner"], p["star"], p["next"]) for p in autolr.periods]


@pytest.fixture(scope="module")
def with_workers(autolr_datalist, tmp_path_factory):
    """(engine, run folder) of an uninterrupted 4-epoch population with 2 worker processes per run."""
    run_dir = tmp_path_factory.mktemp("workers")
    return run_autolr(autolr_datalist, run_dir, **WORKERS).parser.get_parsed_content("autolr#engine"), run_dir


def test_random_delays_in_the_workers_change_nothing(with_workers, autolr_datalist, tmp_path, monkeypatch):
    cut, log = RandDualPathPatchd.__call__, tmp_path / "delays"
    log.mkdir()

    def slow(self, data):
        # a clock of its own per worker (never the transforms' generators): batches arrive out of order
        delay = random.Random(time.perf_counter_ns() ^ os.getpid())
        time.sleep(delay.uniform(0.0, 0.03))
        (log / str(os.getpid())).touch()
        return cut(self, data)

    monkeypatch.setattr(RandDualPathPatchd, "__call__", slow)
    delayed = run_autolr(autolr_datalist, tmp_path / "run", **WORKERS).parser.get_parsed_content("autolr#engine")
    assert str(os.getpid()) not in {p.name for p in log.iterdir()} and len(list(log.iterdir())) >= 2  # in workers
    reference, _ = with_workers
    assert len(delayed.history) == 12 and _record(delayed) == _record(reference)  # lr, loss, Dice, winners: to the bit


@pytest.mark.parametrize("loading", [{"num_workers": 0}, {"num_workers": 1, "train#dataloader#prefetch_factor": 4}],
                         ids=["no-workers", "1-worker-prefetch-4"])  # fmt: skip
def test_the_number_of_workers_and_prefetching_change_nothing(loading, with_workers, autolr_datalist, tmp_path):
    other = run_autolr(autolr_datalist, tmp_path, **{**WORKERS, **loading}).parser.get_parsed_content("autolr#engine")
    reference, _ = with_workers
    assert _record(other) == _record(reference)


@pytest.mark.parametrize("epoch", [2, 3])  # right after a swap, and mid-period
def test_resume_with_worker_processes_gives_the_uninterrupted_trajectory(epoch, with_workers, autolr_datalist, tmp_path):
    uninterrupted, run_dir = with_workers
    checkpoint = run_dir / "checkpoints" / f"autolr_iteration={epoch}.pt"
    workflow = run_autolr(autolr_datalist, tmp_path, **WORKERS, **{"autolr#resume_from": str(checkpoint)})
    resumed = workflow.parser.get_parsed_content("autolr#engine")
    assert _record(resumed) == _record(uninterrupted)
    for member, reference in zip(resumed.members, uninterrupted.members):
        weights, expected = member.trainer.network.state_dict(), reference.trainer.network.state_dict()
        assert all(torch.equal(weights[k], expected[k]) for k in weights)
