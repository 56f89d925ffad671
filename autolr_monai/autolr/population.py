"""AutoLR (Algorithm 1) as an Ignite engine that drives a population of MONAI trainers, in one process or many.

Each iteration of the ``AutoLR`` engine is one epoch of every run (train, then validate on the full validation
volumes); each of its epochs is one period of ``gamma`` epochs. The iteration that ends a period also selects the
winner, copies its state to every run and re-spawns the rates, then fires ``AutoLREvents.PERIOD_COMPLETED``; so
``Checkpoint`` handlers on ``ITERATION_COMPLETED`` always save a consistent population (``state_dict``), and a run
resumed from any of them continues as if it had not stopped.

Where Ignite and MONAI fall short, and what this module adds:
- Interleaving: MONAI's ``Trainer.run()`` trains to ``max_epochs``. Each run's trainer is *interrupted* (Ignite's
  interrupt/resume) after every epoch, so all runs are always at the same epoch; calling ``run()`` again resumes it.
  Later epochs call ``Workflow.run`` directly, because ``Trainer.run`` would also replace the AMP ``GradScaler``.
- What a swap copies (``Member.swapped``, declared in the config as ``autolr#swap``): the network's
  ``state_dict`` (weights *and* batch-norm running statistics, which belong to those weights), the optimizer's
  ``state_dict`` (Nesterov momentum buffers: the winner's velocity continues its trajectory instead of restarting
  from zero, which would behave like a different optimizer) and, with isample on, the error maps, masses and
  refresh cursor (they describe where the *copied* weights are wrong; the loser's maps describe weights that no
  longer exist). Loading an optimizer ``state_dict`` also loads the winner's learning rate and momentum into
  ``param_groups``: every run's own values are re-applied right after the copy and before every iteration.
  Each receiver gets its own deep copy (``torch.optim.Optimizer.load_state_dict`` would otherwise share the
  winner's momentum tensors between runs).
- Not copied: random state (the run's generator, which draws its images and every sample's augmentation seed, and
  its own stream for torch's global generator, which dropout uses) and the trainers' counters. Each run keeps its
  own random stream, so the copies explore different batches after a swap rather than repeating the winner's. All
  runs are at the same epoch already.
- Across processes (``torchrun``), run ``i`` lives in process ``i % world_size``: scores are all-gathered and the
  winner's state is broadcast (``torch.distributed.broadcast_object_list``). Nothing is wrapped in
  ``DistributedDataParallel`` and no data is sharded: the runs are independent experiments.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, EventEnum, Events
from monai.engines import Workflow
from monai.engines.utils import IterationEvents

from ..engines.resume import GradScalerState
from .fingerprint import fingerprint_differences
from .selection import AutoLRSchedule, PopulationDivergedError, best_score, select_winner

logger = logging.getLogger("autolr_monai.autolr")


class AutoLREvents(EventEnum):
    """Fired by ``AutoLR``: after the end-of-period swap, and when a run's training loss becomes NaN or inf."""

    PERIOD_COMPLETED = "period_completed"
    RUN_DIVERGED = "run_diverged"


