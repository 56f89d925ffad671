import json
import math

import torch
from ignite.engine import Engine, Events

from autolr_monai.engines import EpochSummary, TrainingHistory


def test_history_has_one_row_per_epoch_and_nan_where_not_validated(tmp_path):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    trainer = Engine(lambda engine, batch: {"loss": torch.tensor(float(engine.state.epoch))})
    evaluator = Engine(lambda engine, batch: None)
    evaluator.state.key_metric_name = "val_mean_dice"

    def validate(engine):  # as MONAI's ValidationHandler(interval=2): the evaluator takes the trainer's epoch
        evaluator.state.epoch = engine.state.epoch
        evaluator.state.metrics = {"val_mean_dice": engine.state.epoch / 10}

    EpochSummary(optimizer).attach(trainer)
    trainer.add_event_handler(Events.EPOCH_COMPLETED(every=2), validate)
    TrainingHistory(str(tmp_path), evaluator).attach(trainer)
    trainer.add_event_handler(Events.EPOCH_COMPLETED(once=3), lambda e: optimizer.param_groups[0].update(lr=0.01))
    trainer.run([0, 1], max_epochs=4)

    record = json.loads((tmp_path / "history.json").read_text())
    assert record["epoch_length"] == 2 and record["max_epochs"] == 4
    rows = record["epochs"]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert [r["train_loss"] for r in rows] == [1.0, 2.0, 3.0, 4.0]
    assert [r["val_dice"] for r in rows] == [None, 0.2, None, 0.4]  # epochs 1 and 3 were not validated
    assert [r["lr"] for r in rows] == [0.1, 0.1, 0.1, 0.01]  # logged before the change at the end of epoch 3
    csv = (tmp_path / "history.csv").read_text().splitlines()
    assert csv[0] == "epoch,lr,train_loss,val_dice" and csv[1].endswith(",nan") and csv[2] == "2,0.1,2,0.2"
    assert not list(tmp_path.glob("*.partial"))
    assert math.isnan(float(csv[3].split(",")[3]))


def test_atomic_checkpoint_saver_never_leaves_a_partial_file(tmp_path, monkeypatch):
    import pytest

    from autolr_monai.engines import AtomicCheckpointSaver

    network = torch.nn.Linear(2, 2)
    trainer = Engine(lambda engine, batch: None)
    AtomicCheckpointSaver(str(tmp_path), {"model": network}, save_interval=1, n_saved=3).attach(trainer)
    real_save = torch.save

    def dies_halfway(obj, f, *args, **kwargs):
        if trainer.state.epoch == 2:
            f.write(b"half a checkpoint")
            raise KeyboardInterrupt("killed while writing")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        trainer.run([0], max_epochs=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_epoch=1.pt"]  # no partial epoch-2 file
    assert set(torch.load(tmp_path / "model_epoch=1.pt", weights_only=True)) == {"weight", "bias"}
