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

import warnings

import torch
from torch import Tensor

_KERNEL: list = []


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


def step_tensor(optimizer, param: Tensor, grad: Tensor, state: dict, group: dict, step: int) -> bool:
    """The compiled step of one eligible tensor (its matrix view); False, with the switch turned off
    and one warning, when the kernel cannot be compiled here (the caller then steps it eagerly)."""
    beta1, beta2 = group["betas"]
    corrected = group["bias_correction"]
    arguments = (param, grad, state["exp_avg"], state["fisher_d"], beta1, beta2, group["lr"], group["eps"],
                 1 - beta1**step if corrected else 1.0, 1 - beta2**step if corrected else 1.0,
                 1 - group["lr"] * group["weight_decay"])
    try:
        kernel()(*arguments)
    except (torch._dynamo.exc.BackendCompilerFailed, RuntimeError, OSError) as exc:  # not compilable here
        optimizer.fused_step = False
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        warnings.warn(f"{type(optimizer).__name__}: fused_step=True could not compile its kernel here "
                      f"({type(exc).__name__}: {first_line}); taking the eager step", RuntimeWarning, stacklevel=4)
        return False
    return True
