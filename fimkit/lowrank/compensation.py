"""Compensation of the complement ([P] §5.3, Alg 3, Thm 5.1) and norm-ratio scalings.

A low-rank step ``U omega`` ignores ``R = G - U U^T G``. Every compensation here adds ``R``
with one coefficient per column, ``C = R diag(c)``:

- ``optimal`` ([P] Thm 5.1, Alg 3): the Frobenius-optimal diagonal of the complement,
  ``p = beta p + (1 - beta) (colsum(G^2) - colsum((U^T G)^2))`` and ``c = sqrt(m - r) / sqrt(p + eps)``;
- ``fira`` (Fira): ``c_j = ||omega_j|| / ||sigma_j||``, the low-rank optimizer's norm ratio;
- ``fira_plus``: Fira's term rescaled to the norm of ``U omega``;
- ``none``.

Because ``c`` scales columns it commutes with ``U``, so the whole direction needs only two
``m x r x n`` products: ``U omega + R diag(c) = U (omega - sigma diag(c)) + G diag(c)``
(:func:`back_project`), and for orthonormal ``U`` the norm ``||R diag(c)||`` comes from the
column energies ``||r_j||^2 = ||g_j||^2 - ||U^T g_j||^2`` (the Thm 5.1 identity) without ever
forming ``R``. The same column norm ratio is APOLLO's channel-wise scaling.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: Fira's and APOLLO's guard in the norm ratio (their official code)
NORM_RATIO_EPS = 1e-8


def residual_energy(grad: Tensor, sigma: Tensor, basis: Tensor | None = None,
                    workspace: Tensor | None = None) -> Tensor:
    """``||g_j - U U^T g_j||^2`` for every column ``j`` (length ``n``).

    Without ``basis`` (``U`` orthonormal) this is Alg 3's ``colsum(G^2) - colsum(sigma^2)``,
    clamped at 0 against round-off; with ``basis`` it is computed from the residual itself (for
    bases that are not orthonormal, where the identity does not hold; that costs a third
    ``m x r x n`` product). ``workspace`` (``empty_like(grad)``, same strides) receives ``G^2``,
    so that the caller can reuse the m x n memory for the back-projection.
    """
    if basis is None:
        squares = grad.square() if workspace is None else torch.square(grad, out=workspace)
        return squares.sum(-2).sub_(sigma.square().sum(-2)).clamp_min_(0)
    return (grad - basis @ sigma).square().sum(-2)


def optimal_column_scale(energy_ema: Tensor, complement_dim: int, eps: float) -> Tensor:
    """Alg 3's ``sqrt(m - r) / sqrt(p + eps)``: ``R diag(.)`` is ``R / sqrt(o)`` with the Thm 5.1
    compensation ``o = p / (m - r)``; ``eps`` sits inside the root [DECISION]."""
    return (energy_ema + eps).rsqrt() * complement_dim**0.5


def column_norm_ratio(direction: Tensor, sigma: Tensor, eps: float = NORM_RATIO_EPS) -> Tensor:
    """``||direction_j|| / (||sigma_j|| + eps)`` per column: Fira's scaling factor and APOLLO's
    channel-wise scaling (how much the low-rank optimizer rescaled each column)."""
    return torch.linalg.vector_norm(direction, dim=-2) / (torch.linalg.vector_norm(sigma, dim=-2) + eps)


def tensor_norm_ratio(direction: Tensor, sigma: Tensor, eps: float = NORM_RATIO_EPS) -> Tensor:
    """``||direction|| / (||sigma|| + eps)``: APOLLO-Mini's tensor-wise scaling."""
    return torch.linalg.vector_norm(direction) / (torch.linalg.vector_norm(sigma) + eps)


def scaled_residual_norm(energy: Tensor, column_scale: Tensor) -> Tensor:
    """``||R diag(c)||_F`` from the column energies ``||r_j||^2`` (no ``m x n`` residual)."""
    return (energy * column_scale.square()).sum(-1).sqrt()


def back_project(basis: Tensor, direction: Tensor, grad: Tensor, sigma: Tensor,
                 column_coefficient: Tensor, workspace: Tensor | None = None) -> Tensor:
    """``U direction + (G - U sigma) diag(c)``, computed as ``U (direction - sigma diag(c)) + G diag(c)``.

    ``workspace``: m x n memory that is free now (``residual_energy``'s squares); the result is
    written there instead of into a new m x n tensor (same kernels, so the same bits).
    """
    c = column_coefficient.unsqueeze(-2)
    if torch.compiler.is_compiling():  # the compiler fuses the element-wise ops itself
        return (basis @ (direction - sigma * c)).addcmul_(grad, c)
    coefficients = sigma * c
    coefficients = torch.sub(direction, coefficients, out=coefficients)  # in place: one r x n temporary
    out = None if workspace is None else row_major_alias(workspace, basis.dtype)
    projected = basis @ coefficients if out is None else torch.mm(basis, coefficients, out=out)
    return projected.addcmul_(grad, c)


def row_major_alias(workspace: Tensor, dtype: torch.dtype) -> Tensor | None:
    """``workspace``'s memory as a row-major matrix of its shape, or None (not 2-D, another dtype,
    or neither row- nor column-major). Row-major because a GEMM into a column-major result
    computes the transposed product, which does not give the same bits in float64."""
    if workspace.ndim != 2 or workspace.dtype != dtype:
        return None
    if workspace.is_contiguous():
        return workspace
    if workspace.mT.is_contiguous():  # the tall (transposed) weight's layout
        return workspace.mT.reshape(-1).view(workspace.shape)
    return None
