"""Build the runs of an AutoLR population from a MONAI bundle config.

The config declares *one* run (``network``, ``optimizer``, ``train#trainer``, ``validate#evaluator``, ...). Each
member is a fresh instantiation of that declaration from a copy of the config, with ``member`` set to its index
(its random streams are seeded from it), its own ``run_dir`` (``<run_dir>/members/run_<i>``: logs, error maps) and
the config's ``member_overrides``. Components listed in ``shared`` (read-only ones, such as the cached validation
volumes) are instantiated once and given to every member. Each member is built under torch's generator seeded with
``initial seed + 1000 * index`` (its network's initial weights; the caller's generator is restored afterwards):
MONAI's ``DataLoader`` with ``num_workers=0`` re-seeds torch's default generator with its initial seed when it is
built, which would otherwise give every member the same initial weights whatever ``autolr#same_start`` says.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence

import torch
from monai.bundle import ConfigParser

from .population import Member, local_runs


def members_from_config(
    parser: ConfigParser,
    runs: int,
    shared: Sequence[str] = (),
    overrides_id: str | None = None,
) -> list[Member]:
    """This process's members (run ``i`` belongs to process ``i % world_size``) of a ``runs``-member population.

    ``overrides_id`` names the config entry of ``{id: value}`` overrides for every member, taken unresolved (so a
    value such as ``"@validate#log_handlers"`` refers to the member's own components).
    """
    indices = local_runs(runs)
    raw = copy.deepcopy(parser.get())
    overrides = dict(parser.get(overrides_id, {}) or {}) if overrides_id else {}
    run_dir = parser.get_parsed_content("run_dir")
    common = {name: parser.get_parsed_content(name) for name in shared}
    members = []
    seed = torch.initial_seed()
    for index in indices:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1000 * index)
            members.append(_member(raw, index, run_dir, overrides, common))
    return members


def _member(raw: dict, index: int, run_dir: str, overrides: dict, common: dict) -> Member:
    member = ConfigParser(copy.deepcopy(raw))
    member.update({"member": index, "run_dir": os.path.join(run_dir, "members", f"run_{index}"), **overrides})
    for name, obj in common.items():
        member[name] = obj
    return Member(
        index=index,
        trainer=member.get_parsed_content("train#trainer"),
        evaluator=member.get_parsed_content("validate#evaluator"),
        swapped=member.get_parsed_content("autolr#swap"),
        generator=member.get_parsed_content("train#generator"),
    )
