"""Run the Table 1 study: every arm and seed as its own ``monai.bundle run training`` process, resumably.

Each run's folder is ``<out>/<arm>/seed_<seed>``; a finished run leaves ``study_run.json`` there (its command, a
signature of the configs and overrides it ran with, its wall time and its validation curve). A rerun of the study
skips finished runs with the same signature, restarts unfinished ones from scratch, and refuses to mix runs made
with other settings. Runs go ``jobs`` at a time, each with ``cpu_count // jobs`` threads: on a 2-core CPU, two
single-threaded small-network runs take the time of one two-threaded run.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..files import write_json_atomic, write_text_atomic
from ..paths import bundle_root
from .arms import Arm, select_arms
from .curves import Curve, load_curve
from .figures import figure3_dice, figure3_lr
from .summary import markdown, summarize

# the study's sizes, as overlays of train.json (see the bundle's docs/README.md, "Table 1 study")
PROFILES: dict[str, dict] = {
    "cpu": {"overlays": ["demo.json", "study_cpu.json"], "jobs": 2},
    "gpu": {"overlays": ["study_gpu.json"], "jobs": 1},
}
MARKER = "study_run.json"


class StudyError(RuntimeError):
    """A study that cannot go on as asked: settings changed under a finished run, a run failed or has not run."""


@dataclass
class StudyRun:
    arm: Arm
    seed: int
    folder: Path
    config_files: list[str]
    overrides: dict

    @property
    def command(self) -> list[str]:
        args = [f"--{key}={value!r}" for key, value in self.overrides.items()]  # fire reads Python literals back
        return [sys.executable, "-m", "monai.bundle", "run", "training",
                "--config_file", json.dumps(self.config_files), *args]  # fmt: skip

    @property
    def signature(self) -> str:
        """Hash of the config files' contents and the overrides except the run's own folder."""
        digest = hashlib.sha256()
        for path in self.config_files:
            digest.update(Path(path).read_bytes())
        settings = {k: v for k, v in self.overrides.items() if k != "run_dir"}
        digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
        return digest.hexdigest()[:16]


@dataclass
class Study:
    """The study's settings. ``overrides`` are config overrides for every run (e.g. ``{"max_epochs": 10}``);
    ``datalist`` a user's datalist instead of the profile's phantoms."""

    out: Path
    profile: str = "cpu"
    arms: list[Arm] = field(default_factory=select_arms)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    datalist: str | None = None
    overrides: dict = field(default_factory=dict)
    jobs: int | None = None
    threshold: float | None = None

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"profile: unknown {self.profile!r}; expected one of {sorted(PROFILES)}")
        if not self.seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.seeds):
            raise ValueError(f"seeds: expected a non-empty list of non-negative integers, got {self.seeds!r}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds: {self.seeds!r} repeats a seed")
        self.jobs = PROFILES[self.profile]["jobs"] if self.jobs is None else self.jobs
        if isinstance(self.jobs, bool) or not isinstance(self.jobs, int) or self.jobs < 1:
            raise ValueError(f"jobs: expected a positive integer, got {self.jobs!r}")
        if self.datalist is not None:
            if not Path(self.datalist).is_file():
                raise FileNotFoundError(f"datalist: {self.datalist} is not a file")
            self.datalist = str(Path(self.datalist).resolve())
        self.out = Path(self.out).resolve()
        owned = {"seed", "run_dir", "datalist", "isample#enabled", "training", "method", "run_name"}
        for arm in self.arms:
            if arm.overlay:
                owned |= set(json.loads((Path(bundle_root()) / "configs" / arm.overlay).read_text()))
        clashes = sorted(k for k in self.overrides for o in owned if k == o or o.startswith(k + "#") or k.startswith(o + "#"))
        if clashes:
            raise ValueError(f"overrides: {clashes} would change what tells the arms apart (or is set per run); "
                             f"the study sets {sorted(owned)} itself (use --datalist for the data)")  # fmt: skip

    def config_files(self, arm: Arm) -> list[str]:
        configs = Path(bundle_root()) / "configs"
        names = ["train.json", *PROFILES[self.profile]["overlays"], *([arm.overlay] if arm.overlay else [])]
        return [str(configs / name) for name in names]

    def runs(self) -> list[StudyRun]:
        runs = []
        for arm in self.arms:
            for seed in self.seeds:
                folder = self.out / arm.name / f"seed_{seed}"
                overrides = {**self.overrides, **arm.overrides(), "seed": seed, "run_dir": str(folder)}
                if self.datalist:
                    overrides["datalist"] = self.datalist
                runs.append(StudyRun(arm, seed, folder, self.config_files(arm), overrides))
        return runs


def _finished(run: StudyRun) -> dict | None:
    marker = run.folder / MARKER
    if not marker.is_file():
        return None
    record = json.loads(marker.read_text())
    if record["signature"] != run.signature:
        raise StudyError(f"{marker}: this run was made with other settings (configs or overrides changed since); "
                           "use another --out for the new settings, or delete the folder to redo it")  # fmt: skip
    return record


def prepare_data(run: StudyRun) -> str:
    """Resolve the datalist once, before parallel runs start: this generates the profile's phantoms if needed."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(run.config_files)
    parser.update(run.overrides)
    return parser.get_parsed_content("datalist_file")