def _to_cpu(state: Any) -> Any:
    if isinstance(state, torch.Tensor):
        return state.detach().cpu()
    if isinstance(state, Mapping):
        return {k: _to_cpu(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_to_cpu(v) for v in state)
    return state


def local_runs(runs: int) -> list[int]:
    """The runs of a ``runs``-run population that this process trains: run ``i`` lives in process ``i % world_size``."""
    world, rank = idist.get_world_size(), idist.get_rank()
    if runs < 1 or world > runs:
        raise ValueError(f"AutoLR has {runs} runs and {world} processes: it needs at least one run, and at most one "
                         "process per run (runs are assigned to processes round-robin)")  # fmt: skip
    return list(range(rank, runs, world))


@dataclass
class Member:
    """One run of the population: a MONAI trainer (with its own network, optimizer and data pipeline), its evaluator,
    the objects whose ``state_dict`` a swap copies, and its random state (saved in checkpoints, never swapped)."""

    index: int
    trainer: Any
    evaluator: Any
    swapped: dict[str, Any]
    generator: torch.Generator | None = None
    diverged: bool = False
    _started: bool = field(default=False, repr=False)
    _completed: bool = field(default=False, repr=False)
    _torch_rng: dict = field(default_factory=dict, repr=False)
    _scaler: GradScalerState | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._scaler = GradScalerState(self.trainer)  # AMP's loss scale, continued on resume (not swapped)
        # the run's own stream for torch's global generators (dropout), seeded from its sampler seed
        seed = (self.generator.initial_seed() if self.generator is not None else self.index) + 1
        self._torch_rng = {"cpu": torch.Generator().manual_seed(seed).get_state()}
        if self._cuda_device() is not None:
            with torch.random.fork_rng(devices=[self._cuda_device()]):
                torch.cuda.manual_seed(seed)
                self._torch_rng["cuda"] = torch.cuda.get_rng_state(self._cuda_device())

    def _cuda_device(self) -> torch.device | None:
        device = next(self.trainer.network.parameters()).device
        return device if device.type == "cuda" else None

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.trainer.optimizer

    def score(self) -> float:
        """This epoch's key validation metric (mean organ Dice); checks validation ran at the trainer's epoch."""
        state = self.evaluator.state
        if state.epoch != self.trainer.state.epoch:
            raise RuntimeError(
                f"AutoLR run {self.index}: validation last ran at epoch {state.epoch}, training is at epoch "
                f"{self.trainer.state.epoch}; Algorithm 1 needs a validation score every epoch (set val_interval to 1)"
            )
        return float(state.metrics[state.key_metric_name])

    def train_epoch(self) -> None:
        """One epoch (and its validation) with torch's global generators set to this run's own stream, so dropout
        does not depend on how runs are interleaved or split across processes."""
        cuda = self._cuda_device()
        outer = {"cpu": torch.get_rng_state(), **({"cuda": torch.cuda.get_rng_state(cuda)} if cuda else {})}
        torch.set_rng_state(self._torch_rng["cpu"])
        if cuda is not None:
            torch.cuda.set_rng_state(self._torch_rng["cuda"], cuda)
        try:
            if not self._started:
                self._started = True
                self.trainer.add_event_handler(Events.COMPLETED, self._set_completed)
                self.trainer.run()
            else:
                Workflow.run(self.trainer)
        finally:
            self._torch_rng["cpu"] = torch.get_rng_state()
            torch.set_rng_state(outer["cpu"])
            if cuda is not None:
                self._torch_rng["cuda"] = torch.cuda.get_rng_state(cuda)
                torch.cuda.set_rng_state(outer["cuda"], cuda)

    def _set_completed(self, _: Engine) -> None:
        self._completed = True

    def finish(self) -> None:
        """Complete a trainer left interrupted (a run that diverged in the last period idled to the end), so its
        ``COMPLETED`` handlers run and no suspended Ignite run is left behind."""
        if self._started and not self._completed:
            state = self.trainer.state
            state.epoch, state.iteration = state.max_epochs, state.max_epochs * state.epoch_length
            Workflow.run(self.trainer)

    def abandon(self) -> None:
        """End a trainer left interrupted when the population stops on an error, without its ``COMPLETED``
        handlers (no final checkpoint of an unfinished run).

        Ignite keeps an interrupted run as a suspended generator whose handlers reach the engine through weak
        references. Left to the garbage collector at exit, it is closed after those references are cleared and
        reports "Engine reference not resolved" as the last word, hiding the real error; Ignite has no public
        way to drop a suspended run, so it is terminated and resumed, which ends it at once."""
        if self._started and not self._completed:
            self.trainer.terminate(skip_completed=True)
            Workflow.run(self.trainer)

    def finite(self) -> bool:
        """Whether the weights, buffers and optimizer state are all finite (an update can blow them up while the
        loss that preceded it was still finite)."""
        tensors = list(self.trainer.network.state_dict().values())
        tensors += [v for state in self.optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]
        return all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())

    def swap_state(self) -> dict:
        return {name: obj.state_dict() for name, obj in self.swapped.items()}

    def load_swap_state(self, state: Mapping) -> None:
        if set(state) != set(self.swapped):
            raise KeyError(f"AutoLR run {self.index} swaps {sorted(self.swapped)}, the state has {sorted(state)}")
        for name, obj in self.swapped.items():
            obj.load_state_dict(state[name])

    def random_state(self) -> dict:
        """The sampler generator (it also draws every sample's augmentation seed, ``data.SeededSampler``) and the
        run's stream for torch's generator (dropout): an exact resume, with or without worker processes."""
        generator = self.generator.get_state() if self.generator is not None else None
        return {"generator": generator, "torch": dict(self._torch_rng)}

    def load_random_state(self, state: Mapping) -> None:
        if self.generator is not None and state["generator"] is not None:
            self.generator.set_state(state["generator"])
        self._torch_rng.update({k: v for k, v in state["torch"].items() if k in self._torch_rng})

    def state_dict(self) -> dict:
        return {"swapped": self.swap_state(), "trainer": self.trainer.state_dict(), "random": self.random_state(),
                "scaler": self._scaler.state_dict(), "diverged": self.diverged}  # fmt: skip

    def load_state_dict(self, state: Mapping) -> None:
        """Resume from a checkpoint: the swapped objects' ``load_resume_state`` where they have one (a resume may
        restore more exactly than a swap copies), else their ``load_state_dict``."""
        swapped = state["swapped"]
        if set(swapped) != set(self.swapped):
            raise KeyError(f"AutoLR run {self.index} swaps {sorted(self.swapped)}, the checkpoint has {sorted(swapped)}")
        for name, obj in self.swapped.items():
            getattr(obj, "load_resume_state", obj.load_state_dict)(swapped[name])
        self.trainer.load_state_dict(state["trainer"])
        self.load_random_state(state["random"])
        self._scaler.load_state_dict(state.get("scaler", {}))
        self.diverged = bool(state["diverged"])


