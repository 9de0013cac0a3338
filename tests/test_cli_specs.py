"""A structure from the command line (issue 12, item 9): ``fimkit train --optimizer SPEC`` derives
the optimizer on the spot (an expression, ``derive(...)`` or ``module:attribute``), records the
spec so that ``--config`` and ``--resume`` rebuild it, and ``fimkit compare`` takes the same specs."""

import json
import sys
import textwrap

import pytest
import torch

import experiments.specs as specs
from experiments.cli import train_command
from experiments.compare import parse_spec, run_dir_name, split_spec
from experiments.config import TrainConfig
from experiments.config_files import load_config
from experiments.metrics import MetricsLog
from experiments.train import train
from experiment_helpers import micro_config
from fimkit.cli import main as fimkit_main
from fimkit.optim import registered, registry
from fimkit.structures import Kronecker

KRON = "Kronecker(Full(), DiagonalFactor())"


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch):
    """Each test registers its specs in a copy of the registry (and builds them anew)."""
    built_elsewhere = {text.lower() for text in specs._BUILT}  # specs other test files registered
    monkeypatch.setattr(registry, "_REGISTRY", {k: v for k, v in registry._REGISTRY.items() if k not in built_elsewhere})
    monkeypatch.setattr(specs, "_BUILT", {})


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("data-cache")


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A user's module ``cli_spec_structures`` with a Structure instance, a Structure class and an optimizer."""
    (tmp_path / "cli_spec_structures.py").write_text(textwrap.dedent("""
        from dataclasses import dataclass
        import torch
        from fimkit.structures import DiagonalFactor, Full, Identity, Kronecker

        LEFT = Kronecker(Full(), Identity())

        @dataclass(frozen=True)
        class RowsOnly(Kronecker):
            rows: object = DiagonalFactor()
            cols: object = Identity()

        class PlainSGD(torch.optim.SGD):
            pass
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "cli_spec_structures"
    sys.modules.pop("cli_spec_structures", None)  # the next test's module of this name is another file


def forget_specs():
    """What a new process starts with: no spec registered or built."""
    for text in list(specs._BUILT):
        registry._REGISTRY.pop(text.lower(), None)
    specs._BUILT.clear()


def losses(cfg):
    return [r["train_loss"] for r in MetricsLog.read(f"{cfg.out}/metrics.jsonl")]


def test_an_expression_trains_a_preset_with_the_derived_optimizer(tmp_path, cache):
    summary = train(micro_config(tmp_path, cache, optimizer=KRON, steps=2))
    assert summary["optimizer"] == KRON and summary["steps"] == 2
    optimizer = registered()[KRON.lower()]
    assert isinstance(optimizer.structure, Kronecker)


def test_config_json_records_the_spec_and_repeats_the_run(tmp_path, cache):
    first = micro_config(tmp_path / "a", cache, optimizer=f"derive({KRON}, lr=1e-2)", steps=3)
    train(first)
    again = load_config(tmp_path / "a" / "run" / "config.json")
    assert again.optimizer == f"derive({KRON}, lr=1e-2)"
    forget_specs()  # as in a new process: the spec is derived again from its text
    again.out = str(tmp_path / "b" / "run")
    train(again)
    assert losses(first) == losses(again)


def test_a_spec_run_resumes_bit_identically_in_a_new_process(tmp_path, cache):
    straight = micro_config(tmp_path / "straight", cache, optimizer=KRON, steps=4)
    train(straight)
    split = micro_config(tmp_path / "split", cache, optimizer=KRON, steps=4)
    train(split, until_step=2)
    forget_specs()
    assert train_command(["--out", split.out, "--resume"]) == 0
    assert losses(split) == losses(straight)


def test_derive_keyword_arguments_become_the_runs_defaults():
    cfg = TrainConfig(preset="micro", optimizer="derive(RowColumn(), lr=0.03, betas=(0.8, 0.99))").resolve()
    assert cfg.lr == 0.03 and cfg.hparams["betas"] == (0.8, 0.99)


def test_a_flag_overrides_the_lr_a_derive_call_gives():
    assert TrainConfig(preset="micro", optimizer="derive(RowColumn(), lr=0.03)", lr=0.5).resolve().lr == 0.5


def test_a_fimkit_derive_name_is_a_structure_spec():
    cfg = TrainConfig(preset="micro", optimizer="whiten_left").resolve()
    assert repr(registered()[cfg.optimizer].structure) == "Kronecker(Full(), Identity())"


def test_a_module_attribute_structure_instance_is_derived(user_module):
    cfg = TrainConfig(preset="micro", optimizer=f"{user_module}:LEFT").resolve()
    assert cfg.optimizer == f"{user_module}:LEFT"  # case kept: a module path is case-sensitive
    assert repr(registered()[cfg.optimizer.lower()].structure) == "Kronecker(Full(), Identity())"


def test_a_module_attribute_structure_class_is_instantiated_and_derived(user_module):
    cfg = TrainConfig(preset="micro", optimizer=f"{user_module}:RowsOnly").resolve()
    assert type(registered()[cfg.optimizer.lower()].structure).__name__ == "RowsOnly"


def test_a_module_attribute_optimizer_class_trains_as_it_is(user_module, tmp_path, cache):
    cfg = micro_config(tmp_path, cache, optimizer=f"{user_module}:PlainSGD", steps=2, hparams={"momentum": 0.9})
    train(cfg)
    resolved = load_config(f"{cfg.out}/config.json")
    assert resolved.hparams["momentum"] == 0.9 and resolved.lr == 1e-3  # torch's SGD default lr
    assert issubclass(registered()[cfg.optimizer.lower()], torch.optim.SGD)


def test_an_unknown_hyperparameter_of_a_spec_suggests_the_closest():
    with pytest.raises(ValueError, match="did you mean 'betas'"):
        TrainConfig(preset="micro", optimizer=KRON, hparams={"betaz": [0.9, 0.9]}).resolve()


def test_a_spec_is_parsed_never_evaluated(tmp_path):
    marker = tmp_path / "evaluated"
    with pytest.raises(ValueError, match="unsupported syntax"):
        TrainConfig(preset="micro", optimizer=f"__import__('os').system('touch {marker}')").resolve()
    assert not marker.exists()


BAD_SPECS = [
    ("Kronecker(Full(), Nope())", ["Nope()", "may only call"]),
    ("derive(RowColumn(), lr=-1)", ["lr=-1", ">= 0"]),
    ("derive(RowColumn(), lrr=1)", ["'lrr'"]),
    ("derive(RowColumn(), pre=Momentum())", ["pre=Momentum()", "not a constant"]),
    ("derive(RowColumn(), RowColumn())", ["one structure"]),
    ("derive(RowColumn()", ["cannot parse"]),
    ("no_such_module_xyz:Thing", ["cannot import module 'no_such_module_xyz'"]),
    ("torch.optim:SGDD", ["no attribute 'SGDD'", "did you mean 'SGD'"]),
    ("torch:nn", ["not a fimkit Structure"]),
    ("rac", ["unknown optimizer 'rac'", "did you mean 'racs'", "registered:"]),
]


@pytest.mark.parametrize("spec, words", BAD_SPECS, ids=[s for s, _ in BAD_SPECS])
def test_a_bad_spec_is_a_one_line_error_saying_what_is_wrong(spec, words, tmp_path, capsys):
    code = train_command(["--preset", "micro", "--optimizer", spec, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and err.startswith("fimkit train: error:"), err
    assert all(w in err for w in words), err
    assert not (tmp_path / "run").exists()


def test_a_spec_run_folder_is_a_safe_name():
    cfg = TrainConfig(preset="micro", optimizer=f"derive({KRON}, lr=1e-2)").resolve()
    assert cfg.out == "runs/micro-derive-Kronecker-Full-DiagonalFactor-lr1e-2"


# --------------------------------------------------------------------- fimkit compare
def test_compare_splits_a_structure_expression_from_its_settings():
    assert split_spec(f"derive({KRON}, lr=1e-2):lm_head=matrix,eps=1e-6") == (f"derive({KRON}, lr=1e-2)",
                                                                             "lm_head=matrix,eps=1e-6")
    assert split_spec("my_pkg.mod:Thing:lr=3e-3") == ("my_pkg.mod:Thing", "lr=3e-3")
    assert split_spec("adam:lr=3e-3") == ("adam", "lr=3e-3")


def test_compare_spec_keeps_the_case_of_a_module_path_and_lowers_a_name():
    assert parse_spec("My.Mod:Thing:lr=0.1")[:2] == ("My.Mod:Thing", {"optimizer": "My.Mod:Thing", "lr": 0.1})
    assert parse_spec("RACS")[0] == "racs"


def test_compare_run_folders_of_old_specs_keep_their_names():
    assert run_dir_name("alice:lm_head=matrix,rank=32", 0, 1) == "alice-lm_headmatrix-rank32"
    assert run_dir_name("adam:lr=3e-3", 1, 2) == "adam-lr3e-3-seed1"


def test_compare_trains_a_structure_spec(tmp_path, capsys):
    cfg = micro_config(tmp_path)
    code = fimkit_main(["compare", "--preset", "micro", "--optimizers", "adam", "RowColumn():lm_head=adam",
                        "--steps", "2", "--data", *cfg.data, "--cache", cfg.cache, "--out", str(tmp_path / "cmp"),
                        "--threads", "1"])
    assert code == 0
    assert "| RowColumn():lm_head=adam |" in capsys.readouterr().out
    summaries = json.loads((tmp_path / "cmp" / "results.json").read_text())
    assert [s["optimizer"] for s in summaries] == ["adam", "RowColumn()"]


def test_compare_spec_with_a_misspelt_config_field_suggests_it(tmp_path, capsys):
    code = fimkit_main(["compare", "--preset", "micro", "--optimizers", "alice:lm_haed=matrix", "--out",
                        str(tmp_path / "cmp")])
    err = capsys.readouterr().err
    assert code == 2 and "unknown key 'lm_haed'" in err and "did you mean 'lm_head'" in err, err
