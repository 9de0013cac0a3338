"""The paper's routing defaults, the per-role Adam baseline and layer-wise gradient release."""

from __future__ import annotations

import copy

import pytest
import torch

import fimkit
from experiments.model import LLaMA, ModelConfig

MODEL = ModelConfig(dim=16, n_layers=1, n_heads=2, vocab_size=40, max_seq_len=16)


def _owner_of(optimizer, name):
    return next(g["optimizer"] for g in optimizer.param_groups if name in g["param_names"])


@pytest.mark.parametrize("name, head", [("alice", "alice"), ("alice0", "alice0"), ("galore", "galore"),
                                        ("fira", "fira"), ("racs", "adam"), ("adam", "adam"), ("apollo", "adam")])
def test_the_head_goes_where_the_papers_main_results_put_it(name, head):
    assert _owner_of(fimkit.build_optimizer(LLaMA(MODEL), name), "lm_head.weight") == head


def test_lm_head_adam_is_the_papers_star_setting_for_every_optimizer():
    assert _owner_of(fimkit.build_optimizer(LLaMA(MODEL), "alice", lm_head="adam"), "lm_head.weight") == "adam"


def test_an_unknown_lm_head_setting_names_the_choices():
    with pytest.raises(ValueError, match="paper"):
        fimkit.param_groups(LLaMA(MODEL), "alice", lm_head="head")


def test_adam_with_its_own_adam_lr_keeps_the_matrices_at_lr():
    groups = fimkit.param_groups(LLaMA(MODEL), "adam", lr=1e-3, adam_lr=0.02)
    by_role = {g["role"]: g for g in groups}
    assert by_role["candidate"]["lr"] == 1e-3 and by_role["adam"]["lr"] == 0.02
    assert "layers.0.attn.q_proj.weight" in by_role["candidate"]["param_names"]
    assert "embed_tokens.weight" in by_role["adam"]["param_names"]


def _train(model, optimizer, batches):
    for x, y in batches:
        model(x, y).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


@pytest.mark.parametrize("name", ["adam", "racs", "alice"])
def test_gradient_release_gives_the_weights_of_the_ordinary_step(name):
    torch.manual_seed(0)
    reference = LLaMA(MODEL)
    released = copy.deepcopy(reference)
    hparams = {"seed": 0, "rank": 4, "leading": 2, "update_interval": 2} if name == "alice" else {}
    gen = torch.Generator().manual_seed(1)
    batches = [(torch.randint(0, 40, (2, 8), generator=gen), torch.randint(0, 40, (2, 8), generator=gen)) for _ in range(4)]
    _train(reference, fimkit.build_optimizer(reference, name, **hparams), batches)
    _train(released, fimkit.build_optimizer(released, name, gradient_release=True, **hparams), batches)
    for (n, a), b in zip(reference.named_parameters(), released.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7, msg=n)


def test_gradient_release_frees_each_gradient_during_backward():
    model = LLaMA(MODEL)
    fimkit.build_optimizer(model, "racs", gradient_release=True)
    model(torch.zeros(1, 8, dtype=torch.long), torch.zeros(1, 8, dtype=torch.long)).backward()
    assert all(p.grad is None for p in model.parameters())
