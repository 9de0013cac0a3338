"""Gradient normalisations and whitenings: the pure math behind RACS, SWAN, SinkGD and Muon.

Every function maps a gradient-like matrix (or a leading batch of them) to a normalised one,
is pure (tensors in, tensors out) and knows nothing about optimizers. Each is invariant to a
positive rescaling ``X -> c X`` of its input, exactly (up to floating point), because no
absolute ``eps`` enters: divisions use the pseudo-inverse convention (``x / 0 -> 0``, as
:func:`fimkit.linalg.inverse_power`), and where a guard is useful it is *relative* to the
input's own scale. Each first brings its input to unit scale by an exact power of two
(:func:`fimkit.linalg.exact_normaliser`) before anything is squared, so the invariance holds for
every finite scale (1e-30 or 1e30 in float32) and ordinary inputs give the same bits as without
it. [P] = arXiv 2502.07752.

- :func:`row_column_inverse_sqrt`: RACS's ``(q s^T)^{-1/2}`` ([P] Alg 1, line 8);
- :func:`standardize_rows`: SWAN's GradNorm (arXiv 2412.13148; [P] Eq 30);
- :func:`whiten`: ``(X X^T)^{-1/2} X``, the polar factor, SWAN's GradWhitening ([P] Eq 31) and
  Muon's orthogonalisation, by eigendecomposition or by a Newton-Schulz iteration;
- :func:`sinkhorn_normalise`: SinkGD's SR-Sinkhorn (arXiv 2502.06742).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .linalg import exact_normaliser, inverse_power, newton_schulz_inv_sqrt
from .reductions import COLS, LOCAL, ROWS, Reduction

#: how :func:`whiten` computes ``(X X^T)^{-1/2} X``
WHITENING_METHODS = ("eigh", "newton_schulz", "newton_schulz5")

#: Muon's quintic Newton-Schulz coefficients (Jordan et al. 2024, KellerJordan/Muon): chosen to
#: maximise the slope at 0, so 5 steps take every singular value into roughly [0.7, 1.2]
#: instead of converging to exactly 1.
MUON_QUINTIC = (3.4445, -4.7750, 2.0315)


def _as_rows_and_cols(q: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
    """Row factors (..., m) as (..., m, 1) and column factors (..., n) as (..., 1, n); a 0-d
    factor (an ``Identity`` side) stays 0-d and broadcasts."""
    return (q.unsqueeze(-1) if q.ndim else q), (s.unsqueeze(-2) if s.ndim else s)


def _matrix_mean(x: Tensor, over: str, reduce: Reduction) -> Tensor:
    return reduce.mean(x, over, dim=(-2, -1), keepdim=True) if x.ndim >= 2 else x


def row_column_inverse_sqrt(q: Tensor, s: Tensor, eps: float = 1e-8, out: Tensor | None = None,
                            reduce: Reduction = LOCAL) -> Tensor:
    """``(q s^T + eps * mean(q) mean(s))^{-1/2}`` elementwise, for RACS ([P] Alg 1, line 8).

    ``q`` (..., m) scales rows and ``s`` (..., n) columns (either may be 0-d). ``eps`` is
    *relative*: it is added to every ``q_i s_j`` in units of their mean ``mean(q s^T)``, so the
    result scales exactly as ``(q s^T)^{-1/2}`` under ``q, s -> a q, b s``, which keeps RACS
    invariant to the gradient's scale (an absolute ``eps`` would not be for small gradients).
    An all-zero ``q s^T`` (an all-zero gradient) maps to a finite value (``tiny^{-1/2}``) that
    multiplies a zero gradient: the pseudo-inverse's answer 0, never inf or NaN.
    ``out``, a scratch tensor of the result's shape, is overwritten with the result. ``reduce``
    completes the means of a block's ``q`` or ``s`` (:mod:`fimkit.reductions`).
    """
    rows, cols = _as_rows_and_cols(q, s)
    floor = (eps * _matrix_mean(rows, ROWS, reduce) * _matrix_mean(cols, COLS, reduce)).clamp(min=torch.finfo(rows.dtype).tiny)
    if out is not None and q.ndim == s.ndim == 1 and out.shape == (q.shape[0], s.shape[0]):
        product = torch.outer(q, s, out=out)   # (a broadcast addcmul is 4x slower on CPU)
    else:
        product = rows * cols
    return product.add_(floor).rsqrt_()


def standardize_rows(x: Tensor) -> Tensor:
    """SWAN's GradNorm ([P] Eq 30): each row minus its mean, divided by its standard deviation
    (the population one, over the ``n`` columns). A constant row maps to 0. A matrix of one
    column (``n x 1``, ``1 x 1``) has no spread within its rows to normalise and is returned as
    it is (otherwise every row would be 0 and SWAN would never move such a weight)."""
    if x.shape[-1] == 1:
        return x
    x = x * exact_normaliser(x, dim=(-2, -1))
    centred = x - x.mean(-1, keepdim=True)
    std = centred.square().mean(-1, keepdim=True).sqrt()
    return centred * inverse_power(std, 1.0)


def sinkhorn_normalise(x: Tensor, iters: int = 5) -> Tensor:
    """SinkGD's SR-Sinkhorn (arXiv 2502.06742, Alg 3): ``iters`` rounds of "every row to l2 norm
    sqrt(n), then every column to l2 norm sqrt(m)".

    Computed as ``diag(r) X diag(c)`` with the scalings found on ``P = X*X``: the row norms of
    ``diag(r) X diag(c)`` are ``r * sqrt(P c^2)``, so each round is two matrix-vector products
    on P (which stays in cache) instead of four passes over an m x n matrix.

    The first normalisation makes the result exactly invariant to positive row scalings
    ``D_r X``; column scalings ``X D_c`` are only absorbed in the limit of many rounds (the
    Sinkhorn scaling is unique). Zero rows and columns stay zero.
    """
    if iters < 1:
        raise ValueError(f"sinkhorn_normalise needs iters >= 1, got {iters}")
    m, n = x.shape[-2:]
    x = x * exact_normaliser(x, dim=(-2, -1))
    square = x * x
    col_scale_sq = torch.ones(x.shape[:-2] + (n, 1), dtype=x.dtype, device=x.device)
    for _ in range(iters):
        row_scale_sq = inverse_power(square @ col_scale_sq, 1.0) * n          # (..., m, 1)
        col_scale_sq = inverse_power(square.mT @ row_scale_sq, 1.0) * m       # (..., n, 1)
    return square.copy_(x).mul_(row_scale_sq.sqrt()).mul_(col_scale_sq.sqrt().mT)


def _whiten_eigh(x: Tensor) -> Tensor:
    """Exact ``(X X^T)^{+1/2} X`` (X short and wide) from the eigendecomposition of the Gram,
    in float64: a float32 eigendecomposition loses the directions whose singular value is below
    about sqrt(m * eps32) of the largest. Eigenvalues below ``m * eps64`` of the largest are
    treated as zero (pseudo-inverse), so a rank-deficient X gives the partial isometry."""
    wide = x.to(torch.float64)
    evals, evecs = torch.linalg.eigh(wide @ wide.mT)
    cutoff = evals.amax(-1, keepdim=True).clamp_min(0) * (x.shape[-2] * torch.finfo(torch.float64).eps)
    inv_sqrt = torch.where(evals > cutoff, evals.rsqrt(), torch.zeros_like(evals))
    return ((evecs * inv_sqrt.unsqueeze(-2)) @ (evecs.mT @ wide)).to(x.dtype)


def _whiten_quintic(x: Tensor, steps: int) -> Tensor:
    """Muon's quintic Newton-Schulz on X scaled to unit Frobenius norm (spectral norm <= 1)."""
    a, b, c = MUON_QUINTIC
    norm = torch.linalg.matrix_norm(x, keepdim=True)
    y = x * inverse_power(norm, 1.0)
    for _ in range(steps):
        gram = y @ y.mT
        y = a * y + (b * gram + c * gram @ gram) @ y
    return y


