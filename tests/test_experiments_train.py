"""Training on the shipped sample with the micro preset: metrics, config, checkpoints, resume."""

import json
import math

import pytest
import torch

from experiments.checkpoint import CHECKPOINT, load_checkpoint
from experiments.cli import train_command
from experiments.config_files import load_config
from experiments.metrics import MetricsLog
from experiments.model import LLaMA
from experiment_helpers import MICRO, micro_config
from experiments.train import evaluate, train


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("data-cache")  # the sample's tokenizer and shards, built once


def metrics(cfg):
    return MetricsLog.read(f"{cfg.out}/metrics.jsonl")


def final_state(cfg):
    return load_checkpoint(f"{cfg.out}/{CHECKPOINT}")


def assert_same_tensors(a, b):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same_tensors(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same_tensors(x, y)
    else:
        assert a == b


# Alice switches its subspace every 3 steps here, so a switch happens on each side of the resume.
@pytest.mark.parametrize("optimizer, hparams", [("adam", {}), ("racs", {}), ("alice", {"update_interval": 3})])
def test_resumed_run_is_bit_identical_to_a_straight_run(tmp_path, cache, capsys, optimizer, hparams):
    straight = micro_config(tmp_path / "straight", cache, optimizer=optimizer, hparams=hparams)
    train(straight)
    split = micro_config(tmp_path / "split", cache, optimizer=optimizer, hparams=hparams)
    train(split, until_step=4)
    assert [r["step"] for r in metrics(split)] == [1, 2, 3, 4]
    capsys.readouterr()
    train(split, resume=True)
    assert "resumed" in capsys.readouterr().err  # continued from step 4, not started again

    keys = ("step", "tokens", "train_loss", "lr", "eval_loss")
    assert [{k: r.get(k) for k in keys} for r in metrics(split)] == [{k: r.get(k) for k in keys} for r in metrics(straight)]
    a, b = final_state(straight), final_state(split)
    for part in ("model", "optimizer", "scheduler", "data"):
        assert_same_tensors(a[part], b[part])


def test_resume_drops_metrics_written_after_the_checkpoint(tmp_path, cache):
    cfg = micro_config(tmp_path, cache, ckpt_every=2)
    train(cfg, until_step=4)
    MetricsLog(f"{cfg.out}/metrics.jsonl", resume_step=4).append({"step": 5, "tokens": 0, "train_loss": 0.0})
    train(cfg, resume=True)  # the checkpoint is at step 4; the stray step-5 line must go
    assert [r["step"] for r in metrics(cfg)] == list(range(1, 9))


def test_resume_with_changed_settings_is_refused(tmp_path, cache):
    cfg = micro_config(tmp_path, cache)
    train(cfg, until_step=2)
    with pytest.raises(ValueError, match="lr"):
        train(micro_config(tmp_path, cache, lr=0.5), resume=True)


def test_metrics_have_the_api_fields_and_eval_at_the_cadence(tmp_path, cache):
    cfg = micro_config(tmp_path, cache, eval_every=4)
    summary = train(cfg)
    records = metrics(cfg)
    assert len(records) == 8
    for r in records:
        assert {"step", "tokens", "train_loss", "lr", "seconds"} <= set(r)
        assert r["tokens"] == r["step"] * 4 * 32
    assert [r["step"] for r in records if "eval_loss" in r] == [4, 8]
    assert records[-1]["eval_ppl"] == pytest.approx(math.exp(records[-1]["eval_loss"]))
    assert summary["final_eval_loss"] == records[-1]["eval_loss"]
    assert summary["optimizer_state_bytes"] > 0


def test_config_json_repeats_the_run_exactly(tmp_path, cache):
    first = micro_config(tmp_path / "a", cache, lr=3e-3, seed=5)
    train(first)
    again = load_config(f"{first.out}/config.json")
    again.out = str(tmp_path / "b" / "run")
    train(again)
    assert [r["train_loss"] for r in metrics(first)] == [r["train_loss"] for r in metrics(again)]


def test_config_json_records_resolved_values(tmp_path, cache):
    cfg = micro_config(tmp_path, cache)
    train(cfg, until_step=1)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["train"]["lr"] == 1e-3 and saved["train"]["steps"] == 8 and saved["train"]["data_seed"] == 0
    assert saved["model"]["dim"] == 32 and saved["data"]["vocab_size"] == 512


def test_gradient_accumulation_matches_one_big_batch(tmp_path, cache):
    accumulated = micro_config(tmp_path / "acc", cache, micro_batch=1, steps=3)
    whole = micro_config(tmp_path / "whole", cache, micro_batch=4, steps=3)
    train(accumulated)
    train(whole)
    a = [r["train_loss"] for r in metrics(accumulated)]
    b = [r["train_loss"] for r in metrics(whole)]
    assert a == pytest.approx(b, abs=1e-5)


def test_eval_loss_is_the_mean_over_all_tokens():
    torch.manual_seed(0)
    model = LLaMA(MICRO.model)
    x = torch.randint(0, 512, (5, 16))
    y = torch.randint(0, 512, (5, 16))
    batched = evaluate(model, x, y, micro_batch=2, device=torch.device("cpu"), amp=None)  # batches of 2, 2, 1
    torch.testing.assert_close(torch.tensor(batched), model(x, y).detach(), rtol=1e-6, atol=1e-6)


def test_unknown_optimizer_is_a_clear_cli_error(tmp_path, cache, capsys):
    code = train_command(["--preset", "tiny", "--optimizer", "nosuch", "--out", str(tmp_path)])
    assert code == 2
    assert "unknown optimizer 'nosuch'" in capsys.readouterr().err


def test_unknown_preset_is_a_clear_cli_error(capsys):
    assert train_command(["--preset", "huge"]) == 2
    assert "unknown preset 'huge'" in capsys.readouterr().err


def test_cli_trains_and_writes_the_run_folder(tmp_path, cache):
    cfg = micro_config(tmp_path, cache)
    code = train_command(["--preset", "micro", "--data", *cfg.data, "--cache", str(cache), "--out", cfg.out,
                          "--steps", "2", "--threads", "1", "--opt", "eps=1e-6"])
    assert code == 0
    names = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"config.json", "metrics.jsonl", "checkpoint.pt", "summary.json"} <= names
    assert load_config(tmp_path / "run" / "config.json").hparams["eps"] == 1e-6


