"""Adam's moments in the subspace ([P] Alg 4; GaLore, Fira and APOLLO alike)."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def projected_adam_direction(exp_avg: Tensor, exp_avg_sq: Tensor, sigma: Tensor,
                             betas: tuple[float, float], eps: float) -> Tensor:
    """In place ``m = b1 m + (1-b1) sigma``, ``v = b2 v + (1-b2) sigma^2``; returns ``m / (sqrt(v) + eps)``.

    No bias correction here: Alice has none, and GaLore, Fira and APOLLO apply theirs as a
    step-size factor after their norm-based scalings (:func:`bias_correction_factor`).
    """
    beta1, beta2 = betas
    exp_avg.lerp_(sigma, 1.0 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(sigma, sigma, value=1.0 - beta2)
    if torch.compiler.is_compiling():  # the compiler fuses these itself; out= would break its graph
        return exp_avg / (exp_avg_sq.sqrt() + eps)
    denominator = exp_avg_sq.sqrt().add_(eps)  # the same ops in place: one r x n temporary, not three
    return torch.div(exp_avg, denominator, out=denominator)


def bias_correction_factor(betas: tuple[float, float], step: int | Tensor) -> float | Tensor:
    """``sqrt(1 - b2^t) / (1 - b1^t)``: Adam's bias correction folded into the step size, as the
    official GaLore, Fira and APOLLO code does (``eps`` stays uncorrected)."""
    beta1, beta2 = betas
    if isinstance(step, Tensor):  # a step counter the graph holds (fimkit.optim.traced)
        return (1.0 - beta2**step).sqrt() / (1.0 - beta1**step)
    return math.sqrt(1.0 - beta2**step) / (1.0 - beta1**step)