class _RunControl:
    """Handlers on one run's trainer: set its hyperparameters before every iteration (the schedule is the only
    source of truth, so a copied optimizer state cannot leak the winner's rate), stop its epoch on a non-finite loss,
    and interrupt it after each epoch so the population advances in lockstep."""

    def __init__(self, autolr: AutoLR, member: Member) -> None:
        self.autolr, self.member = autolr, member
        self.zero = [{name: not group.get(name) for name in autolr.schedule.names} for group in member.optimizer.param_groups]
        trainer = member.trainer
        trainer.add_event_handler(Events.ITERATION_STARTED, self.apply)
        if not getattr(trainer, "amp", False):  # with AMP the GradScaler skips steps with inf gradients by design
            trainer.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self.check_gradients)
        trainer.add_event_handler(Events.ITERATION_COMPLETED, self.check_loss)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, self.pause)

    def apply(self, engine: Engine | None = None) -> None:
        """Hyperparameters for the next iteration; groups that start at 0 (the classifier's weight decay) stay 0."""
        iteration = self.member.trainer.state.iteration - (1 if engine is not None else 0)
        values = self.autolr.schedule.values(self.member.index, iteration)
        for group, zero in zip(self.member.optimizer.param_groups, self.zero):
            for name, value in values.items():
                group[name] = 0.0 if (zero[name] and name != "lr") else value

    def check_gradients(self, engine: Engine) -> None:
        """Between backward and the optimizer step: a non-finite gradient norm, or one above
        ``autolr#max_grad_norm``, marks the run diverged, and its gradients are dropped so the step is skipped."""
        grads = [p.grad for group in self.member.optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not grads or self.member.diverged:
            return
        norm = float(torch.nn.utils.get_total_norm(grads))
        limit = self.autolr.max_grad_norm
        if math.isfinite(norm) and (limit is None or norm <= limit):
            return
        for group in self.member.optimizer.param_groups:
            for p in group["params"]:
                p.grad = None  # SGD skips parameters without a gradient: the exploded step never happens
        self._diverge(engine, f"gradient norm is {norm:.3g}" + ("" if limit is None else f" (limit {limit:g})"))

    def check_loss(self, engine: Engine) -> None:
        output = engine.state.output
        loss = (output[0] if isinstance(output, list) else output)["loss"]
        loss = float(loss.detach() if isinstance(loss, torch.Tensor) else loss)
        if not math.isfinite(loss) and not self.member.diverged:
            self._diverge(engine, f"training loss is {loss}")

    def _diverge(self, engine: Engine, why: str) -> None:
        self.member.diverged = True
        logger.warning("AutoLR run %d: %s at epoch %d (lr %.3g); it cannot win this period and is respawned from the "
                       "winner", self.member.index, why, engine.state.epoch,
                       self.member.optimizer.param_groups[0]["lr"])  # fmt: skip
        self.autolr.fire_event(AutoLREvents.RUN_DIVERGED)
        engine.terminate_epoch(skip_epoch_completed=True)  # no validation or error-map refresh of NaN weights
        engine.interrupt()

    def pause(self, engine: Engine) -> None:
        if engine.state.epoch < engine.state.max_epochs:
            engine.interrupt()


class AutoLR(Engine):
    """Algorithm 1 over ``members`` (this process's runs), for ``max_epochs`` epochs, swapping every
    ``schedule.period`` epochs. After each epoch it records, per run, the learning rate (at the epoch's last
    iteration), the mean training loss and the validation score in ``history``; each period's winner and swap time
    go to ``periods``. The best-scoring weights of the whole population are kept in ``best_model_path`` (the
    model for inference: the best checkpoint of the winning run). ``fingerprint`` (``training_fingerprint``:
    the data and settings the state depends on) is saved in ``state_dict``, and a checkpoint with another one is
    refused by ``load_state_dict``.

    Args:
        swap_from: which state of the winner a swap copies (Algorithm 1, line 7, where the paper does not say):
            ``"end"``, its state at the end of the period (it trained all ``gamma`` epochs; the default), or
            ``"best"``, its state after the epoch of its ``max[v_i]`` (the score it won with), kept in memory per
            run during the period: one more copy of every run's swap state (network, momentum, error maps).
        same_start: all runs start from run 0's initial state (the population then differs only in its rates), or
            each from its own initialisation (``False``).
    """

    def __init__(
        self,
        members: Sequence[Member],
        schedule: AutoLRSchedule,
        max_epochs: int,
        best_model_path: str | None = None,
        max_grad_norm: float | None = None,
        fingerprint: Mapping | None = None,
        swap_from: str = "end",
        same_start: bool = True,
    ) -> None:
        super().__init__(self._epoch)
        if swap_from not in ("end", "best"):
            raise ValueError(f"autolr#swap_from: expected 'end' or 'best', got {swap_from!r}")
        self.swap_from = swap_from
        if not isinstance(same_start, bool):
            raise ValueError(f"autolr#same_start: expected true or false, got {same_start!r}")
        self.register_events(*AutoLREvents)
        self.schedule, self.max_epochs, self.best_model_path = schedule, int(max_epochs), best_model_path
        self.fingerprint = fingerprint
        if max_grad_norm is not None and not (isinstance(max_grad_norm, (int, float)) and max_grad_norm > 0):
            raise ValueError(f"autolr#max_grad_norm must be a positive number or null, got {max_grad_norm!r}")
        self.max_grad_norm = None if max_grad_norm is None else float(max_grad_norm)
        self.world_size, self.rank = idist.get_world_size(), idist.get_rank()
        self.members = list(members)
        if self.world_size == 1 and len(self.members) != schedule.runs:
            raise ValueError(f"{len(self.members)} runs were built (autolr#runs) but the schedule has {schedule.runs} "
                             "(one per entry of autolr#initial_lrs and autolr#factors)")  # fmt: skip
        expected = local_runs(schedule.runs)
        if [m.index for m in self.members] != expected:
            raise ValueError(f"process {self.rank} of {self.world_size} must hold runs {expected}, got "
                             f"{[m.index for m in self.members]}")  # fmt: skip
        epoch_length = schedule.epoch_length
        for m in self.members:
            if m.trainer.state.epoch_length != epoch_length or m.trainer.state.max_epochs != self.max_epochs:
                raise ValueError(f"AutoLR run {m.index}: its trainer has {m.trainer.state.epoch_length} iterations "
                                 f"per epoch and {m.trainer.state.max_epochs} epochs; the population expects "
                                 f"{epoch_length} and {self.max_epochs}")  # fmt: skip
        if schedule.period > self.max_epochs:
            raise ValueError(f"autolr#period ({schedule.period} epochs) is longer than max_epochs ({self.max_epochs}): "
                             "no run would ever be selected")  # fmt: skip
        if self.max_epochs % schedule.period:
            logger.warning("AutoLR: max_epochs (%d) is not a multiple of autolr#period (%d): the last %d epochs end "
                           "without a selection", self.max_epochs, schedule.period, self.max_epochs % schedule.period)  # fmt: skip
        self.controls = [_RunControl(self, m) for m in self.members]
        self.history: list[dict] = []
        self.periods: list[dict] = []
        self.best: dict = {"score": -math.inf, "run": -1, "epoch": 0}
        self._period_scores: list[list[float]] = [[] for _ in range(schedule.runs)]
        self._period_diverged = [False] * schedule.runs
        self._period_best: dict[int, dict] = {}  # swap_from="best": each local run's state at its best epoch
        self._common_start = not same_start
        self.add_event_handler(Events.COMPLETED, lambda _: [m.finish() for m in self.members])

    def run(self) -> Any:  # type: ignore[override]
        """Train the population to ``max_epochs``. On any error, or Ctrl-C, the runs left interrupted are ended
        first (``Member.abandon``), so the error is the last thing said. Ctrl-C raises a ``KeyboardInterrupt``
        saying how to continue (a subclass would lose Python's exit status of an interrupt, 130)."""
        try:
            return super().run(data=None, max_iters=self.max_epochs, epoch_length=self.schedule.period)
        except BaseException as error:
            for m in self.members:
                m.abandon()
            if isinstance(error, KeyboardInterrupt):
                raise KeyboardInterrupt("interrupted; resume with --resume true") from error
            raise

    # --- communication: trivial in one process, collectives across processes ---------------------------------
    def _owner(self, run: int) -> int:
        return run % self.world_size

    def _member(self, run: int) -> Member | None:
        return next((m for m in self.members if m.index == run), None)

    def _broadcast(self, obj: Any, src: int) -> Any:
        if self.world_size == 1:
            return obj
        box = [_to_cpu(obj) if self.rank == src else None]
        torch.distributed.broadcast_object_list(box, src=src, device=idist.device() if idist.backend() == "nccl" else None)
        return box[0]

    def _gather_rows(self, local: dict[int, list[float]]) -> list[list[float]]:
        width = len(next(iter(local.values())))
        table = torch.full((self.schedule.runs, width), math.nan, dtype=torch.float64)
        for run, row in local.items():
            table[run] = torch.tensor(row, dtype=torch.float64)
        if self.world_size > 1:
            gathered = idist.all_gather(table.to(idist.device())).cpu().reshape(self.world_size, self.schedule.runs, width)
            table = torch.stack([gathered[self._owner(r), r] for r in range(self.schedule.runs)])
        return table.tolist()

    def spread(self, source: int, saved: Mapping | None = None) -> None:
        """Copy run ``source``'s swap state (its live one, or ``saved``, kept by its owner) to every run, then
        re-apply every run's own hyperparameters. The source keeps its live state unless ``saved`` replaces it."""
        member = self._member(source)
        local = (saved if saved is not None else member.swap_state()) if member is not None else None
        state = self._broadcast(local, self._owner(source))
        for m in self.members:
            if m.index != source or saved is not None:  # every receiver needs its own copy of the tensors
                m.load_swap_state(copy.deepcopy(state))
        for control in self.controls:
            control.apply()

    # --- one iteration: one epoch of every run ------------------------------------------------------------------
    def _epoch(self, engine: Engine, _: Any) -> dict:
        epoch = self.state.iteration
        if not self._common_start:  # all runs start from run 0's initial weights (and state)
            self._common_start = True
            if epoch == 1:
                self.spread(0)
        local = {}
        for m in self.members:
            if self._period_diverged[m.index]:  # idle until the swap respawns it
                local[m.index] = [self.schedule.lr(m.index, epoch * self.schedule.epoch_length - 1), math.nan, math.nan, 1.0]
                continue
            m.train_epoch()
            if m.trainer.state.epoch != epoch:
                raise RuntimeError(f"AutoLR run {m.index} is at epoch {m.trainer.state.epoch}, expected {epoch}")
            if not m.diverged and not m.finite():
                m.diverged = True
                logger.warning("AutoLR run %d: non-finite weights after epoch %d; it cannot win this period and is "
                               "respawned from the winner", m.index, epoch)  # fmt: skip
                self.fire_event(AutoLREvents.RUN_DIVERGED)
            score = math.nan if m.diverged else m.score()
            loss = math.nan if m.diverged else float(m.trainer.state.metrics.get("train_loss", math.nan))
            local[m.index] = [float(m.optimizer.param_groups[0]["lr"]), loss, score, float(m.diverged)]
        rows = self._gather_rows(local)
        for run, (lr, loss, score, diverged) in enumerate(rows):
            self._period_diverged[run] = self._period_diverged[run] or bool(diverged)
            self._period_scores[run].append(score)
            self.history.append({"epoch": epoch, "run": run, "lr": lr, "train_loss": loss, "val_dice": score,
                                 "diverged": bool(diverged)})  # fmt: skip
        if all(self._period_diverged):  # stop now, before a checkpoint of a population with nothing to continue from
            raise PopulationDivergedError(
                f"all {self.schedule.runs} AutoLR runs diverged by epoch {epoch} (period {len(self.periods) + 1}): "
                "there is no run to continue from. The checkpoints written before this period are intact; train "
                "again with lower rates (autolr#initial_lrs), from scratch, since a checkpoint keeps its own rates")
        self._keep_best(epoch, [row[2] for row in rows])
        if self.swap_from == "best":
            self._keep_period_best()
        if epoch % self.schedule.period == 0:  # before ITERATION_COMPLETED: checkpoints hold the swapped population
            self._end_period()
        return {"epoch": epoch, "scores": [row[2] for row in rows]}

    def _keep_best(self, epoch: int, scores: list[float]) -> None:
        finite = [(s, r) for r, s in enumerate(scores) if math.isfinite(s)]
        if not finite or max(finite)[0] <= self.best["score"]:
            return
        score, run = max(finite, key=lambda sr: (sr[0], -sr[1]))
        self.best = {"score": score, "run": run, "epoch": epoch}
        member = self._member(run)
        weights = self._broadcast(member.trainer.network.state_dict() if member is not None else None, self._owner(run))
        if self.best_model_path and self.rank == 0:
            os.makedirs(os.path.dirname(os.path.abspath(self.best_model_path)), exist_ok=True)
            partial = self.best_model_path + ".partial"
            torch.save(_to_cpu(weights), partial)
            os.replace(partial, self.best_model_path)
        logger.info("AutoLR: new best validation score %.4f (run %d, epoch %d)", score, run, epoch)

    def _keep_period_best(self) -> None:
        """``swap_from="best"``: keep each local run's swap state after the epoch that raised its period maximum."""
        for m in self.members:
            scores = self._period_scores[m.index]
            if not self._period_diverged[m.index] and math.isfinite(scores[-1]) and scores[-1] == best_score(scores) \
                    and scores[-1] not in scores[:-1]:  # fmt: skip
                self._period_best[m.index] = _to_cpu(copy.deepcopy(m.swap_state()))

    def _end_period(self) -> None:
        start = time.perf_counter()
        epoch = self.state.iteration
        scores = self._period_scores
        winner = select_winner(scores, self.schedule.factors["lr"], self._period_diverged)
        star = self.schedule.spawn(winner, epoch * self.schedule.epoch_length, self._period_diverged)
        saved = None
        if self.swap_from == "best" and self._owner(winner) == self.rank:
            saved = self._period_best.get(winner)
            if saved is None:  # only after resuming, mid-period, from a checkpoint of an 'end' training
                logger.warning("AutoLR: no best-epoch state of run %d was kept in this period (resumed from a "
                               "checkpoint saved with autolr#swap_from 'end'); copying its end-of-period state",
                               winner)  # fmt: skip
        self.spread(winner, saved)
        self._period_best = {}
        for m in self.members:  # a run that diverged idled: it rejoins at the common epoch
            if self._period_diverged[m.index]:
                m.trainer.state.epoch, m.trainer.state.iteration = epoch, epoch * self.schedule.epoch_length
            m.diverged = False
        seconds = time.perf_counter() - start
        record = {"period": len(self.periods) + 1, "epoch": epoch, "winner": winner,
                  "best_scores": [best_score(s) for s in scores], "diverged": list(self._period_diverged),
                  "star": star, "next": {k: list(v) for k, v in self.schedule.current.items()},
                  "swap_seconds": seconds}  # fmt: skip
        self.periods.append(record)
        logger.info("AutoLR period %d (epoch %d): run %d wins with %.4f; eta* = %.4g; next rates %s; swap %.2f s",
                    record["period"], epoch, winner, record["best_scores"][winner], star["lr"],
                    ", ".join(f"{v:.4g}" for v in record["next"]["lr"]), seconds)  # fmt: skip
        self._period_scores = [[] for _ in range(self.schedule.runs)]
        self._period_diverged = [False] * self.schedule.runs
        self.fire_event(AutoLREvents.PERIOD_COMPLETED)

    # --- checkpointing ----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:  # type: ignore[override]
        """The whole population: engine counters, schedule, history, and every run's swap, trainer and random state
        (gathered to process 0, which writes the checkpoints; elsewhere other processes' runs are None)."""
        local = {m.index: _to_cpu(m.state_dict()) for m in self.members}
        if self.world_size > 1:  # process 0 saves the checkpoint: gather every run's state there only
            parts: list[Any] | None = [None] * self.world_size if self.rank == 0 else None
            torch.distributed.gather_object(local, parts, dst=0)
            if self.rank == 0:
                local = {k: v for part in parts for k, v in part.items()}
        return {"engine": super().state_dict(), "schedule": self.schedule.state_dict(),
                "members": [local.get(i) for i in range(self.schedule.runs)], "history": copy.deepcopy(self.history),
                "periods": copy.deepcopy(self.periods), "best": dict(self.best),
                "period_scores": copy.deepcopy(self._period_scores), "period_diverged": list(self._period_diverged),
                "period_best": {str(run): state for run, state in self._gather_period_best().items()},
                **({"fingerprint": copy.deepcopy(self.fingerprint)} if self.fingerprint is not None else {})}  # fmt: skip

    def _gather_period_best(self) -> dict[int, dict]:
        local = dict(self._period_best)
        if self.world_size > 1:
            parts: list[Any] | None = [None] * self.world_size if self.rank == 0 else None
            torch.distributed.gather_object(local, parts, dst=0)
            local = {k: v for part in parts for k, v in part.items()} if self.rank == 0 else {}
        return local

    def _check_fingerprint(self, saved: Mapping | None) -> None:
        if self.fingerprint is None:
            return
        if saved is None:
            logger.warning("AutoLR: the checkpoint has no record of its training data and settings (saved by an "
                           "earlier version): resuming without checking that they are this training's")  # fmt: skip
            return
        found = fingerprint_differences(saved, self.fingerprint)
        if found:
            more = f" (and {len(found) - 3} more)" if len(found) > 3 else ""
            raise ValueError(f"AutoLR checkpoint was saved by a training with other data or settings: "
                             f"{'; '.join(found[:3])}{more}; resume with those, or train afresh into another --run_dir")  # fmt: skip

    def load_state_dict(self, state: Mapping) -> None:  # type: ignore[override]
        self._check_fingerprint(state.get("fingerprint"))
        if len(state["members"]) != self.schedule.runs:
            raise ValueError(f"AutoLR checkpoint has {len(state['members'])} runs, this population has {self.schedule.runs}")
        super().load_state_dict(state["engine"])
        if self.state.iteration > self.max_epochs:
            raise ValueError(f"AutoLR checkpoint is at epoch {self.state.iteration}, beyond max_epochs ({self.max_epochs})")
        self.state.max_iters = self.max_epochs  # the config's max_epochs wins: a resumed run can be extended
        self.schedule.load_state_dict(state["schedule"])
        for m in self.members:
            m.load_state_dict(state["members"][m.index])
            m.trainer.state.max_epochs = self.max_epochs
        self.history, self.periods = list(state["history"]), list(state["periods"])
        self.best = dict(state["best"])
        self._period_scores = [list(s) for s in state["period_scores"]]
        self._period_diverged = [bool(d) for d in state["period_diverged"]]
        local = {m.index for m in self.members}
        self._period_best = {int(run): saved for run, saved in state.get("period_best", {}).items() if int(run) in local}
        self._common_start = True
        for control in self.controls:
            control.apply()
