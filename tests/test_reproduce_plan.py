"""The reproduction's plan: one id per configuration, tuning by sweep, dependents after sweeps."""

from __future__ import annotations

import pytest

from experiments.reproduce.plan import RunSpec, plan, sweep_grid
from experiments.reproduce.protocol import get_protocol
from experiments.reproduce.runner import planned_size, run_config

NANO = get_protocol("nano")


def test_a_configuration_has_one_id_however_it_is_asked_for():
    # Alice's paper lm_head is the matrix optimizer and its default tracking is 0.999
    assert RunSpec.make("alice", lr=0.02, lm_head="matrix", tracking_beta=0.999).id == RunSpec.make("alice", lr=0.02).id
    assert RunSpec.make("racs", lr=0.02, lm_head="adam").id == "racs-lr0.02-s0"
    assert RunSpec.make("racs", lr=0.02, ema=False).id != RunSpec.make("racs", lr=0.02).id


def test_a_sweep_is_extended_past_the_edge_that_holds_its_best():
    grid = list(NANO.sweeps["adam"])
    assert sweep_grid(NANO, "adam", {}) == grid
    best_at_top = {lr: 5.0 - lr for lr in grid}
    assert sweep_grid(NANO, "adam", best_at_top) == grid + [grid[-1] * 2]
    inside = {lr: abs(lr - grid[1]) for lr in grid}
    assert sweep_grid(NANO, "adam", inside) == grid


def test_seeds_and_the_per_role_baseline_wait_for_the_sweeps():
    first = plan(NANO, {})
    assert "seeds:adam" not in first.roles and "per_role_adam" not in first.roles and first.waiting
    finished = {s.id: 4.0 + abs(s.options["lr"] - NANO.sweeps[s.optimizer][1]) for role, specs in first.roles.items()
                if role.startswith("sweep:") for s in specs.values()}
    second = plan(NANO, finished)
    best_adam = second.roles["seeds:adam"]["seed 0"]
    assert best_adam.options["lr"] == NANO.sweeps["adam"][1]
    assert [s.seed for s in second.roles["seeds:alice"].values()] == list(NANO.seeds)
    assert all(s.options["lr"] == best_adam.options["lr"] for s in second.roles["per_role_adam"].values())
    assert second.roles["candidates_at_adam_lr"]["racs"].options["adam_lr"] == best_adam.options["lr"]


def test_the_whole_cpu_tier_is_about_forty_runs_of_a_thousand_steps():
    assert NANO.steps >= 1000 and 35 <= planned_size(NANO) <= 45


def test_every_headline_optimizer_gets_the_same_tuning_budget_and_adam_includes_the_paper_lr():
    assert len({len(g) for g in NANO.sweeps.values()}) == 1 and len(NANO.sweeps["adam"]) >= 4
    assert 1e-3 in NANO.sweeps["adam"]


def test_a_run_config_takes_config_fields_from_the_settings_and_the_rest_as_hyperparameters(tmp_path):
    cfg = run_config(NANO, RunSpec.make("alice", 1, lr=0.01, lm_head="adam", compensation="none"), tmp_path, ".cache")
    assert (cfg.lr, cfg.lm_head, cfg.hparams, cfg.seed, cfg.data_seed) == (0.01, "adam", {"compensation": "none"}, 1, 1)
    assert (cfg.steps, cfg.batch_size, cfg.vocab_size) == (NANO.steps, NANO.batch_size, NANO.vocab_size)


def test_unknown_reproduction_presets_are_refused():
    with pytest.raises(ValueError, match="nano"):
        get_protocol("huge")


def test_cached_runs_trained_on_another_corpus_are_named(tmp_path, monkeypatch):
    import json
    from types import SimpleNamespace

    import experiments.data
    from experiments.reproduce.runner import corpus_changes

    now = {"source": "debian", "documents": 100, "sha256": "b" * 64, "train_tokens": 5, "val_tokens": 1}
    monkeypatch.setattr(experiments.data, "prepare", lambda spec, cache: SimpleNamespace(meta={"corpus": now}))
    for run_id, sha in (("same", "b" * 64), ("other", "a" * 64)):
        (tmp_path / run_id).mkdir()
        recorded = {**now, "sha256": sha}
        (tmp_path / run_id / "config.json").write_text(json.dumps({"data": {"corpus": recorded}}))
    changes = corpus_changes(get_protocol("quick"), tmp_path, ["same", "other"], None)
    assert len(changes) == 1 and "cached run other" in changes[0] and "aaaaaaaaaaaa -> bbbbbbbbbbbb" in changes[0]
