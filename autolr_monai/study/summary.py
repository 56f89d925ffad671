"""Table 1 from the arms' curves: validation Dice at fractions of the update budget (mean and spread over seeds),
updates to reach a Dice threshold, and a plain check of each of the paper's claims on this data.

Each claim gets a verdict: "yes" or "no" when the difference of means exceeds the seed SD of both arms compared,
"inconclusive" when it does not, "yes (1 seed)" / "no (1 seed)" when there is no spread to judge by, and "not
tested" when the arms it needs were not run or have no validation score at that point.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

from .arms import Arm
from .curves import Curve

FRACTIONS = (0.25, 1.0)  # Table 1: after 25k and 100k of 100k updates
THRESHOLD_SHARE = 0.9  # default threshold: this share of the best arm's mean Dice at the full budget


def index_at(curve: Curve, fraction: float) -> int:
    """Index of the first epoch that completes ``fraction`` of the curve's update budget."""
    target = fraction * curve.updates[-1]
    return next(i for i, u in enumerate(curve.updates) if u >= target - 1e-9)


def value_at(curve: Curve, fraction: float, key: str = "dice") -> float:
    """Validation Dice at the first epoch that completes ``fraction`` of the budget, or at the last validated
    epoch before it (with ``val_interval`` > 1 some epochs have none); NaN if there is none."""
    values = getattr(curve, key)[: index_at(curve, fraction) + 1]
    return next((v for v in reversed(values) if math.isfinite(v)), math.nan)


def updates_to_reach(curve: Curve, threshold: float) -> int | None:
    """Updates per run until the validation Dice first reaches ``threshold``; None if it never does."""
    return next((u for u, d in zip(curve.updates, curve.dice) if math.isfinite(d) and d >= threshold), None)


def _spread(values: Sequence[float]) -> dict:
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) < len(values) or not finite:  # a seed without a score: no mean to compare
        return {"mean": math.nan, "sd": math.nan, "min": math.nan, "max": math.nan, "values": list(values)}
    return {"mean": statistics.fmean(finite), "sd": statistics.stdev(finite) if len(finite) > 1 else 0.0,
            "min": min(finite), "max": max(finite), "values": list(values)}  # fmt: skip


def summarize(curves: Mapping[Arm, Mapping[int, Curve]], threshold: float | None = None,
              fractions: Sequence[float] = FRACTIONS) -> dict:  # fmt: skip
    """The study's record: per arm (Table 1 order as given) the Dice at each fraction of the budget over seeds
    (for AutoLR also the best of its runs, ``best_of_runs``), the updates to reach ``threshold`` (default:
    ``THRESHOLD_SHARE`` of the best arm's mean final Dice), and the claims. All arms must share one budget."""
    budgets = {c.updates[-1] for seeds in curves.values() for c in seeds.values()}
    if len(budgets) != 1:
        raise ValueError(f"the arms were trained for different numbers of updates {sorted(budgets)}; Table 1 "
                         "compares arms at the same budget")  # fmt: skip
    arms = []
    for arm, seeds in curves.items():
        order = sorted(seeds)
        record = {"name": arm.name, "label": arm.label, "schedule": arm.schedule, "isample": arm.isample,
                  "runs": seeds[order[0]].runs, "seeds": order,
                  "dice": {f"{f:g}": _spread([value_at(seeds[s], f) for s in order]) for f in fractions}}  # fmt: skip
        if arm.autolr:
            record["best_of_runs"] = {f"{f:g}": _spread([value_at(seeds[s], f, "best_of_runs") for s in order])
                                      for f in fractions}  # fmt: skip
            record["schedule_shape"] = [rise_then_decay(seeds[s]) for s in order]
        arms.append(record)
    final = f"{fractions[-1]:g}"
    rule = "given"
    if threshold is None:
        best = max((a["dice"][final]["mean"] for a in arms if math.isfinite(a["dice"][final]["mean"])), default=math.nan)
        threshold, rule = round(THRESHOLD_SHARE * best, 3), f"{THRESHOLD_SHARE:g} x the best arm's mean Dice at the full budget"
    for arm, record in zip(curves, arms):
        reached = [updates_to_reach(curves[arm][s], threshold) for s in record["seeds"]]
        done = [u for u in reached if u is not None]
        record["updates_to_threshold"] = {"mean": statistics.fmean(done) if done else None, "values": reached,
                                          "reached": len(done), "of": len(reached)}  # fmt: skip
    first = next(iter(next(iter(curves.values())).values()))
    study = {"budget_updates": budgets.pop(), "fractions": list(fractions),
             "updates_at": {f"{f:g}": first.updates[index_at(first, f)] for f in fractions}, "threshold": threshold,
             "threshold_rule": rule, "arms": arms}  # fmt: skip
    study["claims"] = claims(study)
    return study


