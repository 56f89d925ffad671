"""LocalMeanDice: MONAI's MeanDice, but never averaged across processes (each AutoLR run scores itself)."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from ignite.engine import Engine
from monai.handlers import MeanDice

from autolr_monai.engines import LocalMeanDice


def _score(metric_class, prediction: torch.Tensor, label: torch.Tensor) -> float:
    engine = Engine(lambda e, batch: batch)
    metric_class(include_background=False).attach(engine, "dice")
    return engine.run([(prediction, label)]).metrics["dice"]


def _one_hot(values: list[int]) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(values).reshape(1, 2, 2, 2), 3).permute(0, 4, 1, 2, 3).float()


LABEL = _one_hot([0, 1, 1, 2, 2, 2, 0, 0])
PREDICTIONS = [_one_hot([0, 1, 1, 2, 2, 2, 0, 0]), _one_hot([0, 1, 0, 0, 2, 2, 0, 1])]


def _worker(rank: int, port: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        results[rank] = (_score(LocalMeanDice, PREDICTIONS[rank], LABEL), _score(MeanDice, PREDICTIONS[rank], LABEL))
    finally:
        dist.destroy_process_group()


def test_one_process_gives_monai_mean_dice():
    for prediction in PREDICTIONS:
        assert _score(LocalMeanDice, prediction, LABEL) == pytest.approx(_score(MeanDice, prediction, LABEL))


def test_two_processes_each_keep_their_own_score_where_monai_averages():
    results = mp.Manager().dict()
    mp.spawn(_worker, args=(29561, results), nprocs=2, join=True)
    alone = [_score(LocalMeanDice, p, LABEL) for p in PREDICTIONS]
    assert alone[0] == pytest.approx(1.0) and alone[1] < 0.9
    assert [results[r][0] for r in range(2)] == pytest.approx(alone)
    assert results[0][1] == pytest.approx(results[1][1]) == pytest.approx(sum(alone) / 2)  # MONAI's gathered mean
