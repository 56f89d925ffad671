"""The one-line choices the paper leaves open, each way (bundle/docs/README.md, "Where this implementation chooses")."""

from __future__ import annotations


import pytest
import torch
from ignite.engine import Events

from tests.autolr.conftest import run_autolr

THREE = {"max_epochs": 3, "autolr#period": 3, "checkpoint_interval": 3}  # one period of 3 epochs


def _weights(network: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in network.state_dict().items()}


def _equal(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def _record_states(log: dict):
    """Hooks that keep each run's weights after every validated epoch and at the start of epoch 4 (after the swap)."""

    def hook(autolr):
        for m in autolr.members:
            m.evaluator.add_event_handler(Events.EPOCH_COMPLETED, lambda e, m=m: log.setdefault("after", {}).__setitem__(
                (m.trainer.state.epoch, m.index), (float(e.state.metrics[e.state.key_metric_name]), _weights(m.trainer.network))))  # fmt: skip
            m.trainer.add_event_handler(Events.STARTED, lambda e, m=m: log.setdefault("start", {}).__setitem__(
                m.index, _weights(m.trainer.network)))  # fmt: skip
            m.trainer.add_event_handler(Events.EPOCH_STARTED(once=4), lambda e, m=m: log.setdefault("swapped", {}).__setitem__(
                m.index, _weights(m.trainer.network)))  # fmt: skip

    return hook


@pytest.mark.parametrize("swap_from", ["end", "best"])
def test_a_swap_copies_the_winners_end_of_period_or_best_epoch_state(swap_from, autolr_datalist, tmp_path):
    log: dict = {}
    overrides = {**THREE, "max_epochs": 4, "autolr#swap_from": swap_from, "autolr#initial_lrs": [0.3, 0.01, 0.005]}
    autolr = run_autolr(autolr_datalist, tmp_path, _record_states(log), **overrides).parser.get_parsed_content("autolr#engine")
    winner = autolr.periods[0]["winner"]
    scores = {epoch: log["after"][(epoch, winner)][0] for epoch in (1, 2, 3)}
    best_epoch = max(scores, key=lambda e: (scores[e], -e))
    assert best_epoch != 3, f"the setting must make the winner's best epoch differ from the last one: {scores}"
    expected = log["after"][(best_epoch if swap_from == "best" else 3, winner)][1]
    assert all(_equal(log["swapped"][run], expected) for run in range(3))
    assert not _equal(log["after"][(best_epoch, winner)][1], log["after"][(3, winner)][1])


@pytest.mark.parametrize("same_start", [True, False])
def test_runs_start_from_the_same_or_their_own_initial_weights(same_start, autolr_datalist, tmp_path):
    log: dict = {}
    run_autolr(autolr_datalist, tmp_path, _record_states(log), **{"max_epochs": 1, "autolr#period": 1, "isample#update_every": 1,
                                                                   "autolr#same_start": same_start})  # fmt: skip
    starts = [log["start"][run] for run in range(3)]
    assert all(_equal(starts[0], other) for other in starts[1:]) == same_start