def rise_then_decay(curve: Curve) -> dict:
    """Figures 2b, 3b, 3d: the rate AutoLR continues at (eta*, one per period) against the rate its factor-1 run
    started at (``start``, 0.01 with the paper's runs): does eta* rise above it (the paper's reading: the 0.05 run
    wins period 1), does a later period climb above the first period's eta* (a stricter reading), and does eta*
    end below its peak?"""
    periods = curve.periods or []
    path = [p["star"]["lr"] for p in periods]
    start = curve.lr[curve.epochs.index(periods[0]["epoch"])] if periods else math.nan  # after period 1's warm-up
    peak = max(path, default=math.nan)
    return {"eta_star": path, "start": start, "rises": bool(path) and peak > start * (1 + 1e-6),
            "rises_after_first_period": len(path) > 1 and max(path[1:]) > path[0] * (1 + 1e-6),
            "decays_after_peak": bool(path) and path[-1] < peak * (1 - 1e-6)}  # fmt: skip


def _arm(study: Mapping, schedule: str, isample: bool) -> dict | None:
    return next((a for a in study["arms"] if a["schedule"] == schedule and a["isample"] == isample), None)


def _mean(arm: Mapping, fraction: str) -> float:
    return arm["dice"][fraction]["mean"]


def _verdict(held: bool | None, beyond_spread: bool | None) -> str:
    if held is None:
        return "not tested"
    if beyond_spread is None:
        return f"{'yes' if held else 'no'} (1 seed)"
    return ("yes" if held else "no") if beyond_spread else "inconclusive"


def _versus(first: Mapping, second: Mapping, fraction: str) -> dict:
    """Does ``first`` score higher than ``second`` at ``fraction`` of the budget, beyond the seed spread?"""
    a, b = _mean(first, fraction), _mean(second, fraction)
    if not (math.isfinite(a) and math.isfinite(b)):
        return {"held": None, "verdict": "not tested",
                "evidence": f"no validation score for every seed of {first['label']} and {second['label']}"}  # fmt: skip
    sds = (first["dice"][fraction]["sd"], second["dice"][fraction]["sd"])
    single = len(first["seeds"]) < 2 or len(second["seeds"]) < 2
    beyond = None if single else abs(a - b) > max(sds)
    spread = "one seed" if single else f"seed SDs {sds[0]:.3f}, {sds[1]:.3f}"
    return {"held": a > b, "verdict": _verdict(a > b, beyond),
            "evidence": f"{first['label']} {a:.3f} vs {second['label']} {b:.3f} ({a - b:+.3f}; {spread})"}  # fmt: skip


