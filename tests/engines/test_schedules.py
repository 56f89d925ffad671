import pytest
import torch
from ignite.engine import Engine, Events
from ignite.handlers import PiecewiseLinear

from autolr_monai.autolr import step_decay_milestones


def _lr_per_iteration(milestones, n):
    return [v for _, v in PiecewiseLinear.simulate_values(n, param_name="lr", milestones_values=milestones)]


def test_step_schedule_with_warmups():
    epoch_length, warmup, gamma = 2, 3, 10
    lrs = _lr_per_iteration(step_decay_milestones(0.05, 30, epoch_length, 0.1, gamma, warmup), 60)
    w = warmup * epoch_length
    # start: linear ramp from 0, reaching eta0 at the last warm-up iteration
    assert lrs[:w] == pytest.approx([0.05 * (i + 1) / w for i in range(w)])
    assert lrs[w : gamma * epoch_length] == pytest.approx([0.05] * (gamma * epoch_length - w))
    # step at epoch gamma: ramp from 0.05 down to 0.005
    start = gamma * epoch_length
    assert lrs[start : start + w] == pytest.approx([0.05 + (0.005 - 0.05) * (i + 1) / w for i in range(w)])
    assert lrs[start + w : 2 * start] == pytest.approx([0.005] * (start - w))
    assert lrs[2 * start + w] == pytest.approx(0.0005)


def test_paper_schedules_sched_a_and_b():
    for eta0 in (0.05, 0.025):
        m = step_decay_milestones(eta0, max_epochs=1000, epoch_length=100)
        lrs = _lr_per_iteration(m, 100_000)
        assert lrs[999] == pytest.approx(eta0) and lrs[39_999] == pytest.approx(eta0)
        assert lrs[41_000] == pytest.approx(eta0 * 0.1) and lrs[90_000] == pytest.approx(eta0 * 0.01)


def test_scheduler_drives_optimizer_in_an_engine():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    sched = PiecewiseLinear(opt, "lr", milestones_values=step_decay_milestones(0.1, 4, 2, 0.5, 2, 1))
    engine = Engine(lambda e, b: None)
    sched.attach(engine)
    seen = []
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(opt.param_groups[0]["lr"]))
    engine.run([0, 0], max_epochs=4)
    assert seen == pytest.approx([0.05, 0.1, 0.1, 0.1, 0.075, 0.05, 0.05, 0.05])


@pytest.mark.parametrize("kwargs", [{"eta0": 0.0}, {"gamma": 0}, {"factor": -1.0}, {"warmup_epochs": 400}])
def test_invalid_schedules_raise(kwargs):
    args = {"eta0": 0.05, "max_epochs": 10, "epoch_length": 1, **kwargs}
    with pytest.raises(ValueError):
        step_decay_milestones(**args)
