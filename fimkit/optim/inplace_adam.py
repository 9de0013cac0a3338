"""The eager step of the Adam chain with in-place temporaries (issue 14 item 1, a first piece).

For ``Momentum -> Precondition(Diagonal()) -> LearningRate`` (fimkit's Adam), one parameter's
step performs per entry exactly the operations, in the order, of the per-block chain
(``ChainOptimizer._step_param``), so the trajectory is the same bit for bit:

    exp_avg.lerp_(G, 1 - b1); X = exp_avg / (1 - b1^t)                   Momentum
    v.lerp_(G * G, 1 - b2); D = v / (1 - b2^t); X = X / (sqrt(D) + eps)   Precondition(Diagonal)
    W *= 1 - lr * wd; W += -lr * X                                         decay, LearningRate

Only where results go changes: ``D`` is written into ``G * G``'s buffer, ``sqrt``, ``+ eps`` and
the division run in place (the same kernels and roundings), so a step allocates two temporaries
per parameter instead of six and three of its ten passes no longer write a fresh buffer (no
write-allocate reads, a smaller working set in cache); the chain's per-block Python is gone.

Why not ``torch._foreach_*`` over the group: on the CPU those ops are loops over the same
per-tensor kernels, and running each op over all parameters before the next streams every
parameter's state through memory once per op, where a parameter at a time keeps its tensors in
cache between ops: measured on the 60M model's 56 matrices (1 thread), the foreach form of these
operations took 64 ms a step, the per-block chain 57 ms, this one 50 ms (DECISIONS.md).

Anything outside the plain case takes the per-block step: DTensors, a dtype other than
float32/float64 (or state in another dtype), a non-contiguous parameter, a transposed working
shape, a gradient unit other than 1 or one about to move (``fimkit.optim.units``), and group
options the lines above do not cover (``beta1 = 0``, ``accumulate``, ``precondition_frequency > 1``,
``beta2_decay``, ``power != 0.5``). ``inplace_step = False`` on the class or an instance keeps the
per-block step everywhere (tests compare the two). ``fused_step = True`` runs the same lines as
one compiled kernel (:mod:`fimkit.optim.fused_adam`; within rounding, not bit for bit).
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import fused_adam
from .fast_path import plain_tensor
from .protocol import Group, matrix_shape

_ADAM_CHAIN: dict[type, bool] = {}


def is_adam_chain(cls: type) -> bool:
    """Whether ``cls``'s blocks are exactly fimkit's Adam chain (cached per class)."""
    if cls not in _ADAM_CHAIN:
        from ..structures.diagonal import Diagonal
        from .blocks import LearningRate, Momentum, Precondition
        from .preconditioners import StatisticPreconditioner

        b = cls.blocks
        _ADAM_CHAIN[cls] = (len(b) == 3 and type(b[0]) is Momentum and type(b[1]) is Precondition
                            and type(b[1].structure) is Diagonal
                            and type(b[1].preconditioner) is StatisticPreconditioner and type(b[2]) is LearningRate)
    return _ADAM_CHAIN[cls]


def wanted(optimizer, group: Group) -> bool:
    """Whether ``group``'s parameters step through :func:`step_param` (each may still not)."""
    return (optimizer.inplace_step and is_adam_chain(type(optimizer))
            and group["betas"][0] > 0 and not group["accumulate"] and group["precondition_frequency"] == 1
            and group["beta2_decay"] is None and group["power"] == 0.5)


def eligible(optimizer, p: Tensor, group: Group, grad_max: float | None) -> bool:
    """Whether ``p`` takes the in-place step (:func:`fimkit.optim.fast_path.plain_tensor`, untransposed)."""
    return plain_tensor(optimizer, p, group, grad_max, ("exp_avg", "fisher_d"))


def step_param(optimizer, p: Tensor, group: Group, grad_max: float | None) -> None:
    """``optimizer``'s eager step of ``p`` (admitted by the non-finite guard) under ``group``, for
    which :func:`wanted` is true: the in-place form when ``p`` is eligible, else the per-block one."""
    if not eligible(optimizer, p, group, grad_max):
        optimizer._step_param(p, group, grad_max)
        return
    beta1, beta2 = group["betas"]
    m, n = matrix_shape(p.shape)
    state = optimizer.state[p]
    state["step"] += 1
    step = int(state["step"])  # a CPU tensor: no device sync
    param, grad = p.detach().view(m, n), p.grad.reshape(m, n)
    if optimizer.fused_step and fused_adam.step_tensor(optimizer, param, grad, state, group, step):
        return
    exp_avg, second = state["exp_avg"], state["fisher_d"]
    exp_avg.lerp_(grad, 1 - beta1)
    # X: a fresh tensor (the division below writes into it), never the state itself
    update = exp_avg / (1 - beta1**step) if group["bias_correction"] else exp_avg.clone()
    denominator = grad * grad
    second.lerp_(denominator, 1 - beta2)
    if group["bias_correction"]:
        torch.div(second, 1 - beta2**step, out=denominator).sqrt_()
    else:
        torch.sqrt(second, out=denominator)
    update.div_(denominator.add_(group["eps"]))
    if group["weight_decay"]:
        param.mul_(1 - group["lr"] * group["weight_decay"])
    param.add_(update, alpha=-group["lr"])