def whiten(x: Tensor, method: str = "eigh", steps: int = 20, step_size: float = 0.5) -> Tensor:
    """``(X X^T)^{-1/2} X`` for X (..., m, n): the polar factor ``U V^T`` of ``X = U S V^T``.

    Computed on the short side (``X (X^T X)^{-1/2}`` is the same matrix), so the Gram is
    ``min(m, n)`` square. Methods (cost per matrix with k = min(m, n), l = max(m, n)):

    - ``"eigh"`` (exact; default): float64 Gram and eigendecomposition, pseudo-inverse for zero
      singular values. ``O(k^2 l + k^3)``, one eigendecomposition (cheap on CPU, slower on GPU).
    - ``"newton_schulz"``: SWAN's coupled iteration ``newton_schulz_inv_sqrt`` on the Gram with
      ``steps`` and ``step_size`` ([P] App B.8). ``3 steps`` k x k matmuls. It converges
      quadratically only once every eigenvalue of ``Gram / ||Gram||_F`` is near 1; a small one
      grows by about ``(1 + step_size)^2`` a step, so ill-conditioned gradients need many steps
      (with step 0.5: about ``log(||Gram||_F / lambda_min) / log(2.25)`` plus a few).
    - ``"newton_schulz5"``: Muon's quintic iteration directly on X (``steps``, usually 5): fast,
      but its singular values end in roughly [0.7, 1.2], not at 1 (by design).
    """
    if method not in WHITENING_METHODS:
        raise ValueError(f"whitening method must be one of {WHITENING_METHODS}, got {method!r}")
    if steps < 1 and method != "eigh":
        raise ValueError(f"{method} whitening needs steps >= 1, got {steps}")
    tall = x.shape[-2] > x.shape[-1]
    wide = x.mT if tall else x
    if method != "eigh":  # "eigh" squares in float64, where a float32 input cannot overflow
        wide = wide * exact_normaliser(wide, dim=(-2, -1))
    if method == "eigh":
        out = _whiten_eigh(wide)
    elif method == "newton_schulz5":
        out = _whiten_quintic(wide, steps)
    else:
        # For X = 0 the iteration returns a finite multiple of I, so the result is 0.
        out = newton_schulz_inv_sqrt(wide @ wide.mT, iters=steps, step=step_size) @ wide
    return out.mT if tall else out


def rescale_to_rms(x: Tensor, rms: float = 1.0) -> Tensor:
    """``X * rms * sqrt(mn) / ||X||_F``: the same direction with root-mean-square entry ``rms``
    (SWAN's optional rescale to the norm ``sqrt(mn)`` of a GradNorm output). 0 stays 0."""
    m, n = x.shape[-2:]
    x = x * exact_normaliser(x, dim=(-2, -1))
    norm = torch.linalg.matrix_norm(x, keepdim=True)
    return x * (inverse_power(norm, 1.0) * (rms * math.sqrt(m * n)))
