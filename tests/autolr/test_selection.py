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
    # after the period every run carries the winner's weights, trained at eta*: all ramp from eta* to eta* x lambda_i
    schedule.spawn(0, iteration=50 * epoch_length)
    target = [0.1, 0.05, 0.025]
    for k in range(12):
        expected = [0.05 + (t - 0.05) * min(k + 1, warmup) / warmup for t in target]
        assert [schedule.lr(run, last(50 + k)) for run in range(3)] == pytest.approx(expected)
    assert {schedule.lr(1, i) for i in range(50 * epoch_length, 62 * epoch_length)} == {0.05}  # lambda 1: no ramp


def test_figure_2_epoch_by_epoch_through_three_switches():
    """Epoch length 1, period 5, warm-up 4: winners run 0 (eta 0.05), run 2 (lambda 0.5), run 0 (lambda 2)."""
    schedule = AutoLRSchedule(**PAPER, period=5, epoch_length=1, warmup_epochs=4)
    winners = [0, 2, 0]
    script = [[1.0 if run == winners[min(epoch // 5, 2)] else 0.5 for run in range(3)] for epoch in range(20)]
    rows = schedule.simulate_values(20, script)
    rates = [[lr for e, _, lr, _ in rows if e == epoch] for epoch in range(20)]
    expected = [
        # period 1: from 0 to 0.05, 0.01, 0.005
        [0.0125, 0.0025, 0.00125], [0.025, 0.005, 0.0025], [0.0375, 0.0075, 0.00375], [0.05, 0.01, 0.005],
        [0.05, 0.01, 0.005],
        # run 0 won at eta* = 0.05: from 0.05 to 0.1, 0.05, 0.025
        [0.0625, 0.05, 0.04375], [0.075, 0.05, 0.0375], [0.0875, 0.05, 0.03125], [0.1, 0.05, 0.025],
        [0.1, 0.05, 0.025],
        # run 2 (lambda 0.5) won at eta* = 0.025: from 0.025 to 0.05, 0.025, 0.0125
        [0.03125, 0.025, 0.021875], [0.0375, 0.025, 0.01875], [0.04375, 0.025, 0.015625], [0.05, 0.025, 0.0125],
        [0.05, 0.025, 0.0125],
        # run 0 (lambda 2) won at eta* = 0.05: from 0.05 down and up to 0.1, 0.05, 0.025
        [0.0625, 0.05, 0.04375], [0.075, 0.05, 0.0375], [0.0875, 0.05, 0.03125], [0.1, 0.05, 0.025],
        [0.1, 0.05, 0.025],
    ]
    for epoch in range(20):
        assert rates[epoch] == pytest.approx(expected[epoch]), f"epoch {epoch}"
    assert schedule.winners == [0, 2, 0, 0]


def test_a_diverged_run_ramps_from_eta_star_like_the_others():
    schedule = AutoLRSchedule(**PAPER, period=2, epoch_length=1, warmup_epochs=2)
    schedule.spawn(1, iteration=2, diverged=[True, False, False])
    assert [schedule.lr(run, 2) for run in range(3)] == pytest.approx([0.015, 0.01, 0.0075])
    assert [schedule.lr(run, 3) for run in range(3)] == pytest.approx([0.02, 0.01, 0.005])


def test_warm_up_interrupted_by_a_switch_ramps_from_eta_star():
    schedule = AutoLRSchedule(**PAPER, period=2, epoch_length=1, warmup_epochs=4)
    assert schedule.lr(1, 1) == pytest.approx(0.005)  # run 1 had reached half its rate when it won
    schedule.spawn(1, iteration=2)
    # eta* is the winner's set rate (0.01), not the point its warm-up had reached (0.005)
    assert schedule.current["lr"] == pytest.approx([0.02, 0.01, 0.005])
    assert [schedule.lr(run, 2) for run in range(3)] == pytest.approx([0.0125, 0.01, 0.00875])


@pytest.mark.parametrize("factor, expected", [(0.5, [0.04, 0.04, 0.03, 0.02, 0.015]), (1.0, [0.04] * 5),
                                              (2.0, [0.04, 0.04, 0.06, 0.08, 0.12])])  # fmt: skip
def test_a_single_run_ramps_from_its_own_rate_to_its_factor(factor, expected):
    schedule = AutoLRSchedule([0.04], [factor], period=2, epoch_length=1, warmup_epochs=2, warmup_start=0.04)
    rows = schedule.simulate_values(5, lambda epoch, run, lr: 0.5)
    assert [lr for _, _, lr, _ in rows] == pytest.approx(expected)
    assert schedule.winners == [0, 0]


@pytest.mark.parametrize("warmup_epochs, expected", [
    (0, [[0.05, 0.01, 0.005]] * 4 + [[0.1, 0.05, 0.025]] * 4),  # no ramp at all, not even at the start
    (1, [[0.0125, 0.0025, 0.00125], [0.025, 0.005, 0.0025], [0.0375, 0.0075, 0.00375], [0.05, 0.01, 0.005],
         [0.0625, 0.05, 0.04375], [0.075, 0.05, 0.0375], [0.0875, 0.05, 0.03125], [0.1, 0.05, 0.025]]),
])  # fmt: skip
def test_warm_up_of_zero_and_one_epoch_iteration_by_iteration(warmup_epochs, expected):
    schedule = AutoLRSchedule(**PAPER, period=1, epoch_length=4, warmup_epochs=warmup_epochs)
    got = [[schedule.lr(run, i) for run in range(3)] for i in range(4)]
    schedule.spawn(0, iteration=4)
    got += [[schedule.lr(run, i) for run in range(3)] for i in range(4, 8)]
    for i in range(8):
        assert got[i] == pytest.approx(expected[i]), f"iteration {i}"


def test_the_first_warm_up_starts_from_a_configurable_rate():
    schedule = AutoLRSchedule(**PAPER, period=5, epoch_length=1, warmup_epochs=2, warmup_start=0.001)
    assert [schedule.lr(run, 0) for run in range(3)] == pytest.approx([0.0255, 0.0055, 0.003])
    with pytest.raises(ValueError, match="warmup_start"):
        AutoLRSchedule(**PAPER, period=5, epoch_length=1, warmup_start=-0.1)


def test_ramped_hyperparameters_ramp_from_the_winners_value_the_others_change_at_the_switch():
    momentum = {"initial": [0.9, 0.8, 0.7], "factors": [1.1, 1.0, 0.9]}
    weight_decay = {"initial": [1e-4, 1e-4, 1e-4], "factors": [2.0, 1.0, 0.5]}
    schedule = AutoLRSchedule(**PAPER, period=1, epoch_length=1, warmup_epochs=2, ramped=["lr", "momentum"],
                              hyperparameters={"momentum": momentum, "weight_decay": weight_decay})  # fmt: skip
    assert schedule.values(2, 0) == pytest.approx({"lr": 0.0025, "momentum": 0.7, "weight_decay": 1e-4})
    schedule.spawn(2, iteration=1)  # eta* = 0.005, momentum* = 0.7
    assert schedule.values(0, 1) == pytest.approx({"lr": 0.0075, "momentum": 0.735, "weight_decay": 2e-4})
    assert schedule.values(0, 2) == pytest.approx({"lr": 0.01, "momentum": 0.77, "weight_decay": 2e-4})
    with pytest.raises(ValueError, match="ramped"):
        AutoLRSchedule(**PAPER, period=1, epoch_length=1, ramped=["lr", "dampening"])


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
