"""Optional TensorBoard and wandb logging (issue 12, item 5): neither package is needed; asked for
without it, a run stops before any work with the ``pip install`` that fixes it. Fakes stand in for
the packages; one test uses the real TensorBoard where it is installed."""

import importlib.util
import sys
import types

import pytest

from experiments.cli import train_command
from experiments.train import train
from experiment_helpers import micro_config


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("data-cache")


class FakeWriter:
    instances = []

    def __init__(self, log_dir, purge_step=None):
        self.log_dir, self.purge_step, self.scalars, self.closed = log_dir, purge_step, [], False
        FakeWriter.instances.append(self)

    def add_scalar(self, tag, value, global_step):
        self.scalars.append((tag, global_step, value))

    def close(self):
        self.closed = True


class FakeRun:
    def __init__(self, **kwargs):
        self.kwargs, self.logged, self.finished = kwargs, [], False

    def log(self, values, step):
        self.logged.append((step, values))

    def finish(self):
        self.finished = True


@pytest.fixture
def fake_tensorboard(monkeypatch):
    FakeWriter.instances = []
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeWriter))
    return FakeWriter.instances


@pytest.fixture
def fake_wandb(monkeypatch):
    runs = []

    def init(**kwargs):
        runs.append(FakeRun(**kwargs))
        return runs[-1]

    module = types.SimpleNamespace(init=init)
    monkeypatch.setitem(sys.modules, "wandb", module)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    return runs


@pytest.mark.parametrize("flag, package", [("--tensorboard", "tensorboard"), ("--wandb", "wandb")])
def test_a_missing_logging_package_is_a_one_line_error_before_any_work(flag, package, tmp_path, monkeypatch, capsys):
    module = "torch.utils.tensorboard" if package == "tensorboard" else "wandb"
    monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    cfg = micro_config(tmp_path)
    code = train_command(["--preset", "micro", "--data", *cfg.data, "--cache", cfg.cache, "--out", cfg.out, flag])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and f"pip install {package}" in err and flag in err, err
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run" / "metrics.jsonl").exists()


def test_no_logging_is_asked_for_by_default(tmp_path, cache, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    monkeypatch.setitem(sys.modules, "wandb", None)
    assert train(micro_config(tmp_path, cache, steps=1))["steps"] == 1


def test_tensorboard_gets_train_and_eval_scalars_at_their_steps(tmp_path, cache, fake_tensorboard):
    train(micro_config(tmp_path, cache, steps=6, eval_every=3, log_every=2, tensorboard=True))
    (writer,) = fake_tensorboard
    assert writer.log_dir == str(tmp_path / "run" / "tensorboard") and writer.closed
    steps = lambda tag: [s for t, s, _ in writer.scalars if t == tag]  # noqa: E731
    assert steps("train/loss") == [2, 3, 4, 6] and steps("eval/loss") == [3, 6]
    assert steps("train/lr") == steps("throughput/tokens_per_s") == [2, 3, 4, 6]


def test_a_resumed_run_purges_tensorboard_events_after_its_checkpoint(tmp_path, cache, fake_tensorboard):
    cfg = micro_config(tmp_path, cache, steps=4, tensorboard=True)
    train(cfg, until_step=2)
    train(cfg, resume=True)
    assert [w.purge_step for w in fake_tensorboard] == [None, 3]


def test_wandb_is_offline_by_default(tmp_path, cache, fake_wandb):
    train(micro_config(tmp_path, cache, steps=2, wandb=True))
    (run,) = fake_wandb
    assert run.kwargs["mode"] == "offline" and run.kwargs["dir"] == str(tmp_path / "run")
    assert run.kwargs["project"] == "fimkit" and run.kwargs["config"]["steps"] == 2 and run.finished
    assert [step for step, _ in run.logged] == [1, 2] and "eval/loss" in run.logged[-1][1]


def test_wandb_respects_wandb_mode_and_the_project(tmp_path, cache, fake_wandb, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    train(micro_config(tmp_path, cache, steps=1, wandb=True, wandb_project="mine"))
    assert (fake_wandb[0].kwargs["mode"], fake_wandb[0].kwargs["project"]) == ("disabled", "mine")


def test_a_resumed_run_continues_its_wandb_run(tmp_path, cache, fake_wandb):
    cfg = micro_config(tmp_path, cache, steps=4, wandb=True)
    train(cfg, until_step=2)
    train(cfg, resume=True)
    first, resumed = (r.kwargs["id"] for r in fake_wandb)
    assert first == resumed and len(first) == 8 and fake_wandb[1].kwargs["resume"] == "allow"


def test_logging_settings_may_change_on_resume(tmp_path, cache, fake_tensorboard):
    cfg = micro_config(tmp_path, cache, steps=4)
    train(cfg, until_step=2)
    cfg.tensorboard, cfg.log_every = True, 1
    train(cfg, resume=True)
    assert [s for t, s, _ in fake_tensorboard[0].scalars if t == "train/loss"] == [3, 4]


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard is not installed")
def test_real_tensorboard_event_files_hold_the_losses(tmp_path, cache):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(micro_config(tmp_path, cache, steps=3, tensorboard=True))
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("eval/loss")] == [1, 2, 3]
    assert {"train/loss", "train/lr", "throughput/tokens_per_s"} <= set(events.Tags()["scalars"])


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb is not installed")
def test_real_wandb_offline_run_records_the_losses_under_the_run(tmp_path, cache, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    train(micro_config(tmp_path, cache, steps=3, wandb=True))
    out = tmp_path / "run"
    run_id = (out / "wandb-id").read_text().strip()
    (records,) = (out / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb")
    data = records.read_bytes()  # wandb's record log: the history keys are stored as text
    assert all(key.encode() in data for key in ("eval/loss", "train/loss", "train/lr", "throughput/tokens_per_s"))
