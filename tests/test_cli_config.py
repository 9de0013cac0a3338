"""Configuring a run (issue 12, items 3-4): TOML config files with ``--set`` overrides, strict keys,
the resolved config saved beside every run, intervals that follow ``--steps``, a clear message
when ``--until-step`` stops a run, and a data cache outside the working directory."""

import json
import textwrap
import tomllib
from pathlib import Path

import pytest

import experiments.train as train_module
from experiments.cli import data_command, train_command
from experiments.config import TrainConfig
from experiments.config_files import load_config, to_toml
from experiments.data.location import CACHE_ENV
from experiments.metrics import MetricsLog
from experiments.reproduce.protocol import get_protocol
from experiments.reproduce.plan import RunSpec
from experiments.reproduce.runner import run_config
from experiments.train import RESUMABLE_CHANGES, train
from experiment_helpers import micro_config

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "experiments" / "configs" / "example.toml"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("data-cache")


def write(tmp_path, text, name="run.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


# ------------------------------------------------------------------------- TOML files
def test_the_example_config_loads_and_resolves():
    cfg = load_config(EXAMPLE).resolve()
    assert (cfg.preset, cfg.steps, cfg.optimizer) == ("tiny", 300, "derive(Kronecker(Full(), DiagonalFactor()), lr=1e-2)")
    assert cfg.lr == 1e-2 and cfg.hparams["precondition_frequency"] == 10


def test_sections_and_top_level_keys_are_the_same_fields(tmp_path):
    sectioned = write(tmp_path, """
        [run]
        preset = "micro"
        steps = 5
        [optimizer]
        optimizer = "racs"
        lr = 0.02
        [optimizer.hparams]
        alpha = 0.1
    """, "a.toml")
    flat = write(tmp_path, """
        preset = "micro"
        steps = 5
        optimizer = "racs"
        lr = 0.02
        hparams = { alpha = 0.1 }
    """, "b.toml")
    assert load_config(sectioned) == load_config(flat)
    assert load_config(flat) == TrainConfig(preset="micro", steps=5, optimizer="racs", lr=0.02, hparams={"alpha": 0.1})


def test_an_unknown_section_is_an_error_suggesting_the_closest(tmp_path):
    with pytest.raises(ValueError, match=r"unknown section or key 'optimzer' \(did you mean 'optimizer'\?\)"):
        load_config(write(tmp_path, "[optimzer]\nlr = 0.1\n"))


def test_an_unknown_key_in_a_section_suggests_the_closest_and_lists_the_section(tmp_path):
    with pytest.raises(ValueError, match=r"unknown key 'stpes' in \[run\] \(did you mean 'steps'\?\); valid keys of"):
        load_config(write(tmp_path, "[run]\nstpes = 3\n"))


def test_a_key_in_the_wrong_section_names_its_section(tmp_path):
    with pytest.raises(ValueError, match=r"'lr' belongs in \[optimizer\], not in \[run\]"):
        load_config(write(tmp_path, "[run]\nlr = 0.1\n"))


def test_a_key_given_twice_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="'steps' is given twice"):
        load_config(write(tmp_path, "steps = 3\n[run]\nsteps = 4\n"))


def test_a_value_outside_its_domain_names_the_field_and_flag(tmp_path):
    cfg = load_config(write(tmp_path, "[run]\nsteps = \"ten\"\n"))
    with pytest.raises(ValueError, match=r"steps='ten' \(--steps\) is not an integer >= 1"):
        cfg.resolve()


