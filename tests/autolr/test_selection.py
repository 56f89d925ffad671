"""Algorithm 1's selection and spawning rule and the warm-up, on scripted validation scores (no training)."""

from __future__ import annotations

import math

import pytest

from autolr_monai.autolr import AutoLRSchedule, PopulationDivergedError, select_winner

PAPER = {"initial_lrs": [0.05, 0.01, 0.005], "factors": [2.0, 1.0, 0.5]}


def test_figure_2_example_winner_at_0_05_spawns_0_1_0_05_0_025():
    schedule = AutoLRSchedule(**PAPER, period=50, epoch_length=100, warmup_epochs=10)
    # the red run (eta = 0.05) reached the highest Dice of the first period
    scores = [[0.30, 0.62, 0.71], [0.35, 0.55, 0.60], [0.20, 0.40, 0.50]]
    winner = select_winner(scores, PAPER["factors"])
    assert winner == 0
    star = schedule.spawn(winner, iteration=50 * 100)
    assert star["lr"] == 0.05
    assert schedule.current["lr"] == pytest.approx([0.1, 0.05, 0.025])
    assert schedule.winners == [0]


def test_winner_is_the_best_maximum_not_the_last_or_mean_score():
    scores = [[0.5, 0.6, 0.6], [0.4, 0.9, 0.3], [0.7, 0.7, 0.7]]
    assert select_winner(scores, PAPER["factors"]) == 1


def test_ties_go_to_the_run_that_kept_the_rate_then_to_the_lower_index():
    assert select_winner([[0.8], [0.8], [0.8]], PAPER["factors"]) == 1
    assert select_winner([[0.8], [0.5], [0.8]], PAPER["factors"]) == 0  # |log 2| == |log 0.5|: lower index
    assert select_winner([[0.2], [0.5], [0.8]], PAPER["factors"]) == 2


def test_a_diverged_run_cannot_win_even_with_the_best_earlier_score():
    scores = [[0.9, math.nan], [0.5, 0.6], [0.4, 0.55]]
    assert select_winner(scores, PAPER["factors"], diverged=[True, False, False]) == 1
    # NaN scores of a run that did not diverge are ignored, not propagated
    assert select_winner([[math.nan, 0.7], [0.5, 0.6], [0.4, 0.5]], PAPER["factors"]) == 0


def test_all_runs_diverged_is_an_error_that_says_what_to_do():
    with pytest.raises(PopulationDivergedError, match="initial_lrs"):
        select_winner([[math.nan], [math.inf], [0.3]], PAPER["factors"], diverged=[True, True, True])


def test_a_single_run_always_wins_and_follows_its_factor():
    schedule = AutoLRSchedule([0.04], [0.5], period=2, epoch_length=1, warmup_epochs=0)
    rows = schedule.simulate_values(6, lambda epoch, run, lr: 0.1 * epoch)
    assert schedule.winners == [0, 0, 0]
    assert [lr for _, _, lr, _ in rows] == pytest.approx([0.04, 0.04, 0.02, 0.02, 0.01, 0.01])
    constant = AutoLRSchedule([0.04], [1.0], period=2, epoch_length=1, warmup_epochs=0)
    assert {lr for _, _, lr, _ in constant.simulate_values(6, lambda e, r, lr: 0.5)} == {0.04}


def test_warm_up_epoch_by_epoch_at_the_start_and_after_a_switch():
    epoch_length, warmup = 4, 10
    schedule = AutoLRSchedule(**PAPER, period=50, epoch_length=epoch_length, warmup_epochs=warmup)
    last = lambda epoch: (epoch + 1) * epoch_length - 1  # noqa: E731 (0-based epoch's last iteration)
    # start: from 0 to each run's initial rate over 10 epochs, then constant
    for epoch in range(12):
        expected = [eta * min(epoch + 1, warmup) / warmup for eta in PAPER["initial_lrs"]]
        assert [schedule.lr(run, last(epoch)) for run in range(3)] == pytest.approx(expected)
    assert schedule.lr(0, 0) == pytest.approx(0.05 / (warmup * epoch_length))  # the first step already moves
    # after the period: each run ramps from its own previous rate to eta* x lambda_i
    schedule.spawn(0, iteration=50 * epoch_length)
    previous, target = PAPER["initial_lrs"], [0.1, 0.05, 0.025]
    for k in range(12):
        expected = [p + (t - p) * min(k + 1, warmup) / warmup for p, t in zip(previous, target)]
        assert [schedule.lr(run, last(50 + k)) for run in range(3)] == pytest.approx(expected)
    # asked about an iteration before the switch, it answers the rate each run had reached
    assert [schedule.lr(run, 50 * epoch_length - 1) for run in range(3)] == pytest.approx(previous)


