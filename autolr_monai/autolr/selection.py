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
    - Warm-up (section 4.1: "a linear learning rate warm up ... for 10 epochs when starting to train or switching
      between learning rates"): over ``warmup_epochs`` epochs the rate moves linearly, iteration by iteration, to
      the run's new one: at the start from ``warmup_start`` (0 by default), after a switch from ``eta*``, because
      every run then carries the winner's weights and momentum, trained at ``eta*``. Iteration ``k`` of a ramp
      (0-based) gets ``start + (new - start) (k + 1) / W``; the run with lambda = 1 continues at ``eta*`` without a
      ramp (the paper's R_1), and so does a run that diverged (it is respawned from the winner like the others).
    - Other hyperparameters (``hyperparameters``: momentum, weight decay) change at the switch, at once, unless
      named in ``ramped``: then they ramp from the winner's value like the rate (and start at their initial value,
      without a ramp from ``warmup_start``).

    Args:
        initial_lrs: eta_i of the first period, one per run (Algorithm 1, line 1).
        factors: lambda_i (Algorithm 1, line 8).
        period: gamma, epochs between selections.
        epoch_length: iterations per epoch.
        warmup_epochs: W in epochs; 0 or 1 iteration means no ramp.
        hyperparameters: ``{name: {"initial": [...], "factors": [...]}}`` controlled like the rate.
        warmup_start: the rate the very first warm-up starts from.
        ramped: the names that ramp after a switch (``"lr"`` and any of ``hyperparameters``).

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
        warmup_start: float = 0.0,
        ramped: Sequence[str] = ("lr",),
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
        if not (math.isfinite(warmup_start) and warmup_start >= 0):
            raise ValueError(f"autolr#warmup_start: expected a rate >= 0, got {warmup_start}")
        unknown = sorted(set(ramped) - set(specs))
        if unknown:
            raise ValueError(f"autolr#ramped names {unknown}, which AutoLR does not control; expected some of "
                             f"{sorted(specs)} (autolr#hyperparameters adds names)")  # fmt: skip
        self.runs, self.period, self.epoch_length = runs, int(period), int(epoch_length)
        self.warmup_iterations = int(warmup_epochs) * self.epoch_length
        self.ramped = [name for name in specs if name in set(ramped)]
        self.factors = {name: spec["factors"] for name, spec in specs.items()}
        self.current = {name: [float(v) for v in spec["initial"]] for name, spec in specs.items()}
        self.ramp_start = {name: [float(warmup_start)] * runs if name == "lr" else list(self.current[name])
                           for name in self.ramped}  # fmt: skip
        self.switch_iteration = 0
        self.winners: list[int] = []

    @property
    def names(self) -> list[str]:
        return list(self.current)

    def value(self, name: str, run: int, iteration: int) -> float:
        """Hyperparameter ``name`` of ``run`` at (0-based) ``iteration``, warm-up included."""
        target = self.current[name][run]
        if name not in self.ramp_start or self.warmup_iterations <= 1:
            return target
        start, step = self.ramp_start[name][run], iteration - self.switch_iteration
        if step >= self.warmup_iterations - 1:
            return target
        return start + (target - start) * (max(step, -1) + 1) / self.warmup_iterations

    def lr(self, run: int, iteration: int) -> float:
        """The learning rate of ``run`` at (0-based) ``iteration``, warm-up included."""
        return self.value("lr", run, iteration)

    def values(self, run: int, iteration: int) -> dict[str, float]:
        """Every controlled hyperparameter of ``run`` at ``iteration``."""
        return {name: self.value(name, run, iteration) for name in self.current}

    def spawn(self, winner: int, iteration: int, diverged: Sequence[bool] = ()) -> dict[str, float]:
        """Algorithm 1, lines 7-8, from (0-based) ``iteration`` on; returns the winner's values (``eta*``).

        Every run, a diverged one included (``diverged`` is accepted for the record; the rule is the same), ramps
        from the winner's values, whose weights it now carries.
        """
        if not 0 <= winner < self.runs:
            raise IndexError(f"winner {winner} is not one of the {self.runs} runs")
        star = {name: values[winner] for name, values in self.current.items()}
        self.ramp_start = {name: [star[name]] * self.runs for name in self.ramped}
        for name, value in star.items():
            self.current[name] = [value * f for f in self.factors[name]]
        self.switch_iteration = int(iteration)
        self.winners.append(int(winner))
        return star

    def state_dict(self) -> dict:
        return {"current": {k: list(v) for k, v in self.current.items()},
                "ramp_start": {k: list(v) for k, v in self.ramp_start.items()},
                "switch_iteration": self.switch_iteration, "winners": list(self.winners)}  # fmt: skip

    def load_state_dict(self, state: Mapping) -> None:
        saved_runs = len(next(iter(state["current"].values())))
        if set(state["current"]) != set(self.current) or any(len(v) != self.runs for v in state["current"].values()):
            raise ValueError(f"AutoLR checkpoint controls {sorted(state['current'])} for {saved_runs} runs; this "
                             f"population controls {self.names} for {self.runs} runs")  # fmt: skip
        if "ramp_start" not in state:
            raise ValueError("AutoLR checkpoint was saved by a version before 0.5.0 whose warm-up started from each "
                             "run's own previous rate: it cannot continue under this rule; train afresh")  # fmt: skip
        if set(state["ramp_start"]) != set(self.ramp_start):
            raise ValueError(f"AutoLR checkpoint ramps {sorted(state['ramp_start'])} after a switch, this population "
                             f"{sorted(self.ramp_start)} (autolr#ramped)")  # fmt: skip
        self.current = {k: [float(x) for x in v] for k, v in state["current"].items()}
        self.ramp_start = {k: [float(x) for x in v] for k, v in state["ramp_start"].items()}
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