def _launch(run: StudyRun, threads: int, signature: str, stop: threading.Event) -> dict:
    if stop.is_set():
        raise StudyError(f"{run.arm.name} seed {run.seed}: not started, the study was interrupted")
    if run.folder.exists():  # an unfinished run: its checkpoints may be mid-write, start it again
        shutil.rmtree(run.folder)
    run.folder.mkdir(parents=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TQDM_DISABLE": "1"}
    start = time.time()
    with open(run.folder / "train.log", "w") as log:
        result = subprocess.run(run.command, stdout=log, stderr=subprocess.STDOUT, env=env)
    seconds = time.time() - start
    if result.returncode != 0:
        tail = (run.folder / "train.log").read_text()[-3000:]
        raise StudyError(f"{run.arm.name} seed {run.seed} failed (exit code {result.returncode}); its log is "
                           f"{run.folder / 'train.log'}; last lines:\n{tail}")  # fmt: skip
    record = {"arm": run.arm.name, "seed": run.seed, "signature": signature, "command": shlex.join(run.command),
              "seconds": round(seconds, 1), "curve": load_curve(run.folder).to_dict()}  # fmt: skip
    write_json_atomic(run.folder / MARKER, record)
    return record


def run_study(study: Study, dry_run: bool = False, log=print) -> dict | None:
    """Run every arm and seed not yet finished, then write the report (``report``). ``dry_run`` prints the
    commands instead."""
    runs = study.runs()
    if dry_run:
        for r in runs:
            log(("[done] " if _finished(r) else "") + shlex.join(r.command))
        return None
    study.out.mkdir(parents=True, exist_ok=True)
    with _lock(study.out):
        pending = [r for r in runs if _finished(r) is None]
        settings = {"profile": study.profile, "arms": [a.name for a in study.arms], "seeds": study.seeds,
                    "datalist": study.datalist, "overrides": study.overrides, "jobs": study.jobs,
                    "config_files": {a.name: study.config_files(a) for a in study.arms}, "machine": machine()}  # fmt: skip
        write_json_atomic(study.out / "study.json", settings)
        log(f"study in {study.out}: {len(runs)} runs, {len(runs) - len(pending)} already done, {len(pending)} to "
            f"run, {study.jobs} at a time")  # fmt: skip
        if pending:
            log(f"data: {prepare_data(pending[0])}")
            _run_all(pending, study.jobs, log)
        return report(study)


def _run_all(pending: list[StudyRun], jobs: int, log) -> None:
    pending = sorted(pending, key=lambda r: (not r.arm.autolr, not r.arm.isample))  # longest first: AutoLR is 3 runs
    threads = max(1, (os.cpu_count() or 1) // jobs)
    failures, start, stop = [], time.time(), threading.Event()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        # the signature is taken now: a config edited while the study runs does not relabel runs made before
        futures = {pool.submit(_launch, r, threads, r.signature, stop): r for r in pending}
        try:
            for done, future in enumerate(as_completed(futures), 1):
                r = futures[future]
                try:
                    record = future.result()
                    log(f"[{done}/{len(pending)}] {r.arm.name} seed {r.seed}: {record['seconds']:.0f} s "
                        f"(study {time.time() - start:.0f} s)")  # fmt: skip
                except (StudyError, OSError, ValueError) as error:  # the others go on; finished runs are kept
                    failures.append(error)
                    log(f"[{done}/{len(pending)}] {r.arm.name} seed {r.seed}: FAILED, see {r.folder / 'train.log'}")
        except KeyboardInterrupt:  # the runs in progress got the same signal; start no others
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    if failures:
        raise StudyError(f"{len(failures)} of {len(pending)} runs failed; rerun the same command to retry them "
                         f"(finished runs are kept). First failure: {failures[0]}")  # fmt: skip


@contextmanager
def _lock(out: Path):
    """One study at a time per output folder: a second would restart the first one's unfinished runs."""
    with open(out / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StudyError(f"{out}: another study is running in this folder; wait for it or use another --out") from None
        yield


def report(study: Study) -> dict:
    """Table 1 (``table1.json``, ``table1.md``) and figures (``figure3_dice.png``, ``figure3_lr.png``,
    ``figure2_<arm>_seed<s>.png``) from the finished runs; every run of the study must be finished."""
    from ..autolr.history import plot_history

    curves: dict[Arm, dict[int, Curve]] = {}
    seconds: dict[str, list[float]] = {}
    for r in study.runs():
        record = _finished(r)
        if record is None:
            raise StudyError(f"{r.folder}: {r.arm.name} seed {r.seed} has not finished; run the study first")
        curves.setdefault(r.arm, {})[r.seed] = load_curve(r.folder)
        seconds.setdefault(r.arm.name, []).append(record["seconds"])
    result = summarize(curves, threshold=study.threshold)
    for arm in result["arms"]:
        arm["seconds_per_seed"] = seconds[arm["name"]]
    result["total_run_seconds"] = round(sum(sum(s) for s in seconds.values()), 1)
    result["figures"] = [figure3_dice(curves, str(study.out / "figure3_dice.png"), result["fractions"][0]),
                         figure3_lr(curves, result, str(study.out / "figure3_lr.png"))]  # fmt: skip
    autolr = [a for a in sorted(curves, key=lambda a: not a.isample) if a.autolr]
    if autolr:
        arm, seed = autolr[0], min(curves[autolr[0]])
        path = study.out / f"figure2_{arm.name}_seed{seed}.png"
        result["figures"].append(plot_history(str(study.out / arm.name / f"seed_{seed}"), str(path),
                                              title=f"{arm.label}, seed {seed}: figure 2 of the paper"))  # fmt: skip
    write_json_atomic(study.out / "table1.json", result)
    write_text_atomic(study.out / "table1.md", markdown(result))
    return result


def machine() -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine()}  # fmt: skip
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def study_from_cli(out: str | None, profile: str, arms: Sequence[str] | str | None, seeds: Sequence[int] | int,
                   datalist: str | None, overrides: Mapping | None, jobs: int | None,
                   threshold: float | None) -> Study:  # fmt: skip
    if overrides is not None and not isinstance(overrides, Mapping):
        raise ValueError(f"overrides: expected a dict of config overrides such as \"{{'max_epochs': 10}}\", got {overrides!r}")
    seeds = [seeds] if isinstance(seeds, int) else list(seeds)
    out = out or os.path.join(bundle_root(), "runs", f"study-{profile}")
    return Study(Path(out), profile, select_arms(arms), seeds, datalist, dict(overrides or {}), jobs, threshold)
