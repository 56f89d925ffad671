"""AutoLR driving three MONAI trainers built from the bundle: lockstep, swaps, divergence, R = 1, resume."""

from __future__ import annotations

import json
import logging
import math
import shutil

import numpy as np
import pytest
import torch
from ignite.engine import Events
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from autolr_monai.autolr import AutoLREvents, AutoLRSchedule, checkpoint_to_load, latest_checkpoint
from tests.autolr.conftest import TINY_AUTOLR, run_autolr


def _lrs(history: list[dict], epoch: int) -> list[float]:
    return [row["lr"] for row in history if row["epoch"] == epoch]


def test_runs_advance_in_lockstep_and_follow_algorithm_1(trained):
    _, autolr, _ = trained
    assert [m.trainer.state.epoch for m in autolr.members] == [4, 4, 4]
    assert [(row["epoch"], row["run"]) for row in autolr.history] == [(e, r) for e in range(1, 5) for r in range(3)]
    # replaying the recorded validation scores through the bare rule gives the engine's winners and rates
    scores = [[row["val_dice"] for row in autolr.history if row["epoch"] == e] for e in range(1, 5)]
    replay = AutoLRSchedule([0.05, 0.01, 0.005], [2.0, 1.0, 0.5], period=2, epoch_length=TINY_AUTOLR["batches_per_epoch"],
                            warmup_epochs=1)  # fmt: skip
    rows = replay.simulate_values(4, scores)
    assert [p["winner"] for p in autolr.periods] == replay.winners
    for epoch in range(1, 5):
        assert _lrs(autolr.history, epoch) == pytest.approx([lr for e, _, lr, _ in rows if e == epoch - 1])
    assert _lrs(autolr.history, 1) == pytest.approx([0.05, 0.01, 0.005])  # after the 1-epoch warm-up
    star = autolr.periods[0]["star"]["lr"]
    assert _lrs(autolr.history, 3) == pytest.approx([2 * star, star, star / 2])


def test_history_files_figure_and_best_model_are_written(trained):
    workflow, autolr, run_dir = trained
    record = json.loads((run_dir / "autolr_history.json").read_text())
    assert len(record["epochs"]) == 12 and [p["epoch"] for p in record["periods"]] == [2, 4]
    csv_lines = (run_dir / "autolr_history.csv").read_text().splitlines()
    assert csv_lines[0].split(",") == ["epoch", "run", "lr", "train_loss", "val_dice", "diverged", "period_winner"]
    assert len(csv_lines) == 13 and csv_lines[4].endswith(f",{record['periods'][0]['winner']}")
    png = (run_dir / "autolr.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    tensorboard = EventAccumulator(str(run_dir / "tensorboard"))
    tensorboard.Reload()
    tags = set(tensorboard.Tags()["scalars"])
    assert {f"autolr/{q}/run_{i}" for q in ("val_dice", "lr", "train_loss") for i in range(3)} <= tags
    assert [e.value for e in tensorboard.Scalars("autolr/winner")] == [p["winner"] for p in record["periods"]]
    best = max((row["val_dice"], -row["run"]) for row in autolr.history)
    assert autolr.best["score"] == best[0] and autolr.best["run"] == -best[1]
    network = workflow.parser.get_parsed_content("network_def", instantiate=True)
    network.load_state_dict(torch.load(run_dir / "model.pt", weights_only=True))  # where inference looks for it
    final = torch.load(run_dir / "checkpoints" / "checkpoint_final.pt", weights_only=True)
    assert {"engine", "schedule", "members", "history", "periods"} <= set(final) and len(final["members"]) == 3
    assert {"model", "optimizer", "error_maps"} == set(final["members"][0]["swapped"])


def test_swap_copies_weights_buffers_momentum_and_maps_but_not_rates_or_random_state(trained):
    _, autolr, _ = trained  # the run ended on a period boundary, so the winner's state was just copied
    states = [m.trainer.network.state_dict() for m in autolr.members]
    assert any("running_mean" in k for k in states[0])
    for state in states[1:]:
        assert all(torch.equal(state[k], states[0][k]) for k in states[0])
    momenta = [[m.optimizer.state[p]["momentum_buffer"] for p in m.trainer.network.parameters()] for m in autolr.members]
    for other in momenta[1:]:
        assert all(torch.equal(a, b) and a.data_ptr() != b.data_ptr() for a, b in zip(momenta[0], other))
    # the pitfall: loading the winner's optimizer state loads its lr; every run keeps its own
    # (the first step of each run's warm-up from its own previous rate to eta* x lambda_i)
    rates = [m.optimizer.param_groups[0]["lr"] for m in autolr.members]
    assert rates == [autolr.schedule.lr(m.index, m.trainer.state.iteration) for m in autolr.members]
    assert len(set(rates)) == 3
    for m in autolr.members:
        assert m.optimizer.param_groups[-1]["weight_decay"] == 0.0  # the classifier group keeps no weight decay
    maps = [np.asarray(m.swapped["error_maps"].map(0)) for m in autolr.members]
    assert maps[0].mean() < 1.0 and all(np.array_equal(maps[0], other) for other in maps[1:])
    assert len({bytes(m.generator.get_state().numpy()) for m in autolr.members}) == 3
    # copies, not shared tensors: stepping one run leaves the others alone
    first, second = autolr.members[0], autolr.members[1]
    before = [p.detach().clone() for p in second.trainer.network.parameters()]
    for p in first.trainer.network.parameters():
        p.grad = torch.ones_like(p)
    first.optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(before, second.trainer.network.parameters()))
    assert not torch.equal(momenta[0][0], momenta[1][0])


