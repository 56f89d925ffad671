import math

import pytest

from autolr_monai.study import ARMS, Curve, markdown, select_arms, summarize, updates_to_reach, value_at
from autolr_monai.study.curves import autolr_curve as curve_of_history

ARM = {a.name: a for a in ARMS}


def curve(dice, lr=None, runs=1, periods=None, epoch_length=10):
    epochs = list(range(1, len(dice) + 1))
    return Curve(epochs, [e * epoch_length for e in epochs], list(dice), list(lr or [0.05] * len(dice)), runs, periods)


def autolr_curve(dice, eta_star=(0.05, 0.1, 0.05), period=2):
    periods = [{"period": i + 1, "epoch": (i + 1) * period, "star": {"lr": v}} for i, v in enumerate(eta_star)]
    c = curve(dice, lr=[0.01] * len(dice), runs=3, periods=periods)
    c.best_of_runs = [d + 0.05 for d in dice]
    return c


def test_value_at_takes_the_first_epoch_that_completes_the_share_of_the_budget():
    c = curve([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])  # 80 updates
    assert value_at(c, 0.25) == 0.2  # 20 updates: epoch 2
    assert value_at(c, 1.0) == 0.8
    assert updates_to_reach(c, 0.45) == 50
    assert updates_to_reach(c, 0.95) is None
    assert updates_to_reach(curve([math.nan, 0.9]), 0.5) == 20
    # an epoch without validation (val_interval > 1): the last score before it
    assert value_at(curve([0.1, 0.3, math.nan, math.nan]), 0.75) == 0.3
    assert math.isnan(value_at(curve([math.nan, 0.3]), 0.5))


def study(auto_early=0.6, sched_early=0.4, auto_final=0.7, sched_final=0.75, is_gain=0.1, eta=(0.05, 0.1, 0.05)):
    def ramp(early, final):  # 8 epochs: the early value at epoch 2, the final one at epoch 8
        return [early / 2, early, *[early + (final - early) * i / 6 for i in range(1, 7)]]

    curves = {}
    for gain, suffix in ((0.0, ""), (is_gain, "_is")):
        curves[ARM["sched_a" + suffix]] = {s: curve(ramp(sched_early - 0.05 + gain, sched_final - 0.05 + gain)) for s in (0, 1)}
        curves[ARM["sched_b" + suffix]] = {s: curve(ramp(sched_early + gain, sched_final + gain + 0.01 * s)) for s in (0, 1)}
        curves[ARM["autolr" + suffix]] = {s: autolr_curve(ramp(auto_early + gain, auto_final + gain), eta) for s in (0, 1)}
    return summarize(curves)


def held(result, start):
    return next(c["held"] for c in result["claims"] if c["claim"].startswith(start))


def verdict(result, start):
    return next(c["verdict"] for c in result["claims"] if c["claim"].startswith(start))


def test_claims_follow_the_numbers():
    good = study()
    assert good["budget_updates"] == 80
    autolr = next(a for a in good["arms"] if a["name"] == "autolr")
    assert autolr["dice"]["0.25"]["mean"] == pytest.approx(0.6) and autolr["runs"] == 3
    assert autolr["best_of_runs"]["0.25"]["mean"] == pytest.approx(0.65)  # reported apart, not judged on
    assert held(good, "AutoLR beats the best step schedule after 25% of the budget without")
    assert held(good, "AutoLR beats the best step schedule after 25% of the budget with isample")
    assert held(good, "at the full budget the best step schedule catches up with AutoLR without")
    assert held(good, "isample speeds up")
    assert held(good, "the schedule AutoLR finds first rises")
    # Sched B is the better step schedule with and without isample here: the paper's A/B flip does not hold
    assert held(good, "with isample the higher rate") is False
    assert verdict(good, "AutoLR beats the best step schedule after 25% of the budget without") == "yes"
    bad = study(auto_early=0.3, auto_final=0.9, is_gain=-0.1, eta=(0.005, 0.0025))
    assert held(bad, "AutoLR beats the best step schedule after 25%") is False
    assert held(bad, "at the full budget the best step schedule catches up") is False
    assert held(bad, "isample speeds up") is False and verdict(bad, "isample speeds up") == "no"
    assert held(bad, "the schedule AutoLR finds first rises") is False
    assert held(good, "stricter: after the first period")
    # the 0.05 run wins period 1 and the rate only falls after: it rose from the factor-1 run's 0.01, not beyond
    falling = study(eta=(0.05, 0.025, 0.0125))
    assert held(falling, "the schedule AutoLR finds first rises") is True
    assert held(falling, "stricter: after the first period") is False
    flat = study(eta=(0.01, 0.01))  # never above the start, never below the peak
    assert held(flat, "the schedule AutoLR finds first rises") is False
    assert verdict(flat, "the schedule AutoLR finds first rises") == "no"