def claims(study: Mapping) -> list[dict]:
    """Each of the paper's claims: ``held`` (True/False, None when not tested), ``verdict`` and the numbers."""
    early, final = (f"{f:g}" for f in (study["fractions"][0], study["fractions"][-1]))
    share = f"{study['fractions'][0]:.0%}"
    out = []
    for isample, paper in ((False, "0.827 vs 0.788"), (True, "0.866 vs 0.839")):
        auto = _arm(study, "AutoLR", isample)
        scheds = [a for a in (_arm(study, "Sched A", isample), _arm(study, "Sched B", isample)) if a]
        suffix = " with isample" if isample else " without isample"
        for text, fraction, auto_first in (
            (f"AutoLR beats the best step schedule after {share} of the budget{suffix} (paper: {paper})", early, True),
            (f"at the full budget the best step schedule catches up with AutoLR{suffix} (paper: slightly better)",
             final, False),
        ):  # fmt: skip
            claim = {"claim": text, "held": None, "verdict": "not tested"}
            if auto and scheds:
                best = max(scheds, key=lambda a: -math.inf if math.isnan(_mean(a, fraction)) else _mean(a, fraction))
                claim.update(_versus(auto, best, fraction) if auto_first else _versus(best, auto, fraction))
            out.append(claim)
    out.append(_isample_claim(study))
    a, b = _arm(study, "Sched A", True), _arm(study, "Sched B", True)
    a0, b0 = _arm(study, "Sched A", False), _arm(study, "Sched B", False)
    claim = {"claim": "with isample the higher rate (Sched A) is the better step schedule at the full budget, "
                      "without it the lower (Sched B)", "held": None, "verdict": "not tested"}  # fmt: skip
    if a and b and a0 and b0:
        with_is, without = _versus(a, b, final), _versus(b0, a0, final)
        parts = [with_is["verdict"], without["verdict"]]
        if "not tested" not in parts:
            claim["held"] = bool(with_is["held"] and without["held"])
            if "no" in parts:  # one half clearly contradicted
                claim["verdict"] = "no"
            elif all(v == "yes" for v in parts):
                claim["verdict"] = "yes"
            elif any("1 seed" in v for v in parts):
                claim["verdict"] = _verdict(claim["held"], None)
            else:
                claim["verdict"] = "inconclusive"
        claim["evidence"] = f"+ is: {with_is['evidence']}; without: {without['evidence']}"
    out.append(claim)
    autos = [a for a in study["arms"] if "schedule_shape" in a]
    shapes = [s for a in autos for s in a["schedule_shape"]]
    paths = "; ".join(f"{a['label']} seed {seed}: " + " ".join(f"{v:.3g}" for v in s["eta_star"])
                      for a in autos for seed, s in zip(a["seeds"], a["schedule_shape"]))  # fmt: skip
    for text, rise in (
        ("the schedule AutoLR finds first rises above its starting rate, then decays (figures 2b, 3b, 3d)", "rises"),
        ("stricter: after the first period AutoLR climbs to a higher rate than it first chose, then decays",
         "rises_after_first_period"),
    ):  # fmt: skip
        claim = {"claim": text, "held": None, "verdict": "not tested"}
        if shapes:
            count = sum(s[rise] and s["decays_after_peak"] for s in shapes)
            claim["held"] = count == len(shapes)
            claim["verdict"] = "yes" if claim["held"] else ("no" if count == 0 else f"in {count} of {len(shapes)} runs")
            start = ", ".join(sorted({f"{s['start']:.3g}" for s in shapes}))
            claim["evidence"] = f"{count} of {len(shapes)} AutoLR runs (starting rate {start}); eta* per period: {paths}"
        out.append(claim)
    return out


