"""conv="matrix": a matrix-only optimizer (RACS, Alice, SOAP) trains a convolution kernel as its
matrix view (out_channels, in_channels * kernel), end to end through build_optimizer (issue 12
item 2): the kernel moves exactly as the class alone moves that matrix."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import fimkit
from fimkit.routing import describe

HPARAMS = {"alice": {"rank": 2, "leading": 1, "update_interval": 2}, "racs": {}, "soap": {"precondition_frequency": 2}}
CLASSES = {"alice": fimkit.optim.Alice, "racs": fimkit.optim.RACS, "soap": fimkit.optim.SOAP}


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, kernel_size=3)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head(torch.tanh(self.conv(x)).flatten(1))


def kernel_grads(steps, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(4, 2, 3, 3, generator=gen) for _ in range(steps)]


def routed_kernel(name, grads, memory_format=torch.contiguous_format, **kwargs):
    torch.manual_seed(0)
    net = ConvNet().to(memory_format=memory_format) if memory_format != torch.contiguous_format else ConvNet()
    optimizer = fimkit.build_optimizer(net, name, lr=0.01, conv="matrix", **HPARAMS[name], **kwargs)
    for grad in grads:
        optimizer.zero_grad()
        net.conv.weight.grad = grad.clone().to(memory_format=memory_format)
        optimizer.step()
    return net, optimizer


@pytest.mark.parametrize("name", ["racs", "alice", "soap"])
def test_a_kernel_moves_as_the_class_alone_moves_its_matrix_view(name):
    grads = kernel_grads(3)
    net, _ = routed_kernel(name, grads)
    torch.manual_seed(0)
    matrix = nn.Parameter(ConvNet().conv.weight.detach().reshape(4, 18).clone())
    alone = CLASSES[name]([matrix], lr=0.01, **HPARAMS[name])
    for grad in grads:
        matrix.grad = grad.reshape(4, 18)
        alone.step()
    assert torch.equal(net.conv.weight.detach().reshape(4, 18), matrix.detach())


def test_the_kernels_state_is_that_of_its_matrix_view():
    net, optimizer = routed_kernel("racs", kernel_grads(1))
    shapes = {k: tuple(v.shape) for k, v in optimizer.state[net.conv.weight].items()}
    assert shapes == {"q": (4,), "s": (18,), "phi": ()}


def test_a_channels_last_kernel_moves_as_a_contiguous_one():
    grads = kernel_grads(2)
    contiguous, _ = routed_kernel("racs", grads)
    channels_last, _ = routed_kernel("racs", grads, memory_format=torch.channels_last)
    assert channels_last.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(contiguous.conv.weight, channels_last.conv.weight)


def test_the_optimizer_lists_the_kernel_itself_not_a_view():
    net, optimizer = routed_kernel("racs", kernel_grads(1))
    params = [p for g in optimizer.param_groups for p in g["params"]]
    assert any(p is net.conv.weight for p in params) and all(p.ndim <= 2 or p is net.conv.weight for p in params)
    assert [id(p) for p in optimizer.state] == [id(net.conv.weight)]  # the only one with a gradient; no view


def test_a_kernel_with_a_non_finite_gradient_is_skipped_under_the_view():
    net, optimizer = routed_kernel("racs", kernel_grads(1))
    before = net.conv.weight.detach().clone()
    grad = kernel_grads(1, seed=4)[0]
    grad[0, 0, 0, 0] = float("nan")
    net.conv.weight.grad = grad
    with pytest.warns(UserWarning, match="non-finite.*'conv.weight'"):
        optimizer.step()
    assert torch.equal(net.conv.weight, before)


def test_gradient_release_steps_a_kernel_as_the_ordinary_step_does():
    torch.manual_seed(0)
    reference = ConvNet()
    released = copy.deepcopy(reference)
    x = torch.randn(3, 2, 4, 4)
    ordinary = fimkit.build_optimizer(reference, "racs", conv="matrix")
    fimkit.build_optimizer(released, "racs", conv="matrix", gradient_release=True)
    reference(x).square().mean().backward()
    ordinary.step()
    released(x).square().mean().backward()
    for (name, a), b in zip(reference.named_parameters(), released.parameters()):
        assert torch.equal(a, b), name


def test_describe_shows_the_matrix_view_of_a_kernel():
    text = describe(ConvNet(), "racs", conv="matrix")
    assert "conv as 4x18" in text
    assert "conv as" not in describe(ConvNet(), "racs")  # on Adam the kernel stays a kernel


def test_kernels_have_a_group_of_their_own_with_the_matrices_hyperparameters():
    groups = fimkit.param_groups(ConvNet(), "racs", conv="matrix", alpha=0.1)
    kernels = next(g for g in groups if "conv.weight" in g["param_names"])
    assert kernels["param_names"] == ["conv.weight"] and kernels["optimizer"] == "racs" and kernels["alpha"] == 0.1


@pytest.mark.skipif("non_matrix" not in fimkit.optim.RACS.default_hyperparameters(),
                    reason="RACS has no built-in Adam (non_matrix) in this version")
def test_conv_matrix_views_kernels_whatever_non_matrix_says_of_the_matrices_group():
    grads = kernel_grads(2)
    viewed, _ = routed_kernel("racs", grads)
    explicit, optimizer = routed_kernel("racs", grads, non_matrix="adam")  # e.g. forwarded paper_hparams
    assert torch.equal(viewed.conv.weight, explicit.conv.weight)
    assert next(g for g in optimizer.param_groups if "conv.weight" in g["param_names"])["non_matrix"] == "flatten"
