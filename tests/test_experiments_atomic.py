"""Atomic writes: complete new file or untouched old one, and no temporary files left."""

import os

import pytest

from experiments.atomic import atomic_path, write_text_atomic


def test_write_replaces_the_file_and_leaves_no_temporaries(tmp_path):
    target = tmp_path / "f.txt"
    write_text_atomic(target, "old")
    write_text_atomic(target, "new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "f.txt"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash while writing")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_written_files_get_the_usual_permissions_not_mkstemps_0600(tmp_path):
    write_text_atomic(tmp_path / "f.txt", "x")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o666 & ~umask
