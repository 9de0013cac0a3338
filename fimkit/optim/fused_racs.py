"""RACS's step with its element-wise part compiled (issue 14 item 1: "the limiter's norm from q, s
and the squared gradient, the update fused into one pass over W"), behind
``optimizer.fused_step = True``.

The eager step (the chain: ``Precondition(RowColumn) -> NormGrowthLimiter -> Scale -> LearningRate``)
makes, after the fixed point, six passes over ``m x n`` tensors: ``q s^T`` into the ``G*G``
buffer, ``+ floor``, ``rsqrt``, ``* G``, the norm, and ``W += c X``. Here they are two compiled
kernels (inductor: vectorised C++ on a CPU, Triton on a GPU): the limiter's norm as one reduction
over ``G*G`` (``||X||^2 = sum G^2 / (q s^T + floor)``, ``X`` never formed) and the update as one
pass that reads ``G`` and ``W`` and writes ``W``. The fixed point stays eager, with the chain's
own code (:func:`fimkit.linalg.fixed_point_rank1` on ``G*G``: MKL's matrix-vector products;
inductor's own were 5x slower on this CPU), and so do the EMA of ``q`` and ``s``, the floor and
the coefficient (a few operations on vectors), so ``q`` and ``s`` are the eager step's bit for
bit; the kernels may contract and reorder the per-entry arithmetic (the norm sums in another
order), so the trajectory equals the eager one within rounding (tested within 1e-6 relative in
float32 after 20 steps), not bit for bit: hence the switch, off by default, as for Adam
(DECISIONS B8, B9).

The kernels are compiled for static shapes (a variant per matrix shape and layout: inductor's
dynamic-shape broadcasts were 1.5-5x slower than eager here); the learning rate reaches them in
a tensor, so a schedule never recompiles them. Eligible: :func:`fimkit.optim.fast_path.plain_tensor`
(transposed working shapes included) and ``bias_correction=False`` (the paper's); anything else
takes the per-block step, and so does everything when a kernel cannot be compiled here (one
warning, the switch turned off, the state untouched: it is written once both kernels ran).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..linalg import fixed_point_rank1, limiter_from_norm
from .fast_path import compiled_call, plain_tensor
from .protocol import Group, matrix_shape, working_shape

_KERNELS: dict[str, object] = {}
_RACS_CHAIN: dict[type, bool] = {}
STATE_KEYS = ("q", "s", "phi")


def limiter_factor(square: Tensor, q: Tensor, s: Tensor, floor: Tensor, phi: Tensor, gamma: float,
                   out: Tensor) -> None:
    """The limiter's ``(eta, new phi)`` into ``out`` from ``||X||^2 = sum(G^2 / (q s^T + floor))``:
    one reduction over ``G*G``, with ``X`` never formed."""
    norm = (square / (torch.outer(q, s) + floor)).sum().sqrt()
    out.copy_(torch.stack(limiter_from_norm(norm, phi, gamma, first=phi == 0)))


def scaled_update(param: Tensor, grad: Tensor, q: Tensor, s: Tensor, floor: Tensor, coefficient: Tensor,
                  decay: Tensor) -> None:
    """``W = decay W + coefficient G / sqrt(q s^T + floor)`` in one pass over ``W`` (reads ``G``)."""
    param.mul_(decay).add_(grad * torch.rsqrt(torch.outer(q, s) + floor) * coefficient)


def kernel(name: str):
    """``limiter_factor`` or ``scaled_update`` compiled (once per process; a variant per shape and
    layout). Two kernels, not one: in one graph inductor stores ``q s^T + floor`` for both uses (a
    pass more) and recomputes the EMA of ``q`` and ``s`` for every entry."""
    if name not in _KERNELS:
        _KERNELS[name] = torch.compile({"limit": limiter_factor, "update": scaled_update}[name],
                                       dynamic=False, fullgraph=True)
    return _KERNELS[name]


def is_racs_chain(cls: type) -> bool:
    """Whether ``cls``'s blocks are exactly RACS's chain (cached per class)."""
    if cls not in _RACS_CHAIN:
        from ..structures.factors import DiagonalFactor
        from ..structures.kronecker import Kronecker
        from .blocks import LearningRate, NormGrowthLimiter, Precondition, Scale
        from .preconditioners import RowColumnPreconditioner

        b = cls.blocks
        _RACS_CHAIN[cls] = (len(b) == 4 and type(b[0]) is Precondition and type(b[0].structure) is Kronecker
                            and b[0].structure.rows == DiagonalFactor() == b[0].structure.cols
                            and b[0].structure.estimator == "per_sample"
                            and type(b[0].preconditioner) is RowColumnPreconditioner
                            and type(b[1]) is NormGrowthLimiter and type(b[2]) is Scale and type(b[3]) is LearningRate)
    return _RACS_CHAIN[cls]


def wanted(optimizer, group: Group) -> bool:
    """Whether ``group``'s parameters step through :func:`step_param` (each may still not)."""
    return optimizer.fused_step and is_racs_chain(type(optimizer)) and not group["bias_correction"]


def step_param(optimizer, p: Tensor, group: Group, grad_max: float | None) -> None:
    """``optimizer``'s step of ``p`` (admitted by the non-finite guard) under ``group``, for which
    :func:`wanted` is true: the fixed point eager and the rest compiled when ``p`` is plain, else
    (or where the kernel cannot be compiled) the per-block step."""
    # (fused_step is read again: a kernel that could not compile turns it off mid-group)
    if not (optimizer.fused_step and p.ndim == 2
            and plain_tensor(optimizer, p, group, grad_max, STATE_KEYS, transposed=True)):
        optimizer._step_param(p, group, grad_max)
        return
    m, n = matrix_shape(p.shape)
    param, grad = p.detach().view(m, n), p.grad.reshape(m, n)
    if working_shape(m, n, group["transpose_to_short_side"])[2]:
        param, grad = param.mT, grad.mT
    square = grad * grad
    s1, q1 = fixed_point_rank1(square, int(group["fixed_point_iters"]), nonnegative=True)
    # the state is written once both kernels ran (one that cannot compile leaves it as it was);
    # q, s and the floor are the eager chain's bit for bit
    state = optimizer.state[p]
    weight = 1.0 - group["beta"] if group["ema"] else 1.0
    q, s = state["q"].lerp(q1, weight), state["s"].lerp(s1, weight)
    floor = (group["eps"] * q.mean() * s.mean()).clamp(min=torch.finfo(q.dtype).tiny)
    factors = q.new_empty(2)  # eta, the new phi
    if compiled_call(optimizer, lambda: kernel("limit"), (square, q, s, floor, state["phi"], group["gamma"], factors)):
        coefficient = factors[0] * group[optimizer.blocks[2].name] * -group["lr"]
        decay = torch.full((), 1 - group["lr"] * group["weight_decay"], dtype=p.dtype, device=p.device)
        if compiled_call(optimizer, lambda: kernel("update"), (param, grad, q, s, floor, coefficient, decay)):
            state["q"].copy_(q)
            state["s"].copy_(s)
            state["phi"].copy_(factors[1])
            return
    optimizer._step_param(p, group, grad_max)  # nothing was written: the eager step from the start
