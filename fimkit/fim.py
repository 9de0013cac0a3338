"""The empirical Fisher and the vec convention.

fimkit's ``vec`` is row-major: ``vec(G) = G.reshape(-1)``, so ``vec(G)[i*n + j] = G[i, j]`` and
``vec(A @ G @ B.T) = kron(A, B) @ vec(G)`` with ``A`` (m x m) acting on rows and ``B`` (n x n) on
columns. The paper writes column-major formulas; ``Kronecker(rows, cols)`` names each factor by
the side it acts on so that nobody has to translate.
"""

from __future__ import annotations

import torch
from torch import Tensor


def vec(g: Tensor) -> Tensor:
    """Row-major vectorisation of the last two dimensions: (..., m, n) -> (..., m*n)."""
    return g.reshape(*g.shape[:-2], g.shape[-2] * g.shape[-1])


def unvec(v: Tensor, m: int, n: int) -> Tensor:
    """Inverse of :func:`vec`: (..., m*n) -> (..., m, n)."""
    return v.reshape(*v.shape[:-1], m, n)


def check_samples(grads: Tensor) -> Tensor:
    """Validate a stack of gradient samples of one weight: shape (k, m, n), real floating point."""
    if not isinstance(grads, Tensor):
        raise TypeError(f"gradient samples must be a torch.Tensor, got {type(grads).__name__}")
    if grads.ndim != 3:
        raise ValueError(
            f"gradient samples must have shape (k, m, n) (k samples of an m x n weight); "
            f"got shape {tuple(grads.shape)}. Stack single gradients with torch.stack."
        )
    if not grads.is_floating_point():
        raise ValueError(f"gradient samples must be real floating point, got {grads.dtype}")
    finite = torch.isfinite(grads).flatten(1).all(1)
    if not bool(finite.all()):
        bad = torch.nonzero(~finite).flatten().tolist()
        raise ValueError(f"gradient samples must be finite: sample(s) {bad[:5]}{' ...' if len(bad) > 5 else ''} "
                         f"of {grads.shape[0]} contain NaN or infinity")
    return grads


def empirical_fim(grads: Tensor) -> Tensor:
    """Dense empirical Fisher ``F = mean_k vec(G_k) vec(G_k)^T`` of shape (mn, mn).

    Only for small weights: F has (mn)^2 entries. Optimizers never form it.
    """
    g = vec(check_samples(grads))
    return g.mT @ g / g.shape[0]


def check_fim(fim: Tensor, shape: tuple[int, int]) -> Tensor:
    """Validate a dense Fisher for an ``m x n`` weight."""
    m, n = shape
    if fim.ndim != 2 or fim.shape != (m * n, m * n):
        raise ValueError(
            f"a dense Fisher for a {m} x {n} weight must have shape ({m * n}, {m * n}); "
            f"got {tuple(fim.shape)}"
        )
    if not bool(torch.isfinite(fim).all()):
        raise ValueError("the Fisher must be finite; it contains NaN or infinity")
    if not torch.allclose(fim, fim.mT, rtol=1e-6, atol=1e-12 * float(fim.abs().max()) + 1e-300):
        raise ValueError("the Fisher must be symmetric (F = E[g g^T])")
    return fim


def check_psd(fim: Tensor) -> Tensor:
    """Refuse a dense Fisher with a negative eigenvalue beyond round-off (``F = E[g g^T]`` is
    positive semi-definite; the closed forms assume it and would return "positive" factors that
    are not). Tolerance: ``100 * mn * eps`` of the largest eigenvalue's magnitude."""
    evals = torch.linalg.eigvalsh(0.5 * (fim + fim.mT).to(torch.promote_types(fim.dtype, torch.float32)))
    top = float(evals.abs().max()) if evals.numel() else 0.0
    tolerance = 100 * fim.shape[0] * torch.finfo(evals.dtype).eps * top
    if float(evals.min()) < -tolerance:
        raise ValueError(f"the Fisher must be positive semi-definite (F = E[g g^T]); its smallest eigenvalue is "
                         f"{float(evals.min()):.3g} (largest magnitude {top:.3g}). Pass gradient samples, or "
                         f"a sum of outer products")
    return fim
