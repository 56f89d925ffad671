"""The six arms of the paper's Table 1, each a combination of the bundle's own config overlays.

An arm never copies the pipeline: it is ``train.json`` (AutoLR, isample on), optionally with ``sched_a.json`` or
``sched_b.json`` (one run, step schedule), and optionally ``isample#enabled false`` (class-balanced sampling).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Arm:
    name: str  # folder name and CLI name, e.g. "sched_a_is"
    label: str  # Table 1 column, e.g. "Sched A + is"
    overlay: str | None  # bundle config overlay after the profile's, or None for train.json's AutoLR
    isample: bool

    @property
    def autolr(self) -> bool:
        return self.overlay is None

    @property
    def schedule(self) -> str:
        """The arm's learning-rate method without the sampler: "Sched A", "Sched B" or "AutoLR"."""
        return self.label.removesuffix(" + is")

    def overrides(self) -> dict:
        return {} if self.isample else {"isample#enabled": False}


# the column order of Table 1
ARMS: tuple[Arm, ...] = (
    Arm("sched_a", "Sched A", "sched_a.json", False),
    Arm("sched_b", "Sched B", "sched_b.json", False),
    Arm("autolr", "AutoLR", None, False),
    Arm("sched_a_is", "Sched A + is", "sched_a.json", True),
    Arm("sched_b_is", "Sched B + is", "sched_b.json", True),
    Arm("autolr_is", "AutoLR + is", None, True),
)


def select_arms(names: Iterable[str] | str | None = None) -> list[Arm]:
    """The arms named (all six by default), in Table 1 order; an unknown name is an error that lists the known."""
    if names is None:
        return list(ARMS)
    names = [names] if isinstance(names, str) else list(names)
    known = {arm.name: arm for arm in ARMS}
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        problem = f"unknown {unknown}" if unknown else "no arm given"
        raise ValueError(f"arms: {problem}; expected names from {sorted(known)}")
    return [arm for arm in ARMS if arm.name in names]