def _isample_claim(study: Mapping) -> dict:
    """isample's speed-up: per method, mean updates to the threshold with vs without it (an unreached seed counts
    as beyond the budget); "yes" if for every method each seed with isample is faster than each seed without, "no"
    if for some method each seed with isample is slower, "inconclusive" otherwise."""
    pairs = [(_arm(study, s, False), _arm(study, s, True)) for s in ("Sched A", "Sched B", "AutoLR")]
    pairs = [(a, b) for a, b in pairs if a and b]
    claim = {"claim": "isample speeds up training: with it, each method reaches the Dice threshold in fewer updates",
             "held": None, "verdict": "not tested"}  # fmt: skip
    if not pairs:
        return claim
    faster, clearly_faster, clearly_slower, lines = 0, 0, 0, []
    for without, with_ in pairs:
        u0, u1 = (_updates(a["updates_to_threshold"]["values"]) for a in (without, with_))
        faster += _mean_updates(u1) < _mean_updates(u0)
        clearly_faster += max(u1) < min(u0)
        clearly_slower += min(u1) > max(u0)
        lines.append(f"{without['schedule']}: {_fmt(u1)} with vs {_fmt(u0)} without")
    claim["held"] = faster == len(pairs)
    if any(len(a["seeds"]) < 2 for pair in pairs for a in pair):
        claim["verdict"] = _verdict(claim["held"], None)
    elif clearly_slower:
        claim["verdict"] = "no"
    else:
        claim["verdict"] = "yes" if claim["held"] and clearly_faster == len(pairs) else "inconclusive"
    claim["evidence"] = (f"{faster} of {len(pairs)} methods faster on average (threshold {study['threshold']:.3f}; "
                         "updates per seed, '>' not reached): " + "; ".join(lines))  # fmt: skip
    return claim


def _updates(values: Sequence[int | None]) -> list[float]:
    return [math.inf if v is None else float(v) for v in values]


def _mean_updates(values: Sequence[float]) -> float:
    return math.inf if any(math.isinf(v) for v in values) else statistics.fmean(values)


def _fmt(values: Sequence[float]) -> str:
    return "/".join(">" if math.isinf(v) else f"{v:.0f}" for v in values)


def markdown(study: Mapping) -> str:
    """Table 1 (Dice mean ± SD over seeds) and the claims, as Markdown."""
    arms = study["arms"]
    lines = ["| (updates per run) | " + " | ".join(a["label"] for a in arms) + " |", "|---" * (len(arms) + 1) + "|"]
    for fraction in study["fractions"]:
        key = f"{fraction:g}"
        cells = [_cell(a["dice"][key]) for a in arms]
        lines.append(f"| Validation Dice ({study['updates_at'][key]}, {fraction:.0%}) | " + " | ".join(cells) + " |")
    if any("best_of_runs" in a for a in arms):
        for fraction in study["fractions"]:
            key = f"{fraction:g}"
            cells = [_cell(a["best_of_runs"][key]) if "best_of_runs" in a else "" for a in arms]
            lines.append(f"| AutoLR, best of its runs ({study['updates_at'][key]}) | " + " | ".join(cells) + " |")
    cells = []
    for a in arms:
        u = a["updates_to_threshold"]
        cells.append(f"{'-' if u['mean'] is None else format(u['mean'], '.0f')} ({u['reached']}/{u['of']})")
    lines.append(f"| Updates to Dice ≥ {study['threshold']:.3f} (seeds reaching) | " + " | ".join(cells) + " |")
    lines.append("| Runs (compute = runs x updates) | " + " | ".join(str(a["runs"]) for a in arms) + " |")
    seeds = sorted({s for a in arms for s in a["seeds"]})
    lines += ["", f"Mean ± SD over seeds {seeds}; threshold: {study['threshold_rule']}. AutoLR's row is its run with "
              "factor 1, which continues from each period's winner at the winner's rate; 'best of its runs' is the "
              "best of its population at that epoch, a selection a step schedule does not get.", "",
              "| paper's claim | held here? | evidence |", "|---|---|---|"]  # fmt: skip
    for c in study["claims"]:
        lines.append(f"| {c['claim']} | {c['verdict']} | {c.get('evidence', '')} |")
    return "\n".join(lines) + "\n"


def _cell(spread: Mapping) -> str:
    return "-" if math.isnan(spread["mean"]) else f"{spread['mean']:.3f} ± {spread['sd']:.3f}"
