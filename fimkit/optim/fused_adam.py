"""fimkit's Adam chain as one compiled kernel per parameter (issue 14 item 1: element-wise chains
fused), behind ``optimizer.fused_step = True``.

The eager step (:mod:`fimkit.optim.inplace_adam`) runs the chain's ten operations one after the
other, each a pass over an ``m x n`` tensor; the floor of an element-wise optimizer is one pass
that reads ``W, G, m, v`` and writes ``W, m, v`` (28 bytes a float32 weight), which torch's fused
Adam reaches. ``torch.compile`` of the same lines (inductor: vectorised C++ on a CPU, Triton on a
GPU) makes them that one pass. The arithmetic per entry is the chain's, but the compiler may
contract and reorder it (a fused multiply-add, a reciprocal), so the trajectory equals the eager
one within rounding (tested within 1e-6 relative in float32 after 20 steps), not bit for bit:
hence a switch, off by default, rather than a silent change of every Adam run.

The kernel is compiled once per process for dynamic shapes (one graph for every parameter shape;
the step's bias corrections are arguments, so it never recompiles for a new step). The first
call compiles (seconds on a CPU); a platform where compiling fails (no C++ compiler) falls back
to the eager step with one warning and turns the switch off for that optimizer. Eligibility is
the eager in-place step's (:func:`fimkit.optim.inplace_adam.eligible`): anything else takes the
per-block step as before.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .fast_path import compiled_call

_KERNEL: list = []
_GROUP_KERNEL: list = []


def adam_update(param: Tensor, grad: Tensor, exp_avg: Tensor, second: Tensor, beta1: float, beta2: float,
                lr: float, eps: float, bias1: float, bias2: float, decay: float) -> None:
    """One Adam step of one tensor, in place, in the chain's order: ``m.lerp_(G, 1 - b1)``,
    ``v.lerp_(G*G, 1 - b2)``, ``X = (m / bias1) / (sqrt(v / bias2) + eps)``, ``W *= decay``,
    ``W -= lr X`` (``bias1 = bias2 = 1`` without bias correction, ``decay = 1`` without weight
    decay)."""
    exp_avg.lerp_(grad, 1 - beta1)
    second.lerp_(grad * grad, 1 - beta2)
    update = (exp_avg / bias1) / ((second / bias2).sqrt() + eps)
    param.mul_(decay).add_(update, alpha=-lr)


def kernel():
    """:func:`adam_update` compiled (once per process, for dynamic shapes)."""
    if not _KERNEL:
        _KERNEL.append(torch.compile(adam_update, dynamic=True, fullgraph=True))
    return _KERNEL[0]


def adam_group_update(params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor], seconds: list[Tensor],
                      beta1: float, beta2: float, lr: float, eps: float, bias1: list[float], bias2: list[float],
                      decay: float) -> None:
    """:func:`adam_update` of every tensor of a group (one compiled call: one guard check and one
    Python entry for the group, where a call per tensor cost ~0.1 ms each on a 2-core VM)."""
    for param, grad, exp_avg, second, b1, b2 in zip(params, grads, exp_avgs, seconds, bias1, bias2):
        adam_update(param, grad, exp_avg, second, beta1, beta2, lr, eps, b1, b2, decay)


def group_kernel():
    """:func:`adam_group_update` compiled (once per group composition: a tensor count and dtypes;
    shapes and step numbers are dynamic)."""
    if not _GROUP_KERNEL:
        _GROUP_KERNEL.append(torch.compile(adam_group_update, dynamic=True, fullgraph=True))
    return _GROUP_KERNEL[0]


def step_group(optimizer, group: dict, admitted: list, live: int) -> list:
    """One compiled call stepping every tensor of ``admitted`` (``[(param, grad_max)]``, past the
    non-finite guard), when all ``live`` tensors of the group with a gradient are there and the
    in-place step takes each (:func:`fimkit.optim.inplace_adam.eligible`); returns what the caller
    still steps: nothing then, else everything, untouched (a skipped or ineligible tensor would
    change the call's composition and recompile it: such a step takes a call per tensor), and also
    everything when the kernel cannot be compiled here (with one warning, the switch off)."""
    from .inplace_adam import eligible
    from .protocol import matrix_shape

    if len(admitted) != live or live < 2 or not all(eligible(optimizer, p, group, m) for p, m in admitted):
        return admitted
    tensors, bias1, bias2 = ([], [], [], []), [], []
    for p, _ in admitted:
        state = optimizer.state[p]
        shape = matrix_shape(p.shape)
        for out, value in zip(tensors, (p.detach().view(shape), p.grad.reshape(shape), state["exp_avg"],
                                        state["fisher_d"])):
            out.append(value)
        corrections = _bias_corrections(group, int(state["step"]) + 1)
        bias1.append(corrections[0])
        bias2.append(corrections[1])
    if not compiled_call(optimizer, group_kernel, (*tensors, *_scalars(group), bias1, bias2, _decay(group))):
        return admitted
    for p, _ in admitted:  # counted once the step is made (a failed compile steps nothing)
        optimizer.state[p]["step"] += 1
    return []


def _scalars(group: dict) -> tuple[float, float, float, float]:
    """``(beta1, beta2, lr, eps)``, the kernels' arguments before the bias corrections."""
    return (*group["betas"], group["lr"], group["eps"])


def _bias_corrections(group: dict, step: int) -> tuple[float, float]:
    """``(1 - beta1^t, 1 - beta2^t)``, or ones without bias correction."""
    if not group["bias_correction"]:
        return 1.0, 1.0
    beta1, beta2 = group["betas"]
    return 1 - beta1**step, 1 - beta2**step


def _decay(group: dict) -> float:
    return 1 - group["lr"] * group["weight_decay"]


def step_tensor(optimizer, param: Tensor, grad: Tensor, state: dict, group: dict, step: int) -> bool:
    """The compiled step of one eligible tensor (its matrix view); False, with the switch turned off
    and one warning, when the kernel cannot be compiled here (the caller then steps it eagerly)."""
    arguments = (param, grad, state["exp_avg"], state["fisher_d"], *_scalars(group),
                 *_bias_corrections(group, step), _decay(group))
    return compiled_call(optimizer, kernel, arguments)