def test_a_difference_within_the_seed_spread_is_inconclusive():
    def arms(auto_values, sched_values):
        return {ARM["sched_b"]: {s: curve([v, v]) for s, v in enumerate(sched_values)},
                ARM["autolr"]: {s: autolr_curve([v, v], (0.05, 0.1)) for s, v in enumerate(auto_values)}}  # fmt: skip

    start = "AutoLR beats the best step schedule after 25% of the budget without"
    noisy = summarize(arms([0.51, 0.71, 0.61], [0.58, 0.60, 0.62]))  # +0.01, SDs 0.1 and 0.02
    assert held(noisy, start) is True and verdict(noisy, start) == "inconclusive"
    clear = summarize(arms([0.70, 0.71, 0.72], [0.58, 0.60, 0.62]))
    assert verdict(clear, start) == "yes"
    one_seed = summarize(arms([0.5], [0.6]))
    assert verdict(one_seed, start) == "no (1 seed)"
    missing = summarize(arms([0.5, math.nan], [0.6, 0.6]))  # a seed without a score at that point
    assert held(missing, start) is None and verdict(missing, start) == "not tested"


def test_autolr_curve_follows_the_factor_one_run_and_ignores_diverged_runs():
    rows = []
    for epoch, scores in ((1, (0.2, 0.1, 0.15)), (2, (0.9, 0.3, 0.4))):
        for run, score in enumerate(scores):
            rows.append({"epoch": epoch, "run": run, "lr": 0.01 * (run + 1) * epoch, "train_loss": 1.0,
                         "val_dice": score, "diverged": epoch == 2 and run == 0})  # fmt: skip
    record = {"runs": 3, "factors": {"lr": [2.0, 1.0, 0.5]}, "period": 2, "epoch_length": 5, "epochs": rows,
              "periods": [{"epoch": 2, "star": {"lr": 0.02}}]}  # fmt: skip
    c = curve_of_history(record)
    assert c.updates == [5, 10] and c.runs == 3
    assert c.dice == [0.1, 0.3] and c.lr == [0.02, 0.04]  # run 1, the factor-1 run
    assert c.best_of_runs == [0.2, 0.4]  # run 0's 0.9 came from a diverged run
    record["factors"]["lr"] = [4.0, 2.0, 0.5]  # no factor 1: the middle run
    assert curve_of_history(record).dice == [0.1, 0.3]
    del record["epoch_length"]
    with pytest.raises(ValueError, match="no 'epoch_length'"):
        curve_of_history(record, "old/autolr_history.json")


def test_default_threshold_and_updates_to_reach_it():
    result = study()
    best_final = max(a["dice"]["1"]["mean"] for a in result["arms"])
    assert result["threshold"] == pytest.approx(round(0.9 * best_final, 3))
    sched_b = next(a for a in result["arms"] if a["name"] == "sched_b")
    # ramp to 0.75 (seed 0) / 0.76 (seed 1) over epochs 2-8; the threshold 0.9 x 0.86 = 0.774 is never reached
    assert sched_b["updates_to_threshold"] == {"mean": None, "values": [None, None], "reached": 0, "of": 2}
    sched_b_is = next(a for a in result["arms"] if a["name"] == "sched_b_is")
    assert sched_b_is["updates_to_threshold"]["values"] == [70, 70]  # 0.5 + 0.35 * 5/6 = 0.792 at epoch 7
    assert summarize({ARM["sched_a"]: {0: curve([0.1, 0.5])}}, threshold=0.3)["arms"][0]["updates_to_threshold"]["values"] == [20]


def test_markdown_has_table1_columns_and_every_claim():
    result = study()
    text = markdown(result)
    assert text.splitlines()[0] == "| (updates per run) | " + " | ".join(a.label for a in ARMS) + " |"
    assert "| Validation Dice (20, 25%) |" in text and "| Validation Dice (80, 100%) |" in text
    assert text.count("| yes |") + text.count("| no |") == len(result["claims"])


def test_partial_studies_and_bad_input():
    only = summarize({ARM["sched_a"]: {0: curve([0.1, 0.2])}})
    assert all(c.get("held") is None for c in only["claims"])
    assert "not tested" in markdown(only)
    with pytest.raises(ValueError, match="different numbers of updates"):
        summarize({ARM["sched_a"]: {0: curve([0.1, 0.2])}, ARM["sched_b"]: {0: curve([0.1, 0.2, 0.3])}})
    with pytest.raises(ValueError, match="unknown \\['sched_c'\\]"):
        select_arms(["sched_a", "sched_c"])
    with pytest.raises(ValueError, match="no arm given"):
        select_arms([])
    assert [a.name for a in select_arms(["autolr_is", "sched_a"])] == ["sched_a", "autolr_is"]  # Table 1 order