@pytest.mark.slow
def test_compiled_training_matches_eager(tmp_path, cache):
    eager = micro_config(tmp_path / "eager", cache, steps=3)
    compiled = micro_config(tmp_path / "compiled", cache, steps=3, compile=True)
    train(eager)
    train(compiled)
    assert [r["train_loss"] for r in metrics(compiled)] == pytest.approx([r["train_loss"] for r in metrics(eager)], abs=1e-4)


def test_a_resumed_run_on_another_corpus_says_so(tmp_path, capsys):
    import json
    from types import SimpleNamespace

    from experiments.train import warn_if_corpus_differs

    record = {"source": "debian", "documents": 10, "sha256": "a" * 64}
    (tmp_path / "config.json").write_text(json.dumps({"data": {"corpus": record}}))
    warn_if_corpus_differs(SimpleNamespace(meta={"corpus": record}), tmp_path, None)
    assert "corpus differs" not in capsys.readouterr().err
    warn_if_corpus_differs(SimpleNamespace(meta={"corpus": {**record, "sha256": "b" * 64}}), tmp_path, None)
    assert f"the run in {tmp_path}" in capsys.readouterr().err


def test_repeating_a_run_on_another_corpus_says_so(tmp_path, capsys):
    from types import SimpleNamespace

    from experiments.train import warn_if_corpus_differs

    recorded = {"source": "debian", "documents": 10}
    warn_if_corpus_differs(SimpleNamespace(meta={"corpus": {**recorded, "documents": 11}}), tmp_path, recorded)
    assert "the run repeated" in capsys.readouterr().err