def test_malformed_toml_is_a_one_line_cli_error_naming_the_file(tmp_path, capsys):
    path = write(tmp_path, "[run\nsteps = 3\n")
    assert train_command(["--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(path) in err and "not valid TOML" in err, err


# ------------------------------------------------------------------------------ --set
def test_set_overrides_the_config_file_and_flags_override_set(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(train_module, "train", lambda cfg, **kw: seen.setdefault("cfg", cfg))
    path = write(tmp_path, "[run]\npreset = \"micro\"\nsteps = 5\n[optimizer]\nlr = 0.02\n")
    assert train_command(["--config", str(path), "--set", "run.steps=7", "--set", "optimizer.lr=3e-3",
                          "--lr", "0.5"]) == 0
    assert (seen["cfg"].steps, seen["cfg"].lr) == (7, 0.5)


def test_set_reads_toml_values_and_bare_strings():
    from experiments.config_files import apply_setting

    values = TrainConfig().to_dict()
    for setting in ("run.compile=true", "data.data=['a.txt', 'b.txt']", "optimizer.optimizer=derive(RowColumn())",
                    "optimizer.hparams.rank=64", "warmup_fraction=0.2"):
        apply_setting(values, setting)
    assert values["compile"] is True and values["data"] == ["a.txt", "b.txt"]
    assert values["optimizer"] == "derive(RowColumn())" and values["hparams"] == {"rank": 64}
    assert values["warmup_fraction"] == 0.2


@pytest.mark.parametrize("setting, words", [
    ("run.stpes=3", ["unknown key 'stpes' in [run]", "did you mean 'steps'"]),
    ("optimzer.lr=3", ["unknown key", "did you mean 'optimizer.lr'"]),
    ("run.lr=3", ["'lr' belongs in [optimizer]"]),
    ("steps", ["expected SECTION.KEY=VALUE"]),
    ("run.steps.x=3", ["no keys of its own"]),
])
def test_a_bad_set_is_a_one_line_error(setting, words, tmp_path, capsys):
    assert train_command(["--preset", "micro", "--out", str(tmp_path / "run"), "--set", setting]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and all(w in err for w in words), err


# ------------------------------------------------------------- the resolved config saved
def test_every_run_saves_its_resolved_config_as_toml_that_repeats_it(tmp_path, cache):
    cfg = micro_config(tmp_path, cache, optimizer="racs", steps=2, hparams={"alpha": 0.1})
    train(cfg)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["train"]
    assert load_config(tmp_path / "run" / "run.toml").resolve().to_dict() == saved


def test_to_toml_round_trips_every_field_but_nones():
    cfg = TrainConfig(preset="micro", optimizer="alice", hparams={"rank": 4, "seed": None}).resolve()
    text = to_toml(cfg, "a header\nof two lines")
    assert text.startswith("# a header\n# of two lines\n") and "# None (the default): " in text
    loaded = tomllib.loads(text)
    assert loaded["optimizer"]["hparams"]["rank"] == 4 and "seed" not in loaded["optimizer"]["hparams"]
    assert loaded["run"]["steps"] == cfg.steps and loaded["optimizer"]["lr"] == cfg.lr


def test_cli_trains_from_a_toml_config_with_set(tmp_path, cache):
    cfg = micro_config(tmp_path, cache)
    path = write(tmp_path, f"""
        [run]
        preset = "micro"
        steps = 2
        threads = 1
        out = "{cfg.out}"
        [data]
        data = {json.dumps(cfg.data)}
        cache = "{cache}"
    """)
    assert train_command(["--config", str(path), "--set", "optimizer.lr=3e-3"]) == 0
    assert load_config(Path(cfg.out) / "config.json").lr == 3e-3


# ------------------------------------------------------------------------- intervals
def test_intervals_not_given_scale_with_the_runs_length():
    for steps, every, ckpt in ((12, 1, 2), (150, 8, 15), (10_000, 500, 1000)):
        cfg = TrainConfig(preset="tiny", steps=steps).resolve()
        assert (cfg.eval_every, cfg.ckpt_every) == (every, ckpt), steps


def test_intervals_given_are_kept():
    cfg = TrainConfig(preset="tiny", steps=12, eval_every=5, ckpt_every=7, log_every=3).resolve()
    assert (cfg.eval_every, cfg.ckpt_every, cfg.log_every) == (5, 7, 3)


def test_a_12_step_run_gets_several_eval_points_and_checkpoints(tmp_path, cache, monkeypatch):
    saved_at = []
    save = train_module.save_checkpoint
    monkeypatch.setattr(train_module, "save_checkpoint", lambda *a, **kw: (saved_at.append(kw["loop"]["step"]),
                                                                           save(*a, **kw)))
    cfg = micro_config(tmp_path, cache, steps=12)
    train(cfg)
    evals = [r["step"] for r in MetricsLog.read(f"{cfg.out}/metrics.jsonl") if "eval_loss" in r]
    assert len(evals) >= 10 and evals[-1] == 12
    assert saved_at == [2, 4, 6, 8, 10, 12]


def test_the_reproduction_sets_its_intervals_explicitly(tmp_path):
    for name in ("nano", "tiny", "quick", "60m"):
        protocol = get_protocol(name)
        cfg = run_config(protocol, RunSpec.make("adam", lr=1e-3), tmp_path, str(tmp_path / "cache")).resolve()
        assert (cfg.eval_every, cfg.ckpt_every) == (protocol.eval_every, protocol.ckpt_every), name


def test_committed_reproduction_runs_resolve_to_the_config_they_were_trained_with():
    runs = [r for r in sorted((ROOT / "paper_figs" / "runs" / "nano").glob("*/request.json"))
            if (r.parent / "config.json").exists()]  # a run just started has no config.json yet
    if not runs:
        pytest.skip("no committed reproduction runs")
    for request in runs:
        saved = json.loads((request.parent / "config.json").read_text())["train"]
        resolved = load_config(request).resolve().to_dict()
        # the optimizer's own defaults are fimkit's (they change with it); every setting is this module's
        changed = {k for k in saved if k != "hparams" and saved[k] != resolved[k]}
        assert not changed, f"{request.parent.name}: {sorted(changed)}"
        assert set(resolved) - set(saved) <= RESUMABLE_CHANGES  # new settings never block a resume


# ------------------------------------------------------------------------ --until-step
def test_until_step_says_where_the_run_stopped_and_how_to_continue(tmp_path, cache, capsys):
    cfg = micro_config(tmp_path, cache)
    train(cfg, until_step=3)
    err = capsys.readouterr().err
    assert "stopped at step 3 of 8 (--until-step 3)" in err and f"fimkit train --out {cfg.out} --resume" in err
    assert "done:" not in err


# ---------------------------------------------------------------------------- the cache
def test_the_cache_defaults_to_none_meaning_the_default_directory():
    assert TrainConfig().cache is None and TrainConfig().resolve().cache is None


def test_a_run_without_cache_builds_in_the_default_directory_not_the_working_one(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "default-cache"))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    cfg = micro_config(tmp_path, steps=1)
    cfg.cache = None
    train(cfg)
    assert (tmp_path / "default-cache" / "tokens").is_dir()
    assert not any((tmp_path / "work").iterdir())


def test_data_where_prints_the_resolved_cache_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "somewhere"))
    assert data_command(["--where"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == str(tmp_path / "somewhere")
    assert not (tmp_path / "somewhere").exists()  # nothing built


def test_data_where_follows_cache(tmp_path, capsys):
    assert data_command(["--where", "--cache", str(tmp_path / "given")]) == 0
    assert capsys.readouterr().out.splitlines()[0] == str(tmp_path / "given")


def test_the_non_finite_policy_is_an_option_of_every_optimizer_adam_included():
    for optimizer in ("adam", "racs"):
        cfg = TrainConfig(preset="micro", optimizer=optimizer, hparams={"on_nonfinite": "raise"}).resolve()
        assert cfg.hparams["on_nonfinite"] == "raise"
