"""Every bad input gets a clear error (issue 11): one table, each row the call, the error type and
the words that matter in its message (the setting, the value, the valid range or the file)."""

from __future__ import annotations

import copy
import json
import warnings

import pytest
import torch

import fimkit
from experiments.cli import train_command
from experiments.config import TrainConfig
from experiments.config_files import load_config
from fimkit.optim import registered
from fimkit.structures import Diagonal, ParamSpec, RowColumn, Structure


def W(shape=(4, 6)):
    return torch.nn.Parameter(torch.zeros(shape))


def opt(name, **hparams):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return registered()[name]([W()], **hparams)


def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Linear(6, 2))


# ------------------------------------------------------------------ hyperparameters
HYPERPARAMETERS = [
    ("racs", {"alpha": -1}, "alpha=-1", ">= 0"),
    ("racs", {"alpha": float("nan")}, "alpha=nan", "finite"),
    ("apollo", {"alpha": -1}, "alpha=-1", ">= 0"),
    ("apollo_mini", {"alpha": float("nan")}, "alpha=nan", "finite"),
    ("swan", {"alpha": -1}, "alpha=-1", ">= 0"),
    ("sinkgd", {"alpha": -1}, "alpha=-1", ">= 0"),
    ("soap", {"eps": -1}, "eps=-1", ">= 0"),
    ("eigen_adam", {"eps": -1}, "eps=-1", ">= 0"),
    ("shampoo", {"stat_init": -1}, "stat_init=-1", ">= 0"),
    ("adafactor", {"d": 0}, "d=0", "> 0"),
    ("adam", {"lr": float("inf")}, "lr=inf", "finite"),
    ("racs", {"lr": float("inf")}, "lr=inf", "finite"),
    ("alice", {"lr": float("inf")}, "lr=inf", "finite"),
    ("muon", {"lr": -0.1}, "lr=-0.1", ">= 0"),
    ("adam", {"lr": "abc"}, "lr='abc'", "number"),
    ("adam", {"betas": (0.9,)}, "betas=(0.9,)", "pair"),
    ("soap", {"betas": (1.0, 0.9)}, "betas=(1.0, 0.9)", "[0, 1)"),
    ("racs", {"gamma": 0.5}, "gamma=0.5", ">= 1"),
    ("alice", {"rank": 0}, "rank=0", "integer >= 1"),
    ("galore", {"rank": 2.5}, "rank=2.5", "integer"),
    ("alice", {"leading": -1}, "leading=-1", "integer >= 0"),
    ("alice", {"update_interval": 0}, "update_interval=0", "integer >= 1"),
    ("racs", {"fixed_point_iters": 0}, "fixed_point_iters=0", "integer >= 1"),
    ("soap", {"precondition_frequency": 0}, "precondition_frequency=0", "integer >= 1"),
    ("swan", {"whitening": "svd"}, "whitening='svd'", "'eigh'"),
    ("swan", {"ns_step_size": 1.5}, "ns_step_size=1.5", "(0, 1)"),
    ("sinkgd", {"sinkhorn_iters": 0}, "sinkhorn_iters=0", "integer >= 1"),
    ("adam", {"weight_decay": -0.1}, "weight_decay=-0.1", ">= 0"),
    ("racs", {"on_nonfinite": "drop"}, "on_nonfinite='drop'", "'skip'"),
    ("adam", {"state_dtype": torch.int32}, "state_dtype=torch.int32", "floating"),
    ("alice", {"tracking_beta": 1.0}, "tracking_beta=1.0", "[0, 1)"),
    ("alice", {"compensation": "best"}, "compensation='best'", "'optimal'"),
    ("soap", {"shampoo_beta": 1.0}, "shampoo_beta=1.0", "[0, 1)"),
    ("racs", {"beta": 1.0}, "beta=1.0", "[0, 1)"),
    ("alice", {"switch_mode": "random"}, "switch_mode='random'", "'complement'"),
    ("alice", {"seed": "abc"}, "seed='abc'", "integer"),
    ("apollo", {"scale_type": "row"}, "scale_type='row'", "'channel'"),
    ("racs", {"ema": 1}, "ema=1", "True or False"),
]


@pytest.mark.parametrize("name, hparams, value, domain", HYPERPARAMETERS,
                         ids=[f"{n}-{next(iter(h))}" for n, h, _, _ in HYPERPARAMETERS])
def test_a_hyperparameter_outside_its_domain_is_refused_at_construction(name, hparams, value, domain):
    with pytest.raises(ValueError) as info:
        opt(name, **hparams)
    message = str(info.value)
    assert "param group 0" in message and value in message and domain in message, message


