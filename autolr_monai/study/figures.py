"""The study's figures, laid out as the paper's figure 3: (a)/(c) validation Dice of every arm over updates,
without/with isample; (b)/(d) the rate AutoLR finds against that of the best step schedule."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

from .arms import Arm
from .curves import Curve

COLORS = {"Sched A": "tab:blue", "Sched B": "tab:green", "AutoLR": "tab:red"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _mean_curve(seeds: Mapping[int, Curve], key: str) -> tuple[list[int], list[float], list[float], list[float]]:
    curves = list(seeds.values())
    length = min(len(c.updates) for c in curves)
    mean, low, high = [], [], []
    for i in range(length):
        values = [getattr(c, key)[i] for c in curves if math.isfinite(getattr(c, key)[i])]
        mean.append(sum(values) / len(values) if values else math.nan)
        low.append(min(values, default=math.nan))
        high.append(max(values, default=math.nan))
    return curves[0].updates[:length], mean, low, high


def _settings(curves: Mapping[Arm, Mapping[int, Curve]]) -> list[bool]:
    return [s for s in (False, True) if any(a.isample == s for a in curves)]


def figure3_dice(curves: Mapping[Arm, Mapping[int, Curve]], path: str, early: float = 0.25) -> str:
    """Figure 3a/3c: mean validation Dice over seeds (line) and its range (band) for each arm."""
    plt = _pyplot()
    settings = _settings(curves)
    fig, axes = plt.subplots(1, len(settings), figsize=(6.2 * len(settings), 4.2), squeeze=False, sharey=True)
    for ax, isample in zip(axes[0], settings):
        for arm, seeds in curves.items():
            if arm.isample != isample:
                continue
            x, mean, low, high = _mean_curve(seeds, "dice")
            color = COLORS.get(arm.schedule)
            ax.plot(x, mean, color=color, lw=1.6, label=f"{arm.label} ({len(seeds)} seeds)")
            ax.fill_between(x, low, high, color=color, alpha=0.18, lw=0)
            budget = x[-1]
        ax.axvline(early * budget, color="0.5", ls=":", lw=1)
        ax.set_title(f"({'c' if isample else 'a'}) {'with' if isample else 'without'} isample")
        ax.set_xlabel(f"SGD updates per run (dotted: {early:.0%} of the budget, Table 1's first row)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    axes[0][0].set_ylabel("mean validation Dice (band: range over seeds)")
    fig.tight_layout()
    return _save(fig, plt, path)


def figure3_lr(curves: Mapping[Arm, Mapping[int, Curve]], study: Mapping, path: str) -> str:
    """Figure 3b/3d: AutoLR's continuing rate (eta*, one line per seed) and the rate of the step schedule with the
    best mean Dice at the full budget (``study`` from ``summarize``)."""
    plt = _pyplot()
    settings = _settings(curves)
    final = f"{study['fractions'][-1]:g}"
    fig, axes = plt.subplots(1, len(settings), figsize=(6.2 * len(settings), 4.2), squeeze=False, sharey=True)
    for ax, isample in zip(axes[0], settings):
        scheds = [a for a in study["arms"] if a["isample"] == isample and a["schedule"] != "AutoLR"]
        if scheds:
            best = max(scheds, key=lambda a: a["dice"][final]["mean"])
            arm = next(a for a in curves if a.name == best["name"])
            first = next(iter(curves[arm].values()))
            ax.plot(first.updates, first.lr, color="k", ls="--", lw=1.6, label=f"best step schedule: {arm.label}")
        for arm, seeds in curves.items():
            if arm.isample == isample and arm.autolr:
                for i, (seed, curve) in enumerate(sorted(seeds.items())):
                    ax.plot(curve.updates, curve.lr, color=COLORS["AutoLR"], lw=1.2, alpha=1.0 - 0.25 * i,
                            label=f"{arm.label}, seed {seed}")  # fmt: skip
        ax.set_yscale("log")
        ax.set_title(f"({'d' if isample else 'b'}) {'with' if isample else 'without'} isample")
        ax.set_xlabel("SGD updates per run")
        ax.grid(alpha=0.3, which="both")
        ax.legend(loc="lower left", fontsize=8)
    axes[0][0].set_ylabel("learning rate (AutoLR: the factor-1 run, eta*)")
    fig.tight_layout()
    return _save(fig, plt, path)


def _save(fig, plt, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
