"""The one atomic writer: the old file or the new one after any failure, never half of one, and no leftovers."""

from __future__ import annotations

import os

import pytest

from transformers_iam.core import files
from transformers_iam.core.files import write_text_atomically
from transformers_iam.experiments import run


def test_writes_and_replaces_leaving_only_the_file(tmp_path):
    path = tmp_path / "metrics.json"
    assert write_text_atomically(path, "first") == str(path)
    write_text_atomically(path, "Amélie, second")
    assert path.read_text(encoding="utf-8") == "Amélie, second"
    assert os.listdir(tmp_path) == ["metrics.json"]


def test_the_data_reaches_the_disk_before_the_rename(tmp_path, monkeypatch):
    # without fsync first, a crash after the rename can leave an empty file where the old one was
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(files.os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd)))
    monkeypatch.setattr(files.os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b)))
    write_text_atomically(tmp_path / "report.md", "text")
    assert calls == ["fsync", "replace"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "experiment.json"
    path.write_text("old", encoding="utf-8")

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_text_atomically(path, "new")
    assert path.read_text(encoding="utf-8") == "old" and os.listdir(tmp_path) == ["experiment.json"]

    monkeypatch.undo()
    with pytest.raises(TypeError, match=r"writes a str to .*experiment.json, got bytes"):
        write_text_atomically(path, b"new")
    assert path.read_text(encoding="utf-8") == "old" and os.listdir(tmp_path) == ["experiment.json"]


def test_run_files_and_the_catalog_share_this_writer():
    # one writer, so a fix (fsync, cleanup) reaches every file a run saves
    assert run.write_text_atomically is write_text_atomically