# ------------------------------------------------- param groups and state dicts
def _saved(name="alice", **hparams):
    p = W()
    optimizer = registered()[name]([p], **hparams)
    p.grad = torch.randn(4, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optimizer.step()
    return copy.deepcopy(optimizer.state_dict())


def _with(state_dict, change):
    change(state_dict)
    return state_dict


def _nan_state(d):
    d["state"][0]["projected_exp_avg"].fill_(float("nan"))


OPTIMIZER_CALLS = [
    ("add_param_group with lr=-1", lambda: opt("racs").add_param_group({"params": [W()], "lr": -1}),
     ValueError, ["param group 1", "lr=-1", ">= 0"]),
    ("a tensor listed twice", lambda: registered()["racs"]([{"params": [(w := W()), w]}]),
     ValueError, ["more than once"]),
    ("Alice state into GaLore", lambda: registered()["galore"]([W()], rank=2).load_state_dict(_saved(rank=2)),
     ValueError, ["saved by Alice", "not GaLore"]),
    ("GaLore state into Alice", lambda: registered()["alice"]([W()], rank=2).load_state_dict(_saved("galore", rank=2)),
     ValueError, ["saved by GaLore", "not Alice"]),
    ("saved lr=-1", lambda: registered()["alice"]([W()], rank=2).load_state_dict(
        _with(_saved(rank=2), lambda d: d["param_groups"][0].update(lr=-1))), ValueError, ["lr=-1", ">= 0"]),
    ("saved rank=0", lambda: registered()["alice"]([W()], rank=2).load_state_dict(
        _with(_saved(rank=2), lambda d: d["param_groups"][0].update(rank=0))), ValueError, ["rank=0", "integer >= 1"]),
    ("saved NaN state", lambda: registered()["alice"]([W()], rank=2).load_state_dict(_with(_saved(rank=2), _nan_state)),
     ValueError, ["'projected_exp_avg'", "not finite"]),
    ("transposed state", lambda: registered()["adam"]([W((6, 4))]).load_state_dict(_saved("adam")),
     ValueError, ["'exp_avg'", "shape (4, 6)", "expected (6, 4)"]),
    ("build_optimizer adam_lr=-1", lambda: fimkit.build_optimizer(model(), "racs", adam_lr=-1),
     ValueError, ["adam_lr=-1", ">= 0"]),
    ("build_optimizer lr=inf", lambda: fimkit.build_optimizer(model(), "adam", lr=float("inf")),
     ValueError, ["lr=inf", "finite"]),
    ("build_optimizer misspelt key", lambda: fimkit.build_optimizer(model(), "racs", alpah=0.1),
     TypeError, ["'alpah'", "valid"]),
    ("build_optimizer unknown optimizer", lambda: fimkit.build_optimizer(model(), "rac"),
     ValueError, ["unknown optimizer 'rac'", "racs"]),
    ("build_optimizer bad policy", lambda: fimkit.build_optimizer(model(), "racs", on_nonfinite="drop"),
     ValueError, ["on_nonfinite", "'drop'"]),
]


@pytest.mark.parametrize("label, call, error, words", OPTIMIZER_CALLS, ids=[c[0] for c in OPTIMIZER_CALLS])
def test_bad_optimizer_calls(label, call, error, words):
    with pytest.raises(error) as info:
        call()
    assert all(w in str(info.value) for w in words), str(info.value)


# ------------------------------------------------------------------------ solve
@__import__("dataclasses").dataclass(frozen=True)
class VectorDense(Structure):
    returns: str = "vector"

    def parameter_spec(self, m, n):
        return {"d": ParamSpec((m, n), "positive")}

    def dense(self, params, m, n):
        d = params["d"].reshape(-1)
        return d if self.returns == "vector" else d.sum().reshape(1, 1)


def _not_psd():
    f = torch.eye(6, dtype=torch.float64)
    f[0, 0] = -1.0
    return f


def _samples(value):
    g = torch.randn(8, 2, 3, dtype=torch.float64)
    g[3, 0, 1] = value
    return g


SOLVE_CALLS = [
    ("non-PSD dense F", lambda: fimkit.solve(RowColumn(), _not_psd(), (2, 3)), ValueError, ["positive semi-definite"]),
    ("NaN dense F", lambda: fimkit.solve(Diagonal(), torch.full((6, 6), float("nan"), dtype=torch.float64), (2, 3)),
     ValueError, ["finite"]),
    ("Inf in samples (the RowColumn hang)", lambda: fimkit.solve(RowColumn(), _samples(float("inf"))),
     ValueError, ["finite", "[3]"]),
    ("NaN in samples (Diagonal)", lambda: fimkit.solve(Diagonal(), _samples(float("nan"))), ValueError, ["finite"]),
    ("asymmetric F", lambda: fimkit.solve(Diagonal(), torch.triu(torch.ones(6, 6, dtype=torch.float64)), (2, 3)),
     ValueError, ["symmetric"]),
    ("dense() returns a vector", lambda: fimkit.solve(VectorDense(), torch.randn(5, 2, 3, dtype=torch.float64)),
     ValueError, ["VectorDense.dense", "6 x 6", "(6,)"]),
    ("dense() returns 1 x 1", lambda: fimkit.solve(VectorDense("one"), torch.randn(5, 2, 3, dtype=torch.float64)),
     ValueError, ["6 x 6", "(1, 1)"]),
    ("4-d input", lambda: fimkit.solve(Diagonal(), torch.zeros(2, 2, 2, 2)), ValueError, ["(k, m, n)"]),
    ("dense F without shape", lambda: fimkit.solve(Diagonal(), torch.eye(6)), ValueError, ["shape=(m, n)"]),
    ("F of the wrong size", lambda: fimkit.solve(Diagonal(), torch.eye(5), (2, 3)), ValueError, ["(6, 6)"]),
    ("a list, not a tensor", lambda: fimkit.solve(Diagonal(), [[1.0]]), TypeError, ["torch.Tensor"]),
    ("not a structure", lambda: fimkit.solve("diag", torch.eye(6), (2, 3)), TypeError, ["Structure"]),
]


@pytest.mark.parametrize("label, call, error, words", SOLVE_CALLS, ids=[c[0] for c in SOLVE_CALLS])
def test_bad_solve_inputs(label, call, error, words):
    with pytest.raises(error) as info:
        call()
    assert all(w in str(info.value) for w in words), str(info.value)


# ------------------------------------------------------------------ the command line
CLI = [
    (["--steps", "0"], ["steps=0", "--steps", "integer >= 1"]),
    (["--steps", "-5"], ["steps=-5"]),
    (["--batch-size", "0"], ["batch_size=0", "--batch-size"]),
    (["--micro-batch", "0"], ["micro_batch=0"]),
    (["--seq-len", "0"], ["seq_len=0"]),
    (["--eval-every", "0"], ["eval_every=0"]),
    (["--ckpt-every", "0"], ["ckpt_every=0"]),
    (["--eval-tokens", "0"], ["eval_tokens=0"]),
    (["--warmup-fraction", "2"], ["warmup_fraction=2.0", "[0, 1]"]),
    (["--min-lr-ratio", "-1"], ["min_lr_ratio=-1.0"]),
    (["--adam-lr", "-0.01"], ["adam_lr=-0.01", ">= 0"]),
    (["--lr", "inf"], ["lr=inf", "finite"]),
    (["--grad-clip", "-1"], ["grad_clip=-1.0"]),
    (["--val-fraction", "1.5"], ["val_fraction=1.5"]),
    (["--vocab-size", "1"], ["vocab_size=1"]),
    (["--threads", "-2"], ["threads=-2"]),
    (["--dtype", "fp16"], ["dtype='fp16'", "'bf16'"]),
    (["--opt", "bogus=1"], ["bogus", "valid"]),
    (["--optimizer", "racs", "--opt", "alpah=0.1"], ["'alpah'", "did you mean 'alpha'"]),
    (["--optimizer", "racs", "--opt", "alpha=-1"], ["alpha=-1", ">= 0"]),
    (["--optimizer", "adam", "--opt", "betaz=[0.9,0.99]"], ["'betaz'", "did you mean 'betas'"]),
    (["--device", "cuda:7"] if not torch.cuda.is_available() else ["--device", "nonsense"], ["--device"]),
    (["--device", "nonsense"], ["--device 'nonsense'"]),
    (["--until-step", "-1"], ["--until-step -1"]),
    (["--optimizer", "racs", "--lm-head", "nowhere"], ["lm_head", "'nowhere'"]),
]


@pytest.mark.parametrize("argv, words", CLI, ids=[" ".join(a) for a, _ in CLI])
def test_bad_train_flags_are_one_line_errors_with_exit_code_2(argv, words, tmp_path, capsys):
    code = train_command(["--preset", "micro", "--out", str(tmp_path / "run"), *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and err.startswith("fimkit train: error:"), err
    assert all(w in err for w in words), err
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # nothing trained


def _config(tmp_path, text):
    path = tmp_path / "config.json"
    path.write_text(text)
    return path


FILES = [
    ("malformed config.json", lambda t: load_config(_config(t, "{\"train\": {\"steps\": 3,")), ValueError,
     ["config.json", "not valid JSON", "line 1"]),
    ("config.json with a misspelt field", lambda t: load_config(_config(t, json.dumps({"stesp": 3}))), ValueError,
     ["config.json", "'stesp'", "did you mean 'steps'"]),
    ("config.json of the wrong kind", lambda t: load_config(_config(t, "[1, 2]")), ValueError, ["JSON object"]),
    ("config with a string for steps", lambda t: TrainConfig(steps="ten").resolve(), ValueError,
     ["steps='ten'", "integer"]),
    ("--out is a file", lambda t: (t.joinpath("f").write_text("x"),
                                   __import__("experiments.train", fromlist=["train"]).train(
                                       TrainConfig(preset="micro", out=str(t / "f"))))[1],
     ValueError, ["is a file"]),
]


@pytest.mark.parametrize("label, call, error, words", FILES, ids=[c[0] for c in FILES])
def test_bad_files_name_the_file(label, call, error, words, tmp_path):
    with pytest.raises(error) as info:
        call(tmp_path)
    assert all(w in str(info.value) for w in words), str(info.value)


def test_the_table_holds_at_least_sixty_bad_inputs():
    assert len(HYPERPARAMETERS) + len(OPTIMIZER_CALLS) + len(SOLVE_CALLS) + len(CLI) + len(FILES) >= 60
