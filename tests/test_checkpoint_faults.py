"""Fault injection, files (issue 11 items 6-7): flipped bits, truncated and empty checkpoints are
errors naming the file; a process killed at any point of a checkpoint write leaves the previous
checkpoint loadable, and its temporary file is removed on resume; a torn last line of
metrics.jsonl is repaired on resume."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from experiments.atomic import remove_stale_temporaries
from experiments.checkpoint import CHECKPOINT, TRAILER_SIZE, CheckpointError, load_checkpoint, save_checkpoint
from experiments.cli import train_command
from experiments.metrics import METRICS, MetricsLog
from experiments.train import train
from experiment_helpers import micro_config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 4-step micro run stopped at step 2 (with its checkpoint)."""
    root = tmp_path_factory.mktemp("faults")
    cfg = micro_config(root, root / "cache", steps=4)
    train(cfg, until_step=2)
    return cfg


def _copy(run, tmp_path):
    shutil.copytree(run.out, tmp_path / "run")
    return tmp_path / "run"


#: where one bit is flipped: the zip header, three points inside, the checksum trailer
OFFSETS = (0.0, 0.25, 0.5, 0.75, "trailer")


@pytest.mark.parametrize("where", OFFSETS, ids=str)
def test_one_flipped_bit_is_a_clear_error_naming_the_file(run, tmp_path, where):
    path = _copy(run, tmp_path) / CHECKPOINT
    data = bytearray(path.read_bytes())
    offset = len(data) - TRAILER_SIZE + 20 if where == "trailer" else int(where * (len(data) - TRAILER_SIZE))
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=f"{path}.*damaged"):
        load_checkpoint(path)


@pytest.mark.parametrize("size", [0, 100, "half"], ids=str)
def test_truncated_and_empty_checkpoints_are_clear_errors(run, tmp_path, size):
    path = _copy(run, tmp_path) / CHECKPOINT
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 if size == "half" else size])
    with pytest.raises(CheckpointError, match=str(path)):
        with pytest.warns(UserWarning, match="no checksum") if size else _nothing():
            load_checkpoint(path)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_a_damaged_checkpoint_on_resume_is_a_one_line_cli_error(run, tmp_path, capsys):
    out = _copy(run, tmp_path)
    (out / CHECKPOINT).write_bytes(b"not a checkpoint")
    code = train_command(["--resume", "--out", str(out), "--preset", "micro", "--data", *run.data,
                          "--cache", run.cache, "--steps", "4", "--threads", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and str(out / CHECKPOINT) in err, err


#: the moments of ``save_checkpoint`` at which the writing process dies (os._exit: no cleanup)
KILL_POINTS = ("torch.save", "hashing", "trailer", "fsync", "os.replace")


@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_kill_during_a_checkpoint_write_keeps_the_previous_one(run, tmp_path, point):
    out = _copy(run, tmp_path)
    before = (out / CHECKPOINT).read_bytes()
    child = os.fork()
    if child == 0:  # the writer, killed at `point`
        try:
            state = load_checkpoint(out / CHECKPOINT)
            die = lambda *a, **k: os._exit(9)  # noqa: E731
            if point == "torch.save":
                real = torch.save
                torch.save = lambda obj, f, *a, **k: (real(obj, f, *a, **k), open(f, "r+b").truncate(1000), die())
            elif point == "hashing":
                import hashlib
                hashlib.sha256 = die
            elif point == "trailer":
                import pathlib
                real_open = pathlib.Path.open
                pathlib.Path.open = lambda f, mode="r", *a, **k: die() if mode == "ab" else real_open(f, mode, *a, **k)
            elif point == "fsync":
                os.fsync = die
            else:
                os.replace = die
            save_checkpoint(out / CHECKPOINT, model=_Dict(state["model"]), optimizer=_Dict(state["optimizer"]),
                            scheduler=_Dict(state["scheduler"]), data=_Dict(state["data"]), loop=state["loop"],
                            config=state["config"])
        finally:
            os._exit(0)
    _, status = os.waitpid(child, 0)
    assert os.WEXITSTATUS(status) == 9, "the writer was not killed"
    assert (out / CHECKPOINT).read_bytes() == before
    load_checkpoint(out / CHECKPOINT)  # verified
    stale = remove_stale_temporaries(out)
    assert stale and not list(out.glob(".*.tmp"))


class _Dict:
    def __init__(self, state):
        self.state = state

    def state_dict(self):
        return self.state


def test_resume_removes_stale_temporaries_and_repairs_a_torn_metrics_line(run, tmp_path):
    out = _copy(run, tmp_path)
    (out / f".{CHECKPOINT}.abc123.tmp").write_bytes(b"x" * 1000)  # what a killed write leaves
    with (out / METRICS).open("a") as f:
        f.write('{"step": 3, "tokens": 12')  # killed in the middle of an append
    cfg = micro_config(tmp_path, run.cache, steps=4, out=str(out))
    with pytest.warns(UserWarning, match="line 3 is incomplete"):
        train(cfg, resume=True)
    assert not list(out.glob(".*.tmp"))
    steps = [r["step"] for r in MetricsLog.read(out / METRICS)]
    assert steps == [1, 2, 3, 4]


def test_a_bad_line_inside_metrics_is_an_error_naming_file_and_line(tmp_path):
    path = tmp_path / METRICS
    path.write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(ValueError, match=f"{path}: line 2"):
        MetricsLog.read(path)
