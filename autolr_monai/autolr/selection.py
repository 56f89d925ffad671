"""The population rule of Algorithm 1 (AutoLR): pick the winner of a period and spawn the next rates.

Pure functions and one small stateful schedule, with no engines, so the rule can be tested on scripted validation
scores and simulated without training (``AutoLRSchedule.simulate_values``, like Ignite's
``ParamScheduler.simulate_values``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence


class PopulationDivergedError(RuntimeError):
    """Every run of the population diverged within one period: there is no state to continue from."""


def best_score(scores: Sequence[float]) -> float:
    """``max[v_i]`` over the finite scores of one run in a period; NaN when it has none (it diverged at once)."""
    finite = [float(s) for s in scores if math.isfinite(float(s))]
    return max(finite) if finite else math.nan


def select_winner(scores: Sequence[Sequence[float]], factors: Sequence[float], diverged: Sequence[bool] = ()) -> int:
    """Algorithm 1, line 6: ``R* = argmax_i max[v_i]`` over the runs' validation scores of one period.

    A run that diverged (non-finite training loss) cannot win, whatever it scored before. Ties go to the run whose
    factor is nearest 1, the run that continued at the previous rate (changing the rate needs evidence), then to
    the lower index.
    """
    if len(scores) != len(factors):
        raise ValueError(f"got scores of {len(scores)} runs for {len(factors)} factors")
    diverged = list(diverged) or [False] * len(scores)
    candidates = [(best_score(s), i) for i, s in enumerate(scores) if not diverged[i]]
    candidates = [(b, i) for b, i in candidates if math.isfinite(b)]
    if not candidates:
        raise PopulationDivergedError(
            f"all {len(scores)} AutoLR runs diverged or have no finite validation score in this period; "
            "train again with lower initial rates (autolr#initial_lrs; a checkpoint keeps its own rates, so start "
            "from scratch rather than from autolr#resume_from)"
        )
    top = max(b for b, _ in candidates)
    return min((abs(math.log(factors[i])), i) for b, i in candidates if b == top)[1]


class AutoLRSchedule:
    """Learning rate (and optionally other optimizer hyperparameters) of every run of an AutoLR population.

    - Start: run ``i`` has ``initial[name][i]`` (the paper: lr 0.05, 0.01, 0.005).
    - ``spawn(winner)`` at the end of a period (Algorithm 1, lines 7-8): ``eta* = `` the winner's value (the rate it
      was set to, even if a warm-up longer than the period had not reached it yet) and run ``i`` continues at
      ``eta* * factors[name][i]`` (the paper: lambda = 2, 1, 0.5).
    - Learning rate warm-up (section 4.1): over ``warmup_epochs`` epochs after the start and after every change, the
      rate moves linearly, iteration by iteration, from the run's previous rate (0 at the start) to its new one:
      iteration ``k`` of the ramp (0-based) gets ``previous + (new - previous) (k + 1) / W``. Other hyperparameters
      (momentum, weight decay) change at once.

    Iterations are 0-based and count every training step of a run (``engine.state.iteration - 1``).
    """

    def __init__(
        self,
        initial_lrs: Sequence[float],
        factors: Sequence[float],
        period: int,
        epoch_length: int,
        warmup_epochs: int = 10,
        hyperparameters: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
    ) -> None:
        specs = {"lr": {"initial": list(initial_lrs), "factors": list(factors)}}
        for name, spec in (hyperparameters or {}).items():
            if name == "lr":
                raise ValueError("the learning rate is set by initial_lrs and factors, not in hyperparameters")
            specs[name] = {"initial": list(spec["initial"]), "factors": list(spec["factors"])}
        runs = len(specs["lr"]["initial"])
        if runs < 1:
            raise ValueError("AutoLR needs at least one run (R >= 1): autolr#initial_lrs and autolr#factors are empty")
        for name, spec in specs.items():
            if runs < 1 or len(spec["initial"]) != runs or len(spec["factors"]) != runs:
                raise ValueError(f"AutoLR {name}: give one initial value and one factor per run, got "
                                 f"{len(spec['initial'])} initial values and {len(spec['factors'])} factors")  # fmt: skip
            if any(not (f > 0 and math.isfinite(f)) for f in spec["factors"]):
                raise ValueError(f"AutoLR {name}: factors must be finite and > 0, got {spec['factors']}")
        if any(not (v > 0) for v in specs["lr"]["initial"]):
            raise ValueError(f"AutoLR initial learning rates must be > 0, got {specs['lr']['initial']}")
        if period < 1 or epoch_length < 1 or warmup_epochs < 0:
            raise ValueError(f"AutoLR needs period >= 1, epoch_length >= 1 and warmup_epochs >= 0, got period={period}, "
                             f"epoch_length={epoch_length}, warmup_epochs={warmup_epochs}")  # fmt: skip
        self.runs, self.period, self.epoch_length = runs, int(period), int(epoch_length)
        self.warmup_iterations = int(warmup_epochs) * self.epoch_length
        self.factors = {name: spec["factors"] for name, spec in specs.items()}
        self.current = {name: [float(v) for v in spec["initial"]] for name, spec in specs.items()}
        self.previous_lr = [0.0] * runs
        self.switch_iteration = 0
        self.winners: list[int] = []

    @property
    def names(self) -> list[str]:
        return list(self.current)

    def lr(self, run: int, iteration: int) -> float:
        """The learning rate of ``run`` at (0-based) ``iteration``, warm-up included."""
        target, step = self.current["lr"][run], iteration - self.switch_iteration
        if step < 0:  # before the last switch: the rate reached at the switch
            return self.previous_lr[run]
        if self.warmup_iterations <= 1 or step >= self.warmup_iterations - 1:
            return target
        previous = self.previous_lr[run]
        return previous + (target - previous) * (step + 1) / self.warmup_iterations

    def values(self, run: int, iteration: int) -> dict[str, float]:
        """Every controlled hyperparameter of ``run`` at ``iteration``."""
        return {name: self.lr(run, iteration) if name == "lr" else values[run] for name, values in self.current.items()}

    def spawn(self, winner: int, iteration: int, diverged: Sequence[bool] = ()) -> dict[str, float]:
        """Algorithm 1, lines 7-8, from (0-based) ``iteration`` on; returns the winner's values (``eta*``).

        A run that diverged warms up from ``eta*`` instead of from its own previous rate, which was too high.
        """
        if not 0 <= winner < self.runs:
            raise IndexError(f"winner {winner} is not one of the {self.runs} runs")
        star = {name: values[winner] for name, values in self.current.items()}
        diverged = list(diverged) or [False] * self.runs
        self.previous_lr = [star["lr"] if diverged[i] else self.lr(i, iteration - 1) for i in range(self.runs)]
        for name, value in star.items():
            self.current[name] = [value * f for f in self.factors[name]]
        self.switch_iteration = int(iteration)
        self.winners.append(int(winner))
        return star

    def state_dict(self) -> dict:
        return {"current": {k: list(v) for k, v in self.current.items()}, "previous_lr": list(self.previous_lr),
                "switch_iteration": self.switch_iteration, "winners": list(self.winners)}  # fmt: skip

    def load_state_dict(self, state: Mapping) -> None:
        if set(state["current"]) != set(self.current) or any(len(v) != self.runs for v in state["current"].values()):
            raise ValueError(f"AutoLR checkpoint controls {sorted(state['current'])} for "
                             f"{len(state['previous_lr'])} runs; this population controls {self.names} for "
                             f"{self.runs} runs")  # fmt: skip
        self.current = {k: [float(x) for x in v] for k, v in state["current"].items()}
        self.previous_lr = [float(x) for x in state["previous_lr"]]
        self.switch_iteration = int(state["switch_iteration"])
        self.winners = [int(w) for w in state["winners"]]

    def simulate_values(
        self, num_epochs: int, scores: Callable[[int, int, float], float] | Sequence[Sequence[float]]
    ) -> list[tuple[int, int, float, float]]:
        """Run Algorithm 1 on scripted validation scores without training, from the current state (which it changes).

        ``scores`` is ``scores[epoch][run]`` (0-based epochs) or a function ``(epoch, run, lr) -> score``. Returns
        ``(epoch, run, lr at the epoch's last iteration, score)`` for every epoch and run, like Ignite's
        ``ParamScheduler.simulate_values``, for plotting or testing a schedule.
        """
        rows, period_scores = [], [[] for _ in range(self.runs)]
        for epoch in range(num_epochs):
            last = (epoch + 1) * self.epoch_length - 1
            for run in range(self.runs):
                lr = self.lr(run, last)
                score = scores(epoch, run, lr) if callable(scores) else scores[epoch][run]
                period_scores[run].append(score)
                rows.append((epoch, run, lr, score))
            if (epoch + 1) % self.period == 0:
                self.spawn(select_winner(period_scores, self.factors["lr"]), last + 1)
                period_scores = [[] for _ in range(self.runs)]
        return rows
