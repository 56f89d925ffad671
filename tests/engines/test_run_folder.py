"""The run folder lock: one training per folder, a dead holder's lock taken over, released however a run ends."""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import subprocess
import sys
from contextlib import contextmanager

import pytest

from autolr_monai.engines import RunFolder, RunFolderError
from tests.conftest import REPO

HOLD = "import sys; from autolr_monai.engines import RunFolder; RunFolder(sys.argv[1]).acquire(); print('held', flush=True); sys.stdin.read()"


@contextmanager
def held_by_another_process(folder):
    """``folder`` locked by a live child process (as by a training running there) until the block ends."""
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], cwd=REPO, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert child.stdout.readline().strip() == "held"
        yield child.pid
    finally:
        child.stdin.close()
        child.wait(timeout=60)


def test_a_live_holder_makes_a_second_training_refuse_at_once_naming_folder_and_holder(tmp_path):
    with held_by_another_process(tmp_path / "run") as pid:
        with pytest.raises(RunFolderError) as error:
            RunFolder(str(tmp_path / "run")).acquire()
        message = str(error.value)
        assert message.startswith(f"run folder {tmp_path / 'run'} is in use by another training (host "
                                  f"{socket.gethostname()}, pid {pid}, started 20")  # fmt: skip
        assert message.endswith("wait for it to end, or train into another --run_dir") and "\n" not in message
    assert not (tmp_path / "run" / "training.lock").exists()  # the holder released it when it ended
    folder = RunFolder(str(tmp_path / "run"))
    folder.acquire()
    folder.release()


def _stale(folder, **holder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "training.lock").write_text(json.dumps({"started": "2026-01-02 03:04:05", **holder}))


def _dead_pid() -> int:
    """The pid of a process that has ended."""
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout)


def test_a_dead_processs_lock_is_taken_over_and_said(tmp_path, caplog):
    dead = _dead_pid()
    _stale(tmp_path, host=socket.gethostname(), pid=dead)
    folder = RunFolder(str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="autolr_monai.engines"):
        folder.acquire()
    assert f"taking over the lock of a training that is no longer running (host {socket.gethostname()}, pid {dead}, " \
           "started 2026-01-02 03:04:05)" in caplog.text  # fmt: skip
    assert json.loads((tmp_path / "training.lock").read_text())["pid"] == os.getpid()
    folder.release()
    assert not (tmp_path / "training.lock").exists()


def test_a_lock_of_another_host_cannot_be_judged_from_here_and_is_refused(tmp_path):
    _stale(tmp_path, host="gpu-node-7", pid=1234)  # file locks need not reach across hosts
    with pytest.raises(RunFolderError, match=r"locked by a training on another host \(host gpu-node-7, pid 1234, .*delete .*training.lock"):
        RunFolder(str(tmp_path)).acquire()


def test_a_free_lock_whose_recorded_pid_was_reused_is_taken_over(tmp_path, caplog):
    _stale(tmp_path, host=socket.gethostname(), pid=os.getppid())  # alive, yet holds no lock: a reused pid
    with caplog.at_level(logging.WARNING, logger="autolr_monai.engines"):
        folder = RunFolder(str(tmp_path))
        folder.acquire()
    folder.release()
    assert "taking over the lock of a training that is no longer running" in caplog.text


def _no_file_locks(fd, operation):
    raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))


def test_without_file_locks_the_record_keeps_a_live_training_out(tmp_path, monkeypatch, caplog):
    """NFS mounted nolock, Lustre without flock: flock fails with ENOLCK; the lock file's record decides."""
    monkeypatch.setattr(fcntl, "flock", _no_file_locks)
    _stale(tmp_path, host=socket.gethostname(), pid=os.getppid())
    with pytest.raises(RunFolderError, match=r"is in use by another training \(host .*, pid %d" % os.getppid()):
        RunFolder(str(tmp_path)).acquire()
    _stale(tmp_path, host=socket.gethostname(), pid=_dead_pid())
    with caplog.at_level(logging.WARNING, logger="autolr_monai.engines"):
        folder = RunFolder(str(tmp_path))
        folder.acquire()
    folder.release()
    assert "cannot lock files" in caplog.text and "taking over" in caplog.text


class _Engine:
    def __init__(self, fails: bool) -> None:
        self.fails = fails

    def run(self) -> str:
        if self.fails:
            raise OSError(28, "No space left on device")
        return "done"


def test_the_folder_is_released_when_the_run_ends_and_when_it_fails(tmp_path):
    folder = RunFolder(str(tmp_path))
    folder.acquire()
    assert (tmp_path / "training.lock").is_file()
    assert folder.run(_Engine(fails=False)) == "done" and not (tmp_path / "training.lock").exists()
    folder = RunFolder(str(tmp_path))
    folder.acquire()
    with pytest.raises(OSError, match="No space left"):
        folder.run(_Engine(fails=True))
    assert not (tmp_path / "training.lock").exists()


def test_a_training_of_this_process_that_failed_before_its_run_does_not_block_the_next(tmp_path):
    RunFolder(str(tmp_path)).acquire()  # e.g. a bad datalist stopped the build: run() never came
    folder = RunFolder(str(tmp_path))
    folder.acquire()
    folder.release()


@pytest.mark.parametrize("output", ["model.pt", "checkpoints/autolr_iteration=10.pt", "history.json", "autolr_history.json"])
def test_a_fresh_training_refuses_a_folder_holding_another_trainings_outputs(tmp_path, output):
    (tmp_path / output).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / output).write_bytes(b"")
    with pytest.raises(RunFolderError) as error:
        RunFolder(str(tmp_path)).acquire()
    name = output.split("/")[0]
    assert str(error.value) == (f"run folder {tmp_path} already holds the outputs of a training ({name}); resume it "
                                "with --resume true, or train into another --run_dir")  # fmt: skip
    assert not (tmp_path / "training.lock").exists()
    for resuming in ({"resume": True}, {"resume_from": str(tmp_path / "checkpoints" / "x.pt")}):
        folder = RunFolder(str(tmp_path), **resuming)
        folder.acquire()
        folder.release()


def _lock_in_job(rank: int, port: int, free: str, held: str, results) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        run_folder = RunFolder(free)
        run_folder.acquire()
        results[rank] = json.loads(run_folder.lock_file.read_text())["pid"] == os.getpid()
        try:
            RunFolder(held).acquire()
        except RunFolderError as error:
            results[rank] = (results[rank], str(error))
        dist.barrier()  # both got here: no process waits for a failed one
        run_folder.release()
    finally:
        dist.destroy_process_group()


def test_under_torchrun_process_0_holds_the_lock_and_every_process_learns_a_refusal(tmp_path):
    import torch.multiprocessing as mp

    held = RunFolder(str(tmp_path / "held"))  # by this process, for the job's processes another training
    held.acquire()
    results = mp.Manager().dict()
    try:
        mp.spawn(_lock_in_job, args=(29571, str(tmp_path / "free"), str(tmp_path / "held"), results), nprocs=2, join=True)
    finally:
        held.release()
    assert results[0][0] is True and results[1][0] is False  # one lock for the job, process 0's
    assert results[0][1] == results[1][1] and f"is in use by another training (host {socket.gethostname()}, pid " \
        f"{os.getpid()}, started" in results[1][1]  # fmt: skip
    assert not (tmp_path / "free" / "training.lock").exists()