def test_a_diverging_run_cannot_win_and_is_respawned_from_the_winner(autolr_datalist, tmp_path):
    events = []

    def record(autolr):
        autolr.add_event_handler(AutoLREvents.RUN_DIVERGED, lambda e: events.append(("diverged", e.state.iteration)))
        autolr.add_event_handler(AutoLREvents.PERIOD_COMPLETED, lambda e: events.append(("period", e.periods[-1]["epoch"])))

    workflow = run_autolr(autolr_datalist, tmp_path, record, **{"autolr#initial_lrs": [1e5, 0.01, 0.005]})
    autolr = workflow.parser.get_parsed_content("autolr#engine")
    first = autolr.periods[0]
    assert first["diverged"][0] and first["winner"] != 0
    rows = [row for row in autolr.history if row["run"] == 0 and row["epoch"] <= 2]
    assert rows[0]["diverged"] and all(math.isnan(row["val_dice"]) for row in rows)
    # respawned: period 2 trains run 0 again from the winner's weights at eta* x 2, with a finite loss
    later = [row for row in autolr.history if row["run"] == 0 and row["epoch"] > 2]
    assert all(math.isfinite(row["train_loss"]) and not row["diverged"] for row in later)
    # it warms up from eta* (its own rate, 1e5, diverged), not from its previous rate
    assert [row["lr"] for row in later] == pytest.approx([2 * first["star"]["lr"]] * 2)
    assert all(torch.isfinite(p).all() for p in autolr.members[0].trainer.network.parameters())
    # RUN_DIVERGED once, during the population's first epoch; PERIOD_COMPLETED after each swap
    assert events == [("diverged", 1), ("period", 2), ("period", 4)]
    assert [m.trainer.state.epoch for m in autolr.members] == [4, 4, 4]


def test_a_single_run_population_trains_at_its_own_factor(autolr_datalist, tmp_path):
    workflow = run_autolr(autolr_datalist, tmp_path, **{"autolr#runs": 1, "autolr#initial_lrs": [0.02],
                                                        "autolr#factors": [0.5]})  # fmt: skip
    autolr = workflow.parser.get_parsed_content("autolr#engine")
    assert [p["winner"] for p in autolr.periods] == [0, 0]
    assert [row["lr"] for row in autolr.history] == pytest.approx([0.02, 0.02, 0.01, 0.01])


