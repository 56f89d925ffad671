"""The run folder of one training: locked while the training runs, and never silently reused by another.

Two trainings writing into one folder corrupt each other without an error: one's ``model.pt`` gets the other's
weights, their error maps are the same files, and each deletes the other's old checkpoints. MONAI and Ignite lock
nothing, hence ``RunFolder``: a lock file (``training.lock``, with the holder's host, pid and start time) held with
``fcntl.flock`` for the training's lifetime, so the operating system releases it when the process dies however it
dies; a lock file left behind by a dead process is taken over, said in the log. A fresh training (neither
``--resume`` nor ``autolr#resume_from``) also refuses a folder that holds another training's outputs.
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

import ignite.distributed as idist

logger = logging.getLogger("autolr_monai.engines")

LOCK_FILE = "training.lock"
#: What ``flock`` fails with where the file system has no file locks.
_NO_LOCKS = {errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP}
#: What a training leaves in its folder; a fresh training refuses a folder holding any of them.
OUTPUTS = ("model.pt", "checkpoints", "autolr_history.json", "history.json")


class RunFolderError(RuntimeError):
    """The run folder cannot be used as asked: another training holds it, or holds its outputs."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _describe(holder: dict) -> str:
    return f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, started {holder.get('started', '?')}"


class RunFolder:
    """The run folder ``path`` of one training.

    ``acquire()`` (once, before anything is written there) locks it or refuses at once, naming the folder and the
    holder, when a live training holds it; under ``torchrun`` process 0 locks it for the whole job and every
    process raises the same error. A fresh training (``resume`` false and no ``resume_from``) refuses a folder with
    another training's outputs (``OUTPUTS``). ``run(engine)`` runs the training and releases the folder however the
    run ends; the lock is also released at exit should the build of the training fail before ``run``.
    """

    _held: dict[Path, RunFolder] = {}  # the folders this process holds

    def __init__(self, path: str, resume: bool = False, resume_from: str | None = None) -> None:
        self.path = Path(path).resolve()
        self.resume, self.resume_from = resume, resume_from
        self._fd: int | None = None
        self._locked = True  # False on a file system without file locks

    @property
    def lock_file(self) -> Path:
        return self.path / LOCK_FILE

    def acquire(self) -> None:
        error = ""
        if idist.get_rank() == 0:
            try:
                self._acquire()
            except (RunFolderError, OSError) as e:
                error = str(e)
                if idist.get_world_size() == 1:
                    raise
        if idist.get_world_size() > 1:  # every process learns process 0's outcome: none waits for a failed one
            error = idist.broadcast(error, src=0)
            if error:
                raise RunFolderError(error)

    def _acquire(self) -> None:
        earlier = self._held.get(self.path)
        if earlier is not None:  # an earlier training of this process that failed before its run released nothing
            earlier.release()
        self.path.mkdir(parents=True, exist_ok=True)
        fd = self._lock()
        try:
            holder = self._read(fd)
            if holder:
                self._take_over(holder)
            record = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(record).encode(), 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._held[self.path] = self
        atexit.register(self.release)
        if not self.resume and not self.resume_from:
            found = sorted(name for name in OUTPUTS if (self.path / name).exists() and not (
                (self.path / name).is_dir() and not any((self.path / name).iterdir())))  # fmt: skip
            if found:
                self.release()
                raise RunFolderError(f"run folder {self.path} already holds the outputs of a training ({', '.join(found)}); "
                                     "resume it with --resume true, or train into another --run_dir")  # fmt: skip

    def _lock(self) -> int:
        """An open descriptor of the lock file, locked; the file is re-opened if a releasing holder removed it
        between our open and our lock."""
        while True:
            fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._read(fd)
                os.close(fd)
                raise RunFolderError(self._in_use(holder)) from None
            except OSError as e:  # a file system without locks (NFS mounted nolock, Lustre without flock)
                if e.errno not in _NO_LOCKS:
                    os.close(fd)
                    raise
                logger.warning("run folder %s: its file system cannot lock files (%s); relying on the lock file's "
                               "record of host and pid alone", self.path, e.strerror)  # fmt: skip
                self._locked = False
                return fd
            try:
                same = os.stat(self.lock_file).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return fd
            os.close(fd)

    @staticmethod
    def _read(fd: int) -> dict:
        text = os.pread(fd, 4096, 0).decode(errors="replace")
        try:
            holder = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError:
            holder = {"host": f"unknown (unreadable lock file: {text[:60]!r})"}
        return holder if isinstance(holder, dict) else {}

    def _in_use(self, holder: dict) -> str:
        return (f"run folder {self.path} is in use by another training ({_describe(holder)}); wait for it to end, or "
                "train into another --run_dir")  # fmt: skip

    def _take_over(self, holder: dict) -> None:
        """The lock file left by a training: taken over if that training ran on this host and is gone. With a
        working lock, that it is gone is certain (the lock was free); without one, its pid must be gone too. A
        holder on another host cannot be judged from here: file locks need not reach across hosts."""
        pid = holder.get("pid")
        if holder.get("host") != socket.gethostname():
            raise RunFolderError(f"run folder {self.path} is locked by a training on another host ({_describe(holder)}); "
                                 f"if it is no longer running, delete {self.lock_file}")  # fmt: skip
        if not self._locked and isinstance(pid, int) and pid != os.getpid() and _alive(pid):
            raise RunFolderError(self._in_use(holder))
        logger.warning("run folder %s: taking over the lock of a training that is no longer running (%s)", self.path,
                       _describe(holder))  # fmt: skip

    def release(self) -> None:
        """Remove the lock file and unlock (a no-op when not held)."""
        if self._fd is None:
            return
        atexit.unregister(self.release)
        if self._held.get(self.path) is self:
            del self._held[self.path]
        try:
            if os.stat(self.lock_file).st_ino == os.fstat(self._fd).st_ino:
                os.unlink(self.lock_file)
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None

    def run(self, engine: Any) -> Any:
        """``engine.run()``, releasing the folder however it ends."""
        try:
            return engine.run()
        finally:
            self.release()
