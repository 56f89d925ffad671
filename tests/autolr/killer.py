"""Test-only handlers that SIGKILL the training process at a chosen point, once (a marker file remembers), as a
pre-emption or power cut would: no exception handler, no ``finally``, no flush; or that press Ctrl-C there, or
fill the disk."""

from __future__ import annotations

import errno
import io
import os
import signal
from pathlib import Path

import torch
from ignite.engine import Engine, Events
from ignite.handlers import DiskSaver


def _kill_once(marker: str) -> bool:
    if Path(marker).exists():
        return False
    Path(marker).write_text("killed")
    return True


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class KillMidEpoch:
    """On one run's trainer: kill after ``iteration`` (of that trainer) if this is run ``run``."""

    def __init__(self, iteration: int, member: int, run: int, marker: str) -> None:
        self.iteration, self.member, self.run, self.marker = iteration, member, run, marker

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._maybe_kill)

    def _maybe_kill(self, engine: Engine) -> None:
        if self.member == self.run and engine.state.iteration == self.iteration and _kill_once(self.marker):
            _die()


class KillAfterEpoch:
    """On the AutoLR engine: kill at the end of population epoch ``epoch``, before its checkpoint is written."""

    def __init__(self, epoch: int, marker: str) -> None:
        self.epoch, self.marker = epoch, marker

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._maybe_kill)

    def _maybe_kill(self, engine: Engine) -> None:
        if engine.state.iteration == self.epoch and _kill_once(self.marker):
            _die()


class KillingDiskSaver(DiskSaver):
    """Ignite's atomic ``DiskSaver``, except that the write of ``filename`` dies halfway through."""

    def __init__(self, *args, filename: str, marker: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.filename, self.marker = filename, marker

    def _save_func(self, checkpoint, path, func) -> None:
        if Path(path).name != self.filename or not _kill_once(self.marker):
            return super()._save_func(checkpoint, path, func)

        def half_then_die(obj, f, **kwargs) -> None:
            buffer = io.BytesIO()
            torch.save(obj, buffer)
            f.write(buffer.getvalue()[: buffer.tell() // 2])
            f.flush()
            _die()

        super()._save_func(checkpoint, path, half_then_die)


class InterruptMidEpoch(KillMidEpoch):
    """As ``KillMidEpoch``, with SIGINT (Ctrl-C) instead of SIGKILL, delivered to this (the main) thread:
    ``os.kill`` of the process lets the kernel hand the signal to any of torch's or TensorBoard's threads, and
    Python then raises the ``KeyboardInterrupt`` at a later point of its own choosing, which under load can be a
    finaliser that swallows it."""

    def _maybe_kill(self, engine: Engine) -> None:
        if self.member == self.run and engine.state.iteration == self.iteration and _kill_once(self.marker):
            signal.raise_signal(signal.SIGINT)


class FailMidEpoch(KillMidEpoch):
    """As ``KillMidEpoch``, but the disk is full: an ``OSError(ENOSPC)``, as a write would raise."""

    def _maybe_kill(self, engine: Engine) -> None:
        if self.member == self.run and engine.state.iteration == self.iteration and _kill_once(self.marker):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.marker)
