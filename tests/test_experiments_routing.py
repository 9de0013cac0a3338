"""Routing of the LLaMA's parameters through fimkit: every parameter exactly once, in its place."""

from collections import Counter

import pytest

import fimkit
from experiments.model import LLaMA, ModelConfig
from experiments.optimizers import build

MODEL = ModelConfig(dim=32, n_layers=2, n_heads=2, vocab_size=64, max_seq_len=16)
MATRIX_OPTIMIZERS = [n for n in ("racs", "alice", "galore", "soap", "shampoo") if n in fimkit.optim.registered()]


def owners(optimizer):
    """parameter name -> names of the optimizers whose groups hold it."""
    held = {}
    for group in optimizer.param_groups:
        for name in group["param_names"]:
            held.setdefault(name, []).append(group["optimizer"])
    return held


@pytest.mark.parametrize("name", ["adam"] + MATRIX_OPTIMIZERS)
@pytest.mark.parametrize("lm_head", ["adam", "matrix"])
def test_every_parameter_is_assigned_exactly_once(name, lm_head):
    model = LLaMA(MODEL)
    optimizer = build(model, name, lr=1e-3, adam_lr=None, lm_head=lm_head, hparams={})
    held = owners(optimizer)
    assert set(held) == {n for n, _ in model.named_parameters()}
    assert all(len(v) == 1 for v in held.values())
    counts = Counter(id(p) for g in optimizer.param_groups for p in g["params"])
    assert set(counts.values()) == {1} and len(counts) == len(list(model.parameters()))


@pytest.mark.parametrize("name", MATRIX_OPTIMIZERS or ["adam"])
def test_matrices_go_to_the_optimizer_and_the_rest_to_adam(name):
    held = owners(build(LLaMA(MODEL), name, lr=1e-3, adam_lr=None, lm_head="adam", hparams={}))
    for param, (optimizer,) in held.items():
        is_matrix = param.endswith("_proj.weight")
        assert optimizer == (name if is_matrix else "adam"), param


@pytest.mark.parametrize("name", MATRIX_OPTIMIZERS or ["adam"])
def test_lm_head_follows_the_lm_head_setting(name):
    on_adam = owners(build(LLaMA(MODEL), name, lr=1e-3, adam_lr=None, lm_head="adam", hparams={}))
    on_matrix = owners(build(LLaMA(MODEL), name, lr=1e-3, adam_lr=None, lm_head="matrix", hparams={}))
    assert on_adam["lm_head.weight"] == ["adam"]
    assert on_matrix["lm_head.weight"] == [name]


def test_adam_lr_sets_only_the_adam_routed_groups():
    if not MATRIX_OPTIMIZERS:
        pytest.skip("no structured optimizer registered in fimkit yet")
    name = MATRIX_OPTIMIZERS[0]
    optimizer = build(LLaMA(MODEL), name, lr=2e-3, adam_lr=5e-4, lm_head="adam", hparams={})
    lrs = {g["optimizer"]: g["lr"] for g in optimizer.param_groups}
    assert lrs == {name: 2e-3, "adam": 5e-4}