def test_autolr_with_isample_off_swaps_no_error_maps(autolr_datalist, tmp_path):
    workflow = run_autolr(autolr_datalist, tmp_path, **{"isample#enabled": "false", "max_epochs": 2})
    autolr = workflow.parser.get_parsed_content("autolr#engine")
    assert set(autolr.members[0].swapped) == {"model", "optimizer"} and len(autolr.periods) == 1


@pytest.mark.parametrize("epoch", [2, 3])  # right after a swap (period end), and mid-period
def test_resume_gives_the_uninterrupted_trajectory(epoch, trained, autolr_datalist, tmp_path):
    _, uninterrupted, run_dir = trained
    checkpoint = sorted((run_dir / "checkpoints").glob(f"*={epoch}.pt"))
    assert len(checkpoint) == 1, sorted((run_dir / "checkpoints").iterdir())
    workflow = run_autolr(autolr_datalist, tmp_path, **{"autolr#resume_from": str(checkpoint[0])})
    resumed = workflow.parser.get_parsed_content("autolr#engine")
    assert [m.trainer.state.epoch for m in resumed.members] == [4, 4, 4]
    assert resumed.history == uninterrupted.history  # same lr, loss and Dice, to the last bit
    assert [p["winner"] for p in resumed.periods] == [p["winner"] for p in uninterrupted.periods]
    final = torch.load(run_dir / "checkpoints" / "checkpoint_final.pt", weights_only=True)["members"]
    for member, saved in zip(resumed.members, final):
        weights = member.trainer.network.state_dict()
        assert all(torch.equal(weights[k], saved["swapped"]["model"][k]) for k in weights)


def test_a_resumed_run_can_be_extended(trained, autolr_datalist, tmp_path):
    _, uninterrupted, run_dir = trained
    final = str(run_dir / "checkpoints" / "checkpoint_final.pt")
    workflow = run_autolr(autolr_datalist, tmp_path, **{"autolr#resume_from": final, "max_epochs": 6})
    resumed = workflow.parser.get_parsed_content("autolr#engine")
    assert resumed.history[:12] == uninterrupted.history and len(resumed.history) == 18
    assert [m.trainer.state.epoch for m in resumed.members] == [6, 6, 6] and len(resumed.periods) == 3


def test_a_crash_mid_epoch_leaves_the_last_consistent_checkpoint(autolr_datalist, tmp_path):
    def crash_in_epoch_3(autolr):
        def fail(engine):
            if engine.state.iteration == 2 * TINY_AUTOLR["batches_per_epoch"] + 3:
                raise RuntimeError("simulated crash")

        autolr.members[1].trainer.add_event_handler(Events.ITERATION_COMPLETED, fail)

    with pytest.raises(RuntimeError):
        run_autolr(autolr_datalist, tmp_path / "crashed", crash_in_epoch_3)
    checkpoints = sorted(p.name for p in (tmp_path / "crashed" / "checkpoints").iterdir())
    assert checkpoints == ["autolr_iteration=1.pt", "autolr_iteration=2.pt"]  # no half-trained "final" checkpoint
    workflow = run_autolr(autolr_datalist, tmp_path / "resumed",
                          **{"autolr#resume_from": str(tmp_path / "crashed" / "checkpoints" / checkpoints[-1])})  # fmt: skip
    assert [m.trainer.state.epoch for m in workflow.parser.get_parsed_content("autolr#engine").members] == [4, 4, 4]


def test_non_finite_weights_after_a_finite_loss_count_as_divergence(autolr_datalist, tmp_path):
    def blow_up_run_2_at_the_end_of_period_1(autolr):
        def poison(engine):
            if engine.state.iteration == 2 * TINY_AUTOLR["batches_per_epoch"]:  # the period's last update
                with torch.no_grad():
                    next(autolr.members[2].trainer.network.parameters()).fill_(math.inf)

        autolr.members[2].trainer.add_event_handler(Events.ITERATION_COMPLETED, poison)

    workflow = run_autolr(autolr_datalist, tmp_path, blow_up_run_2_at_the_end_of_period_1)
    autolr = workflow.parser.get_parsed_content("autolr#engine")
    assert autolr.periods[0]["diverged"] == [False, False, True] and autolr.periods[0]["winner"] != 2
    assert all(m.finite() for m in autolr.members)


