"""Training on several processes (issue 13, the experiment layer): DDP and FSDP2 on 2 CPU processes
with gloo give the one-process run; FSDP2 checkpoints resume exactly, and on another process count;
rank 0 alone writes; a non-finite gradient on one rank makes every rank skip the same step.

Every oracle is the same run in one process. Processes are spawned with torchrun's environment
(``experiments.distributed.launch`` does the same for ``fimkit train --nproc``).

FSDP2 trains with fimkit's optimizers (their DTensor step is ``fimkit.optim.sharded``; every
registered optimizer is checked on its own in ``tests/test_dtensor_optimizers.py``); the tests of
this layer's sharding, checkpoints and resharding train with torch's Adam, patched in for
``experiments.optimizers.build``, so that they check the layer alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

import experiments.train as train_module
from experiments.checkpoint import (
    CHECKPOINT,
    LATEST,
    SHARDED,
    CheckpointError,
    load_checkpoint,
    load_sharded_checkpoint,
    remove_unfinished,
)
from experiments.config import TrainConfig
from experiments.distributed import free_port
from experiments.metrics import METRICS, MetricsLog
from experiments.switch_log import SWITCHES
from experiments.train import train
from experiment_helpers import micro_config

ROOT = Path(__file__).resolve().parents[1]
#: relative error allowed against one process (only the order of floating-point sums differs)
TOLERANCE = 1e-5
#: 10 steps of the micro preset, a switch of Alice's subspace every 3 (so several happen)
HPARAMS = {"adam": {}, "racs": {}, "alice": {"update_interval": 3}}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("data-cache")


def config(folder: Path, cache: Path, optimizer: str = "adam", **overrides) -> TrainConfig:
    values = {"steps": 10, "eval_every": 5, "ckpt_every": 5, "hparams": HPARAMS.get(optimizer, {}), **overrides}
    return micro_config(folder, cache, optimizer=optimizer, **values)


# ------------------------------------------------------------------ processes and patches
def torch_adam(model, name, *, lr, adam_lr, lm_head, hparams, gradient_release=False):
    """torch's Adam on every parameter: takes DTensors today (fimkit's guard does not yet)."""
    return torch.optim.Adam(model.parameters(), lr=lr)


class InfiniteGradient(torch.autograd.Function):
    """The identity forward; an infinite gradient backward (before any reduction over ranks)."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return torch.full_like(grad, float("inf"))


def recording_build(folder: Path, rank: int, poison_step: int | None, build):
    """``build`` whose optimizer writes this rank's whole parameters and skip count to
    ``folder/rank-R.pt`` after every step, and that poisons the gradient reaching the first
    block's output during the forwards of step ``poison_step`` (when given)."""
    def make(model, *args, **kwargs):
        optimizer = build(model, *args, **kwargs)
        steps = [0]

        def after_step(*_):
            steps[0] += 1
            params = {name: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone()
                      for name, p in model.named_parameters()}  # full_tensor: every rank takes part
            torch.save({"params": params, "skips": getattr(optimizer, "nonfinite_skips", None)},
                       Path(folder) / f"rank-{rank}.pt")

        optimizer.register_step_post_hook(after_step)
        if poison_step is not None:
            model.layers[0].register_forward_hook(
                lambda module, inputs, out: InfiniteGradient.apply(out)
                if torch.is_grad_enabled() and steps[0] == poison_step - 1 else out)
        return optimizer
    return make


def _worker(rank, world, port, values, until_step, resume, patch):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    build = torch_adam if patch.get("torch_adam") else train_module.build
    if "record" in patch:
        build = recording_build(patch["record"], rank, patch.get("poison_step") if rank == 1 else None, build)
    train_module.build = build
    train(TrainConfig(**values), until_step=until_step, resume=resume)


def on_ranks(cfg: TrainConfig, world: int = 2, until_step=None, resume=False, **patch) -> None:
    """Run ``train(cfg)`` in ``world`` spawned processes (torchrun's environment, gloo)."""
    values = cfg.to_dict() | {"nproc": world}
    mp.start_processes(_worker, args=(world, free_port(), values, until_step, resume, patch), nprocs=world,
                       start_method="spawn")


def in_one_process(cfg: TrainConfig, monkeypatch, until_step=None, resume=False, **patch) -> None:
    if patch.get("torch_adam"):
        monkeypatch.setattr(train_module, "build", torch_adam)
    if "record" in patch:
        monkeypatch.setattr(train_module, "build", recording_build(patch["record"], 0, patch.get("poison_step"),
                                                                   train_module.build))
    train(cfg, until_step=until_step, resume=resume)


