"""Learning-rate schedules of section 4.1 as Ignite ``PiecewiseLinear`` milestones.

A step schedule ('Sched A': eta_0 = 0.05, 'Sched B': eta_0 = 0.025; factor 0.1 every gamma = 400 epochs) with a
linear warm-up over ``warmup_epochs`` whenever the rate changes: from (almost) zero at the start, and from the
previous rate to the new one at every step (Goyal et al. 2017). Piecewise linear in iterations, so Ignite's own
``PiecewiseLinear`` scheduler runs it, saves it in checkpoints and ``simulate_values`` plots it without training.
"""

from __future__ import annotations


def warmup_milestones(
    start_iteration: int, previous: float, target: float, warmup_iterations: int
) -> list[tuple[int, float]]:
    """Milestones of a linear ramp from ``previous`` to ``target``: iteration ``start + i`` gets
    ``previous + (target - previous) (i + 1) / warmup_iterations``, so the target is reached at the last
    iteration of the warm-up (and the first warm-up iteration already moves off ``previous``)."""
    if warmup_iterations <= 1:
        return [(start_iteration, target)]
    first = previous + (target - previous) / warmup_iterations
    return [(start_iteration, first), (start_iteration + warmup_iterations - 1, target)]


def step_decay_milestones(
    eta0: float,
    max_epochs: int,
    epoch_length: int,
    factor: float = 0.1,
    gamma: int = 400,
    warmup_epochs: int = 10,
) -> list[tuple[int, float]]:
    """``(iteration, lr)`` milestones of ``eta0 * factor ** (epoch // gamma)`` with a linear warm-up after every
    change, for ``ignite.handlers.PiecewiseLinear(optimizer, "lr", milestones_values=...)``."""
    if eta0 <= 0 or factor <= 0 or gamma < 1 or warmup_epochs < 0 or max_epochs < 1 or epoch_length < 1:
        raise ValueError(
            f"invalid step schedule: eta0={eta0}, factor={factor}, gamma={gamma}, warmup_epochs={warmup_epochs}, "
            f"max_epochs={max_epochs}, epoch_length={epoch_length} (expected eta0 > 0, factor > 0, gamma >= 1, "
            "warmup_epochs >= 0, max_epochs >= 1, epoch_length >= 1)"
        )
    if warmup_epochs >= gamma:
        raise ValueError(f"warmup_epochs ({warmup_epochs}) must be shorter than the step period gamma ({gamma})")
    warmup = warmup_epochs * epoch_length
    milestones = warmup_milestones(0, 0.0, eta0, warmup)
    rate = eta0
    for step_epoch in range(gamma, max_epochs, gamma):
        start = step_epoch * epoch_length
        milestones.append((start - 1, rate))
        rate, previous = rate * factor, rate
        milestones += warmup_milestones(start, previous, rate, warmup)
    return milestones