def test_a_period_longer_than_training_is_refused(autolr_datalist, tmp_path):
    with pytest.raises(RuntimeError) as error:
        run_autolr(autolr_datalist, tmp_path, **{"autolr#period": 5})
    assert "autolr#period (5 epochs) is longer than max_epochs (4)" in _chain(error.value)


def _chain(error: BaseException) -> str:
    """Messages of an exception and its causes (MONAI wraps errors raised in config expressions)."""
    messages = []
    while error is not None:
        messages.append(str(error))
        error = error.__cause__
    return " | ".join(messages)


def test_validation_less_often_than_every_epoch_is_refused_with_the_setting_named(autolr_datalist, tmp_path):
    with pytest.raises(RuntimeError) as error:
        run_autolr(autolr_datalist, tmp_path, **{"val_interval": 2, "max_epochs": 2})
    assert "needs a validation score every epoch (set val_interval to 1)" in _chain(error.value)


def test_a_checkpoint_of_another_population_size_is_refused(trained, autolr_datalist, tmp_path):
    _, _, run_dir = trained
    with pytest.raises(RuntimeError) as error:
        run_autolr(autolr_datalist, tmp_path, **{"autolr#initial_lrs": [0.05, 0.01], "autolr#factors": [2.0, 1.0],
                                                 "autolr#resume_from": str(run_dir / "checkpoints" / "checkpoint_final.pt")})  # fmt: skip
    assert "AutoLR checkpoint has 3 runs, this population has 2" in _chain(error.value)


@pytest.mark.parametrize("scale,limit", [(math.inf, None), (1e30, 1e6)], ids=["non-finite", "above-max_grad_norm"])
def test_exploding_gradients_mark_the_run_and_skip_its_step(scale, limit, autolr_datalist, tmp_path):
    at_divergence = []

    def explode_run_1_in_epoch_2(autolr):
        member = autolr.members[1]
        handles = []

        def arm(engine):  # during one backward pass of run 1, its gradients blow up (the loss stays finite)
            if engine.state.iteration == TINY_AUTOLR["batches_per_epoch"] + 2:
                handles.extend(p.register_hook(lambda g: g * scale) for p in member.trainer.network.parameters())

        def disarm(engine):
            while handles:
                handles.pop().remove()

        def weights(_):  # caught between backward and step: the weights are still those before the explosion
            at_divergence.append(max(float(p.abs().max()) for p in member.trainer.network.parameters()))

        member.trainer.add_event_handler(Events.ITERATION_STARTED, arm)
        member.trainer.add_event_handler(Events.ITERATION_COMPLETED, disarm)
        autolr.add_event_handler(AutoLREvents.RUN_DIVERGED, weights)

    workflow = run_autolr(autolr_datalist, tmp_path, explode_run_1_in_epoch_2, **{"autolr#max_grad_norm": limit})
    autolr = workflow.parser.get_parsed_content("autolr#engine")
    assert autolr.periods[0]["diverged"] == [False, True, False] and autolr.periods[0]["winner"] != 1
    assert len(at_divergence) == 1 and at_divergence[0] < 100  # the exploded step was never taken
    assert all(m.finite() for m in autolr.members)
    assert [m.trainer.state.epoch for m in autolr.members] == [4, 4, 4]