def test_warm_up_interrupted_by_a_switch_starts_from_the_rate_reached():
    schedule = AutoLRSchedule(**PAPER, period=2, epoch_length=1, warmup_epochs=4)
    schedule.spawn(1, iteration=2)  # after 2 of 4 warm-up epochs run 0 is at 0.025, not 0.05
    assert schedule.previous_lr == pytest.approx([0.025, 0.005, 0.0025])
    # eta* is the winner's set rate (0.01), not the point its warm-up had reached (0.005)
    assert schedule.current["lr"] == pytest.approx([0.02, 0.01, 0.005])


def test_simulate_values_reproduces_a_whole_trajectory_from_scripted_scores():
    schedule = AutoLRSchedule(**PAPER, period=2, epoch_length=10, warmup_epochs=0)
    # run 0 wins period 1, run 2 wins period 2, run 1 wins period 3
    script = [[0.5, 0.1, 0.1], [0.5, 0.1, 0.1], [0.1, 0.1, 0.6], [0.1, 0.1, 0.6], [0.1, 0.7, 0.1], [0.1, 0.7, 0.1]]
    rows = schedule.simulate_values(6, script)
    lrs = [[lr for epoch, run, lr, _ in rows if epoch == e] for e in range(6)]
    assert lrs[1] == pytest.approx([0.05, 0.01, 0.005])
    assert lrs[2] == pytest.approx([0.1, 0.05, 0.025])
    assert lrs[4] == pytest.approx([0.05, 0.025, 0.0125])
    assert schedule.winners == [0, 2, 1]
    assert schedule.current["lr"] == pytest.approx([0.05, 0.025, 0.0125])


def test_other_hyperparameters_get_their_own_factors():
    schedule = AutoLRSchedule(**PAPER, period=1, epoch_length=1, warmup_epochs=0,
                              hyperparameters={"momentum": {"initial": [0.9, 0.8, 0.7], "factors": [1.1, 1.0, 0.9]}})  # fmt: skip
    assert schedule.values(2, 0) == pytest.approx({"lr": 0.005, "momentum": 0.7})
    schedule.spawn(2, iteration=1)
    assert schedule.current["momentum"] == pytest.approx([0.77, 0.7, 0.63])
    assert schedule.current["lr"] == pytest.approx([0.01, 0.005, 0.0025])


def test_state_dict_round_trip_continues_identically():
    a = AutoLRSchedule(**PAPER, period=3, epoch_length=2, warmup_epochs=2)
    a.spawn(2, iteration=6)
    b = AutoLRSchedule(**PAPER, period=3, epoch_length=2, warmup_epochs=2)
    b.load_state_dict(a.state_dict())
    assert [b.lr(r, i) for r in range(3) for i in range(12)] == [a.lr(r, i) for r in range(3) for i in range(12)]
    with pytest.raises(ValueError, match="runs"):
        AutoLRSchedule([0.1, 0.2], [1.0, 0.5], period=3, epoch_length=2).load_state_dict(a.state_dict())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"initial_lrs": [0.1, 0.2], "factors": [1.0]}, "one initial value and one factor per run"),
        ({"initial_lrs": [], "factors": []}, r"at least one run \(R >= 1\)"),
        ({"initial_lrs": [0.1], "factors": [0.0]}, "factors must be finite and > 0"),
        ({"initial_lrs": [-0.1], "factors": [1.0]}, "must be > 0"),
        ({"initial_lrs": [0.1], "factors": [1.0], "period": 0}, "period >= 1"),
    ],
)
def test_invalid_settings_are_rejected_with_the_setting_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AutoLRSchedule(**{"period": 2, "epoch_length": 1, **kwargs})
