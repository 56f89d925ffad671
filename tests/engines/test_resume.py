"""A single step-schedule run resumes with ``--resume true`` bit for bit; the AMP loss scale is checkpointed."""

from __future__ import annotations

import json

import pytest
import torch
from ignite.engine import Engine, Events
from monai.bundle import ConfigWorkflow

from autolr_monai.engines import BestModelState, GradScalerState
from tests.test_bundle import CONFIGS, TINY, _cause

SINGLE = {**TINY, "max_epochs": 4, "num_workers": 2, "checkpoint_interval": 1, "train#checkpoint#n_saved": 4,
          "isample#update_every": 1}  # fmt: skip


def _train(datalist: str, run_dir, **overrides) -> ConfigWorkflow:
    workflow = ConfigWorkflow(config_file=[str(CONFIGS / name) for name in ("train.json", "demo.json", "sched_a.json")],
                              workflow_type="train", **{**SINGLE, "datalist": datalist, "run_dir": str(run_dir), **overrides})  # fmt: skip
    workflow.initialize()
    workflow.run()
    return workflow


@pytest.fixture(scope="module")
def uninterrupted(tiny_datalist, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("single")
    workflow = _train(tiny_datalist, run_dir)
    return workflow.parser.get_parsed_content("network").state_dict(), run_dir


def test_a_single_run_resumes_with_resume_true_on_the_uninterrupted_trajectory(uninterrupted, tiny_datalist, tmp_path):
    weights, run_dir = uninterrupted
    expected = json.loads((run_dir / "history.json").read_text())["epochs"]
    assert [row["epoch"] for row in expected] == [1, 2, 3, 4]
    # a run stopped after epoch 2: its folder as it was then (checkpoints of epochs 1-2, history of 2 epochs)
    (tmp_path / "checkpoints").mkdir()
    for epoch in (1, 2):
        name = f"checkpoint_epoch={epoch}.pt"
        (tmp_path / "checkpoints" / name).write_bytes((run_dir / "checkpoints" / name).read_bytes())
    (tmp_path / "model.pt").write_bytes(b"the best model of epochs 1-2")
    workflow = _train(tiny_datalist, tmp_path, resume=True)
    assert workflow.parser.get_parsed_content("train#load_path").endswith("checkpoint_epoch=2.pt")
    resumed = json.loads((tmp_path / "history.json").read_text())["epochs"]
    assert resumed == expected  # rates, losses and Dice to the last bit
    network = workflow.parser.get_parsed_content("network").state_dict()
    assert all(torch.equal(network[k], weights[k]) for k in weights)
    best_epoch = max(range(4), key=lambda i: (expected[i]["val_dice"], -i))
    replaced = (tmp_path / "model.pt").read_bytes() != b"the best model of epochs 1-2"
    assert replaced == (best_epoch >= 2)  # only a better model than that of epochs 1-2 replaces it


def test_a_single_run_refuses_a_population_checkpoint(tiny_datalist, tmp_path):
    bogus = tmp_path / "population.pt"
    torch.save({"engine": {}, "members": [], "schedule": {}}, bogus)
    with pytest.raises(RuntimeError) as error:
        _train(tiny_datalist, tmp_path / "run", **{"autolr#resume_from": str(bogus)})
    assert str(_cause(error.value)) == (f"autolr#resume_from: {bogus} holds no single training run (expected at "
                                        "least model, optimizer, trainer)")  # fmt: skip


class _Trainer(Engine):
    """A trainer like MONAI's: every ``run()`` replaces ``scaler`` with a fresh one before the run starts."""

    def __init__(self) -> None:
        super().__init__(lambda engine, batch: None)
        self.scaler = None

    def run(self, *args, **kwargs):
        self.scaler = torch.amp.GradScaler("cpu", init_scale=65536.0)
        return super().run(*args, **kwargs)


def test_the_amp_loss_scale_survives_a_resume():
    first = _Trainer()
    state = GradScalerState(first)
    first.run([0], max_epochs=1)
    first.scaler.scale(torch.ones(()))
    first.scaler.update(new_scale=128.0)  # where a GPU run's scale got to after overflows
    saved = state.state_dict()
    assert saved["scale"] == 128.0
    resumed = _Trainer()
    restored = GradScalerState(resumed)
    restored.load_state_dict(saved)
    scales = []
    resumed.add_event_handler(Events.ITERATION_STARTED, lambda e: scales.append(e.scaler.get_scale()))
    resumed.run([0], max_epochs=1)
    assert scales == [128.0]  # not the fresh 65536 that Trainer.run created
    assert GradScalerState(Engine(lambda e, b: None)).state_dict() == {}  # no AMP: nothing to save


def test_best_model_state_tells_the_saver_the_score_to_beat(tmp_path):
    class Saver:
        def load_state_dict(self, state):
            self.state = state

    evaluator, saver = Engine(lambda e, b: None), Saver()
    best = BestModelState(saver, evaluator, str(tmp_path / "model.pt"))
    for score in (0.3, 0.5, 0.4):
        evaluator.state.key_metric_name, evaluator.state.metrics = "dice", {"dice": score}
        evaluator.fire_event(Events.EPOCH_COMPLETED)
    assert best.state_dict() == {"best": 0.5}
    BestModelState(saver, Engine(lambda e, b: None), str(tmp_path / "model.pt")).load_state_dict({"best": 0.5})
    assert not hasattr(saver, "state")  # no model.pt to protect: the next validation writes one
    (tmp_path / "model.pt").write_bytes(b"best")
    BestModelState(saver, Engine(lambda e, b: None), str(tmp_path / "model.pt")).load_state_dict({"best": 0.5})
    assert saver.state == {"_saved": [(0.5, "model.pt")]}