def test_every_run_diverging_stops_training_and_keeps_the_last_good_checkpoint(autolr_datalist, tmp_path):
    def poison_every_run_in_epoch_3(autolr):
        for member in autolr.members:
            def poison(engine, network=member.trainer.network):
                if engine.state.iteration == 2 * TINY_AUTOLR["batches_per_epoch"] + 1:
                    with torch.no_grad():
                        next(network.parameters()).fill_(math.nan)

            member.trainer.add_event_handler(Events.ITERATION_COMPLETED, poison)

    with pytest.raises(Exception) as error:
        run_autolr(autolr_datalist, tmp_path, poison_every_run_in_epoch_3)
    assert "all 3 AutoLR runs diverged by epoch 3 (period 2)" in _chain(error.value)
    folder = tmp_path / "checkpoints"
    assert sorted(p.name for p in folder.glob("*.pt")) == ["autolr_iteration=1.pt", "autolr_iteration=2.pt"]
    assert latest_checkpoint(folder) == str(folder / "autolr_iteration=2.pt")
    state = torch.load(folder / "autolr_iteration=2.pt", weights_only=True)
    assert not any(state["period_diverged"]) and len(state["periods"]) == 1


def test_latest_checkpoint_passes_over_unreadable_files(trained, tmp_path, caplog):
    _, _, run_dir = trained
    folder = tmp_path / "checkpoints"
    shutil.copytree(run_dir / "checkpoints", folder)
    assert latest_checkpoint(folder) == str(folder / "checkpoint_final.pt")
    (folder / "checkpoint_final.pt").unlink()
    newest = max(folder.glob("autolr_iteration=*.pt"), key=lambda p: int(p.stem.split("=")[1]))
    (folder / "autolr_iteration=99.pt").write_bytes(newest.read_bytes()[:1000])  # a half-copied file
    (folder / "tmpabc123").write_bytes(b"an interrupted atomic write")
    with caplog.at_level(logging.WARNING, logger="autolr_monai.autolr"):
        assert latest_checkpoint(folder) == str(newest)
    assert any("autolr_iteration=99.pt cannot be read" in r.getMessage() for r in caplog.records)
    assert latest_checkpoint(tmp_path / "nowhere") is None
    assert checkpoint_to_load(None, tmp_path / "nowhere", resume=True) is None  # --resume on a fresh run: start
    assert checkpoint_to_load(None, folder, resume=False) is None
    with pytest.raises(FileNotFoundError, match="autolr#resume_from: .*missing.pt is not a file"):
        checkpoint_to_load(str(tmp_path / "missing.pt"), folder, resume=True)


def test_resume_true_continues_from_the_newest_checkpoint_of_the_run(autolr_datalist, trained, tmp_path):
    _, uninterrupted, run_dir = trained
    shutil.copytree(run_dir, tmp_path / "run")
    (tmp_path / "run" / "checkpoints" / "checkpoint_final.pt").unlink()
    for late in ("autolr_iteration=4.pt", "autolr_iteration=3.pt"):
        (tmp_path / "run" / "checkpoints" / late).unlink(missing_ok=True)
    workflow = run_autolr(autolr_datalist, tmp_path / "run", resume=True)
    assert workflow.parser.get_parsed_content("autolr#load_path").endswith("autolr_iteration=2.pt")
    assert workflow.parser.get_parsed_content("autolr#engine").history == uninterrupted.history


def test_a_huge_rate_for_every_run_stops_training_with_a_clear_message(autolr_datalist, tmp_path):
    with pytest.raises(Exception) as error:
        run_autolr(autolr_datalist, tmp_path, **{"autolr#initial_lrs": [1e5, 1e5, 1e5]})
    assert "all 3 AutoLR runs diverged by epoch 1 (period 1): there is no run to continue from" in _chain(error.value)
    assert not list((tmp_path / "checkpoints").glob("*.pt"))  # nothing written of a population with no healthy run


def test_a_fresh_training_refuses_the_folder_of_a_finished_one(trained, autolr_datalist):
    _, _, run_dir = trained
    assert not (run_dir / "training.lock").exists()  # the finished training released its folder
    with pytest.raises(RuntimeError) as error:
        run_autolr(autolr_datalist, run_dir)
    assert _chain(error.value).endswith(
        f"run folder {run_dir} already holds the outputs of a training (autolr_history.json, checkpoints, model.pt); "
        "resume it with --resume true, or train into another --run_dir")  # fmt: skip
