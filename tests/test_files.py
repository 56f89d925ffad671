"""Atomic text records (training histories, the study's and the evaluation's tables): complete or not at all."""

import errno
import os

import pytest

from autolr_monai.evaluation import Score, write_reports
from autolr_monai.files import write_text_atomic


def test_a_full_disk_leaves_the_earlier_file_and_no_partial_one(tmp_path, monkeypatch):
    target = tmp_path / "table.md"
    write_text_atomic(target, "earlier\n")

    def full_disk(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_text_atomic(target, "newer\n")
    assert target.read_text() == "earlier\n" and sorted(p.name for p in tmp_path.iterdir()) == ["table.md"]


def test_evaluation_reports_are_written_atomically(tmp_path, monkeypatch):
    scores = [Score("case", "A", "liver", 0.9, 3.0)]
    write_reports(scores, ["A"], str(tmp_path))
    before = {p.name: p.read_text() for p in tmp_path.iterdir()}
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(OSError, match="No space left"):
        write_reports([Score("case", "A", "liver", 0.5, 9.0)], ["A"], str(tmp_path))
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == before