# ------------------------------------------------------------------------------ reading runs
def weights(out: str | Path) -> dict[str, torch.Tensor]:
    """The model of a run's last checkpoint, whole (an FSDP2 checkpoint gathered from its shards)."""
    out = Path(out)
    if (out / CHECKPOINT).exists():
        return load_checkpoint(out / CHECKPOINT)["model"]
    return {key.removeprefix("model."): value for key, value in sharded_tensors(out).items()
            if key.startswith("model.")}


def sharded_tensors(out: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of an FSDP2 run's checkpoint (model and optimizer), read in one process."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    folder = Path(load_sharded_checkpoint(Path(out) / SHARDED)["sharded"])
    metadata = dcp.FileSystemReader(folder).read_metadata().state_dict_metadata
    tensors = {key: torch.empty(m.size, dtype=m.properties.dtype) for key, m in metadata.items()
               if isinstance(m, TensorStorageMetadata)}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "torch.distributed is disabled")  # one process reads, as meant
        dcp.load(tensors, checkpoint_id=folder, no_dist=True)
    return tensors


def losses(out: str | Path) -> list[tuple]:
    return [(r["step"], r["train_loss"], r.get("eval_loss")) for r in MetricsLog.read(Path(out) / METRICS)]


def relative_error(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(((a[k].double() - b[k].double()).norm() / b[k].double().norm().clamp_min(1e-30)).item() for k in a)


def loss_error(a, b) -> float:
    assert [r[0] for r in a] == [r[0] for r in b]
    pairs = [(x, y) for ra, rb in zip(a, b) for x, y in zip(ra[1:], rb[1:]) if y is not None]
    return max(abs(x - y) / abs(y) for x, y in pairs)


@pytest.fixture(scope="module")
def single(cache, tmp_path_factory):
    """The one-process runs, by optimizer (``"torch_adam"``: torch's Adam patched in)."""
    runs = {}

    def run(optimizer: str) -> TrainConfig:
        if optimizer not in runs:
            cfg = config(tmp_path_factory.mktemp(f"single-{optimizer}"), cache,
                         optimizer="adam" if optimizer == "torch_adam" else optimizer)
            with pytest.MonkeyPatch.context() as monkeypatch:
                in_one_process(cfg, monkeypatch, torch_adam=optimizer == "torch_adam")
            runs[optimizer] = cfg
        return runs[optimizer]
    return run


@pytest.fixture(scope="module")
def fsdp2_run(single, cache, tmp_path_factory):
    """A finished FSDP2 run with torch's Adam on 2 processes."""
    single("torch_adam")  # the cache is built
    cfg = config(tmp_path_factory.mktemp("fsdp2"), cache, parallel="fsdp2")
    on_ranks(cfg, torch_adam=True)
    return cfg


# ------------------------------------------------------------------------ equal to one process
@pytest.mark.parametrize("parallel", ["ddp", "fsdp2"])
@pytest.mark.parametrize("optimizer", ["adam", "racs", "alice"])
def test_two_processes_give_the_single_process_weights_and_losses(single, cache, tmp_path, optimizer, parallel):
    one = single(optimizer)
    cfg = config(tmp_path, cache, optimizer=optimizer, parallel=parallel)
    on_ranks(cfg)
    assert relative_error(weights(cfg.out), weights(one.out)) <= TOLERANCE
    assert loss_error(losses(cfg.out), losses(one.out)) <= TOLERANCE
    if optimizer == "alice":  # rank 0 writes switches.jsonl from its (whole) bases, under FSDP2 too
        ours, theirs = switches(cfg.out), switches(one.out)
        assert [r[:2] for r in ours] == [r[:2] for r in theirs] and ours
        assert all(abs(a - b) <= 1e-4 for r, q in zip(ours, theirs) for a, b in zip(r[2], q[2], strict=True))


def switches(out: str | Path) -> list[tuple]:
    return [(r["step"], r["param"], r["cos"]) for r in MetricsLog.read(Path(out) / SWITCHES)]


def test_fsdp2_on_two_processes_gives_the_single_process_weights_and_losses(single, fsdp2_run):
    one = single("torch_adam")
    assert relative_error(weights(fsdp2_run.out), weights(one.out)) <= TOLERANCE
    assert loss_error(losses(fsdp2_run.out), losses(one.out)) <= TOLERANCE


# ------------------------------------------------------------------------------- checkpoints
def test_fsdp2_resumed_run_is_bit_identical_to_a_straight_run(fsdp2_run, cache, tmp_path):
    split = config(tmp_path, cache, parallel="fsdp2")
    on_ranks(split, until_step=4, torch_adam=True)
    assert [r[0] for r in losses(split.out)] == [1, 2, 3, 4]
    on_ranks(split, resume=True, torch_adam=True)
    assert losses(split.out) == losses(fsdp2_run.out)
    a, b = sharded_tensors(split.out), sharded_tensors(fsdp2_run.out)
    assert a.keys() == b.keys() and any(k.startswith("optimizer.state.") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)  # the model and every optimizer state tensor


def test_fsdp2_checkpoint_of_two_processes_resumes_on_one(fsdp2_run, cache, tmp_path):
    cfg = config(tmp_path, cache, parallel="fsdp2")
    on_ranks(cfg, until_step=4, torch_adam=True)
    on_ranks(cfg, world=1, resume=True, torch_adam=True)  # torch.distributed.checkpoint reshards
    assert relative_error(weights(cfg.out), weights(fsdp2_run.out)) <= TOLERANCE
    assert loss_error(losses(cfg.out), losses(fsdp2_run.out)) <= TOLERANCE


@pytest.mark.parametrize("optimizer", ["alice", "racs"])
def test_fsdp2_checkpoint_of_a_fimkit_optimizer_on_two_processes_resumes_on_one(single, cache, tmp_path, optimizer):
    # Alice's state is whole on every rank, RACS's q and s are sharded where the weight is
    # (fimkit.optim.sharded): torch.distributed.checkpoint loads both on any count
    one = single(optimizer)
    cfg = config(tmp_path, cache, optimizer=optimizer, parallel="fsdp2")
    on_ranks(cfg, until_step=4)
    on_ranks(cfg, world=1, resume=True)
    assert relative_error(weights(cfg.out), weights(one.out)) <= TOLERANCE
    assert loss_error(losses(cfg.out), losses(one.out)) <= TOLERANCE


def test_ddp_checkpoint_resumes_in_one_process(single, cache, tmp_path, monkeypatch):
    one = single("racs")
    cfg = config(tmp_path, cache, optimizer="racs", parallel="ddp")
    on_ranks(cfg, until_step=4)
    train_module.train(config(tmp_path, cache, optimizer="racs", parallel="none", nproc=1), resume=True)
    assert relative_error(weights(cfg.out), weights(one.out)) <= TOLERANCE
    assert loss_error(losses(cfg.out), losses(one.out)) <= TOLERANCE


def test_a_damaged_shard_is_an_error_naming_the_file(fsdp2_run, tmp_path):
    import shutil

    out = Path(shutil.copytree(fsdp2_run.out, tmp_path / "run"))
    folder = Path(load_sharded_checkpoint(out / SHARDED)["sharded"])
    shard = next(folder.glob("*.distcp"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x10
    shard.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=f"{shard}.*damaged"):
        load_sharded_checkpoint(out / SHARDED)


def test_an_unfinished_sharded_write_leaves_the_previous_checkpoint(fsdp2_run, tmp_path):
    import shutil

    out = Path(shutil.copytree(fsdp2_run.out, tmp_path / "run"))
    before = (out / SHARDED / LATEST).read_text()
    (out / SHARDED / "step-00000099").mkdir()  # what a run killed while writing leaves
    (out / SHARDED / "step-00000099" / "__0_0.distcp").write_bytes(b"partial")
    assert [p.name for p in remove_unfinished(out / SHARDED)] == ["step-00000099"]
    assert (out / SHARDED / LATEST).read_text() == before
    assert load_sharded_checkpoint(out / SHARDED)["loop"]["step"] == 10


def test_an_fsdp2_checkpoint_is_not_resumed_by_one_process(fsdp2_run, cache, tmp_path):
    import shutil

    out = shutil.copytree(fsdp2_run.out, tmp_path / "run")
    with pytest.raises(ValueError, match="written by --parallel fsdp2"):
        train(config(tmp_path, cache, out=str(out), steps=12), resume=True)


# ------------------------------------------------------------------------- what rank 0 writes
def test_fsdp2_run_folder_is_written_once_by_rank_zero(fsdp2_run):
    out = Path(fsdp2_run.out)
    assert {p.name for p in out.iterdir()} == {"config.json", "run.toml", METRICS, "summary.json", SHARDED}
    assert [r[0] for r in losses(out)] == list(range(1, 11))  # one line a step, not one a rank
    saved = json.loads((out / "config.json").read_text())["train"]
    assert (saved["nproc"], saved["parallel"]) == (2, "fsdp2")


def test_fimkit_train_nproc_launches_the_processes_and_only_rank_zero_speaks(single, cache, tmp_path):
    one = single("adam")
    out = tmp_path / "run"
    command = [sys.executable, "-m", "fimkit.cli", "train", "--preset", "micro", "--data", *one.data, "--cache",
               str(cache), "--out", str(out), "--steps", "10", "--eval-every", "5", "--ckpt-every", "5",
               "--threads", "1", "--nproc", "2"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("done:") == 1 and result.stderr.count("step 10:") == 1, result.stderr
    assert {p.name for p in out.iterdir()} == {"config.json", "run.toml", METRICS, "summary.json", CHECKPOINT}
    assert loss_error(losses(out), losses(one.out)) <= TOLERANCE


def test_torchrun_runs_experiments_train_directly(single, cache, tmp_path):
    one = single("adam")
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
               "experiments.train", "--preset", "micro", "--data", *one.data, "--cache", str(cache), "--out", str(out),
               "--steps", "10", "--eval-every", "5", "--ckpt-every", "5", "--threads", "1"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "config.json").read_text())["train"]["parallel"] == "ddp"
    assert loss_error(losses(out), losses(one.out)) <= TOLERANCE


# ---------------------------------------------------------------------- non-finite gradients
@pytest.mark.filterwarnings("ignore:.*skipped a non-finite gradient")
@pytest.mark.parametrize("parallel, optimizer", [("ddp", "racs"), ("fsdp2", "adam"), ("fsdp2", "alice")])
def test_a_non_finite_gradient_on_one_rank_makes_every_rank_skip_the_same_step(cache, tmp_path, monkeypatch,
                                                                              parallel, optimizer):
    # rank 1 alone gets an infinite gradient at step 3; one process gets it on its whole batch
    one = config(tmp_path / "one", cache, optimizer=optimizer, steps=5)
    (tmp_path / "one").mkdir()
    in_one_process(one, monkeypatch, record=tmp_path / "one", poison_step=3)
    many = config(tmp_path / "many", cache, optimizer=optimizer, steps=5, parallel=parallel)
    (tmp_path / "many").mkdir()
    on_ranks(many, record=tmp_path / "many", poison_step=3)

    oracle = torch.load(tmp_path / "one" / "rank-0.pt")
    ranks = [torch.load(tmp_path / "many" / f"rank-{r}.pt") for r in (0, 1)]
    assert oracle["skips"] > 0
    assert ranks[0]["skips"] == ranks[1]["skips"] == oracle["skips"]
    assert all(torch.equal(ranks[0]["params"][k], ranks[1]["params"][k]) for k in oracle["params"])
    assert relative_error(ranks[0]["params"], oracle["params"]) <= TOLERANCE


# ------------------------------------------------------------------------------ configuration
def test_one_process_records_nproc_1_and_parallel_none():
    cfg = TrainConfig(preset="micro").resolve()
    assert (cfg.nproc, cfg.parallel) == (1, "none")


def test_several_processes_default_to_ddp():
    assert TrainConfig(preset="micro", nproc=2).resolve().parallel == "ddp"


@pytest.mark.parametrize("settings, message", [
    ({"nproc": 2, "parallel": "none"}, "needs --parallel ddp or fsdp2"),
    ({"nproc": 3}, "batch_size 4 does not split over 3 processes"),
    ({"nproc": 2, "batch_size": 4, "micro_batch": 3}, "not a multiple of micro_batch"),
    ({"nproc": 2, "micro_batch": 4, "grad_release": True}, "grad_release"),
    ({"parallel": "fsdp"}, r"parallel='fsdp' \(--parallel\)"),
])
def test_settings_that_cannot_run_on_several_processes_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(preset="micro", **settings).resolve()


def test_parallel_training_outside_torchrun_says_how_to_start_it(tmp_path, cache, monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="fimkit train --nproc N"):
        train(config(tmp_path, cache, parallel="ddp", nproc=2))
