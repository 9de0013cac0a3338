"""Routing beyond nn.Linear: HF Conv1D, convolutions, typos caught, and a readable description."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import fimkit
from fimkit.routing import build_optimizer, describe, parameter_roles


class Conv1D(nn.Module):
    """Hugging Face GPT-2's linear layer (weight stored in x out), recognised by its class name."""

    def __init__(self, nf, nx):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.02)
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x):
        return x @ self.weight + self.bias


class TinyGPT2(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(11, 8)
        self.c_attn = Conv1D(24, 8)
        self.conv = nn.Conv2d(2, 3, kernel_size=3)
        self.ln_f = nn.LayerNorm(8)


def test_hf_conv1d_weights_are_matrices_and_conv_kernels_have_their_own_role():
    roles = parameter_roles(TinyGPT2())
    assert roles["c_attn.weight"] == "matrix" and roles["c_attn.bias"] == "vector"
    assert roles["conv.weight"] == "conv"


def test_conv_kernels_go_to_adam_unless_asked_for_the_matrix_optimizer():
    by_name = lambda groups: {n: g["optimizer"] for g in groups for n in g["param_names"]}  # noqa: E731
    assert by_name(fimkit.param_groups(TinyGPT2(), "racs"))["conv.weight"] == "adam"
    assert by_name(fimkit.param_groups(TinyGPT2(), "adafactor", conv="matrix"))["conv.weight"] == "adafactor"


def test_a_misspelt_hyperparameter_is_an_error_with_a_suggestion_for_adam_too():
    with pytest.raises(TypeError, match="did you mean 'lr'"):
        fimkit.build_optimizer(TinyGPT2(), "adam", lrr=1e-3)
    with pytest.raises(TypeError, match="did you mean 'alpha'"):
        fimkit.build_optimizer(TinyGPT2(), "racs", alpah=0.1)


def test_describe_lists_every_parameter_with_its_optimizer_and_lr():
    text = describe(TinyGPT2(), "racs", adam_lr=1e-3)
    for name in ("wte.weight", "c_attn.weight", "conv.weight", "ln_f.bias"):
        assert name in text
    assert "racs" in text and "0.001" in text and "elements" in text


def test_builtin_adam_options_given_to_routing_set_the_routed_adam():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.LayerNorm(5))
    reference = copy.deepcopy(model)
    optimizer = build_optimizer(model, "racs", adam_lr=1e-2, adam_betas=(0.8, 0.99), adam_eps=1e-6,
                                adam_weight_decay=0.1)
    vectors = [p for n, p in reference.named_parameters() if p.ndim == 1]
    oracle = torch.optim.AdamW(vectors, lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)
    matrix_oracle = fimkit.optim.RACS([reference[0].weight])
    for _ in range(3):
        for m in (model, reference):
            m.zero_grad()
            m(torch.arange(12.0).reshape(2, 6)).square().sum().backward()
        optimizer.step()
        oracle.step()
        matrix_oracle.step()
    assert torch.equal(model[0].weight, reference[0].weight)
    moved = [p for n, p in model.named_parameters() if p.ndim == 1]
    assert all(torch.allclose(a, b, rtol=0, atol=1e-7) for a, b in zip(moved, vectors))


def test_builtin_adam_option_out_of_its_domain_is_refused_by_routing():
    with pytest.raises(ValueError, match="adam_eps=0"):
        build_optimizer(nn.Linear(4, 3), "racs", adam_eps=0.0)
