"""State a single training run needs in its checkpoints to resume bit for bit, beyond network, optimizer and
schedule: the AMP ``GradScaler``, the data loader's generator and torch's global generator, and the best score
behind ``model.pt``. Each is an object with ``state_dict()``/``load_state_dict()`` for Ignite's ``Checkpoint``
and MONAI's ``CheckpointSaver``/``CheckpointLoader``."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from typing import Any

import torch
from ignite.engine import Engine, Events

logger = logging.getLogger("autolr_monai.engines")


class GradScalerState:
    """The AMP ``GradScaler`` of a MONAI trainer (``trainer.scaler``; None without AMP), for checkpoints.

    MONAI's ``Trainer.run()`` creates a fresh ``GradScaler`` (scale 65536) every time it is called, after any
    ``CheckpointLoader`` could have restored one; so a loaded state is kept and applied when the run starts
    (``Events.STARTED``, which fires after the scaler is created), and a resumed GPU run continues at the scale and
    growth tracker it had reached.
    """

    def __init__(self, trainer: Engine) -> None:
        self.trainer = trainer
        self.pending: dict | None = None
        trainer.add_event_handler(Events.STARTED, self.apply)

    def state_dict(self) -> dict:
        scaler = getattr(self.trainer, "scaler", None)
        return dict(scaler.state_dict()) if scaler is not None else {}

    def load_state_dict(self, state: Mapping) -> None:
        self.pending = dict(state) or None
        self.apply()

    def apply(self, _: Engine | None = None) -> None:
        scaler = getattr(self.trainer, "scaler", None)
        if self.pending and scaler is not None and scaler.is_enabled():
            scaler.load_state_dict(self.pending)


class RandomStreams:
    """The data loader's ``torch.Generator`` (it seeds the sampler and the workers of every epoch) and torch's
    global CPU generator (dropout), for checkpoints of a single run; a population member keeps its own
    (``autolr.Member.random_state``)."""

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "torch": torch.get_rng_state()}

    def load_state_dict(self, state: Mapping) -> None:
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch"])


class ResumeView:
    """``obj`` seen by a ``CheckpointLoader`` that resumes: its ``load_resume_state`` where it has one (an
    ``ErrorMapStore`` keeps a map saved before its first refresh at version 0), else its ``load_state_dict``."""

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def state_dict(self) -> dict:
        return self.obj.state_dict()

    def load_state_dict(self, state: Mapping) -> None:
        getattr(self.obj, "load_resume_state", self.obj.load_state_dict)(state)


class BestModelState:
    """The best key-metric score an evaluator reached, for checkpoints: after a resume, MONAI's key-metric
    ``CheckpointSaver`` (``saver``, writing ``path``) replaces ``model.pt`` only with a better model, as the
    uninterrupted run would, instead of with the first one it sees (``CheckpointSaver.load_state_dict``). Where
    ``path`` is gone, the next validation writes it afresh (said in the log)."""

    def __init__(self, saver: Any, evaluator: Engine, path: str) -> None:
        self.saver, self.evaluator, self.path = saver, evaluator, path
        self.best = -math.inf
        evaluator.add_event_handler(Events.EPOCH_COMPLETED, self._track)

    def _track(self, engine: Engine) -> None:
        score = float(engine.state.metrics[engine.state.key_metric_name])
        if score > self.best:
            self.best = score

    def state_dict(self) -> dict:
        return {"best": self.best}

    def load_state_dict(self, state: Mapping) -> None:
        self.best = float(state["best"])
        if not math.isfinite(self.best):
            return
        if not os.path.isfile(self.path):
            logger.warning("resume: %s (the best model, Dice %.4f) is gone; the next validation writes it afresh",
                           self.path, self.best)  # fmt: skip
            return
        self.saver.load_state_dict({"_saved": [(self.best, os.path.basename(self.path))]})
