"""Numerical building blocks shared by structures and optimizers.

Every function here is pure (tensors in, tensors out), works on a leading batch of matrices
where that makes sense, and knows nothing about optimizers. Spec: algorithms.md §3.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

from .reductions import BOTH, COLS, LOCAL, ROWS, Reduction


def exact_normaliser(x: Tensor, dim: int | tuple[int, ...] | None = None, amax: Tensor | None = None) -> Tensor:
    """``2^-e`` with ``max|x| * 2^-e`` in ``[0.5, 1)`` (over ``dim``, kept for broadcasting; over
    everything when ``None``): the power of two that brings ``x`` to unit scale.

    Multiplying by a power of two changes only exponents, so it is exact, and every rounding of a
    computation that is homogeneous in ``x`` (sums, products, quotients, square roots of even
    powers) is the same on ``x * 2^-e``, scaled back: normalising this way before squaring
    removes over- and underflow without changing one bit of an ordinary result. 1 where ``x`` is
    all zero (``frexp(0)`` has exponent 0) or not finite (exponent 0 from ``frexp`` on CPU and
    CUDA; where the C library leaves it unspecified, some power of two: a non-finite ``x`` stays
    non-finite either way). No host sync. ``amax``, when given, is ``max|x|`` (e.g. over every
    shard of a sharded ``x``: :mod:`fimkit.reductions`).
    """
    if amax is None:
        amax = x.abs().amax() if dim is None else x.abs().amax(dim=dim, keepdim=True)
    low, high = _scale_exponents(x.dtype)
    # (no mask for the zero and non-finite cases: four kernels of the nine, called ten times a
    # matrix by RACS's fixed point)
    return torch.ldexp(torch.ones_like(amax), torch.frexp(amax)[1].neg_().clamp_(low, high))


_SCALE_EXPONENTS: dict[torch.dtype, tuple[int, int]] = {}


def _scale_exponents(dtype: torch.dtype) -> tuple[int, int]:
    """The exponents of the smallest and largest power of two ``dtype`` represents (normal):
    the scale itself must be representable, 2^-126 .. 2^127 in float32. (Kept per dtype in a plain
    dict, which dynamo traces, unlike a ``functools.cache``: read for every half-step of RACS's
    fixed point, where ``torch.finfo`` was a tenth of the step.)"""
    if dtype not in _SCALE_EXPONENTS:
        finfo = torch.finfo(dtype)
        _SCALE_EXPONENTS[dtype] = (math.frexp(finfo.tiny)[1] - 1, math.frexp(finfo.max)[1] - 1)
    return _SCALE_EXPONENTS[dtype]


def eigh_descending(a: Tensor) -> tuple[Tensor, Tensor]:
    """Eigen-decomposition of a symmetric matrix, eigenvalues in descending order.

    ``torch.linalg.eigh`` in float32 can fail to converge on ill-conditioned Gram matrices; on
    failure we retry in float64 (as Distributed Shampoo does) and cast back.
    """
    sym = 0.5 * (a + a.mT)
    try:
        evals, evecs = torch.linalg.eigh(sym)
    except torch.linalg.LinAlgError:
        evals, evecs = torch.linalg.eigh(sym.double())  # raises again only for a non-finite matrix
        evals, evecs = evals.to(a.dtype), evecs.to(a.dtype)
    return evals.flip(-1), evecs.flip(-1).contiguous()


def keep_on_failure(compute, previous, what: str):
    """``compute()``, or ``previous`` with a warning when its factorisation fails (an
    eigendecomposition that does not converge even in float64, an SVD that does not converge).

    The refreshes of a basis (SOAP's eigenbases, Alice's switch, GaLore's SVD) go through this, so
    a failure keeps the basis of the last refresh and training goes on (DECISIONS.md)."""
    try:
        return compute()
    except torch.linalg.LinAlgError as exc:
        warnings.warn(f"{what} failed ({str(exc).splitlines()[0]}); keeping the previous one", stacklevel=3)
        return previous


def inverse_power(x: Tensor, power: float, eps: float = 0.0, overwrite: bool = False) -> Tensor:
    """Element-wise ``(x + eps) ** -power`` with the pseudo-inverse convention ``0 -> 0``.

    Used for eigenvalues of a PSD approximation: a zero (or round-off negative) eigenvalue means
    the direction is outside the approximation's range, where the pseudo-inverse acts as 0.
    ``overwrite=True`` lets it write the result into ``x`` (a temporary of the caller's).
    """
    if power <= 0:
        raise ValueError(f"inverse_power needs power > 0, got {power}")
    recorded = torch.is_grad_enabled() and x.requires_grad  # autograd needs the masked form
    overwrite = overwrite and not recorded
    if eps:
        x = x.add_(eps) if overwrite else x + eps
        overwrite = True  # x is now a temporary of this function's
    if power == 0.5 and not recorded:
        # rsqrt maps every entry the convention sends to 0 (0, -0, negatives, -inf, NaN) to
        # +-inf or NaN and no positive one to either, so mapping those to 0 afterwards is the
        # same result, bit for bit, in two in-place passes (a mask and a where made four: a
        # third of Adafactor's step on CPU)
        root = x.rsqrt_() if overwrite else x.rsqrt()
        return root.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
    # Non-positive entries become +inf, whose negative power is exactly 0 (and so is its gradient).
    out = torch.where(x > 0, x, torch.inf)
    if power == 0.5:
        return out.rsqrt_()
    if power == 1.0:
        return out.reciprocal_()
    return out.pow_(-power)


def psd_matrix_power(a: Tensor, power: float, eps: float = 0.0) -> Tensor:
    """``(A + eps I) ** power`` for a symmetric PSD ``A`` through its eigen-decomposition.

    Negative powers use the pseudo-inverse convention of :func:`inverse_power`.
    """
    evals, evecs = eigh_descending(a)
    if power < 0:
        scaled = inverse_power(evals.clamp_min(0), -power, eps)
    else:
        scaled = (evals.clamp_min(0) + eps).pow(power)
    return (evecs * scaled.unsqueeze(-2)) @ evecs.mT


def fixed_point_rank1(
    p: Tensor, iters: int = 5, q0: Tensor | None = None, reduce: Reduction = LOCAL, nonnegative: bool = False
) -> tuple[Tensor, Tensor]:
    """RACS fixed point ([P] Eq 16) for ``min ||P - q s^T||_F``, ``P`` of shape (..., m, n).

    Alternates ``s = P^T q / ||q||^2`` and ``q = P s / ||s||^2`` (each half-step is the exact
    least-squares solve for one factor given the other, so the residual never increases).
    It is power iteration on ``P P^T``; at convergence ``q s^T`` is the best rank-1
    approximation of ``P``. Returns ``(s, q)``. The overall scale is split arbitrarily between
    the factors; only the product is unique. ``reduce`` completes the sums over rows and columns
    of a block of ``P`` (one matrix; :mod:`fimkit.reductions`): each half-step then makes one
    sum (its product and its squared norm together) across the blocks. ``nonnegative``: the
    caller knows ``P >= 0`` (``G*G``), so ``max|P|`` is one pass (``amax``) instead of two.
    """
    tiny = torch.finfo(p.dtype).tiny
    # ||s||^2 scales as P^2 (P^4 in the gradient): the iteration runs on s~ = c s for the power of
    # two c that brings max|P| to unit scale, so q (degree 0 in P) and s~ are free of P's scale and
    # neither they nor their squared norms over- or underflow while P is finite. Multiplying by a
    # power of two is exact: s~ / c and q are bit for bit the plain iteration's (tested), with four
    # kernels a half-step plus one scalar multiply (the per-vector normalisers this replaces were
    # nine more kernels each, two thirds of the fixed point's time at the 60M model's sizes).
    if p.ndim == 2:  # one matrix (an optimizer step)
        c = exact_normaliser(p, amax=reduce.amax(p if nonnegative else p.abs(), over=BOTH))
    else:
        if not reduce.local:
            raise ValueError("fixed_point_rank1 completes sums across blocks of one matrix only, got a batch "
                             f"of shape {tuple(p.shape)}")
        c = exact_normaliser(p, dim=(-2, -1)).squeeze(-1)  # (..., 1)
    # a warm start of any scale runs at unit scale, its scale given back at the end (s ~ 1/q0)
    u = None if q0 is None else exact_normaliser(q0, dim=-1) if p.ndim > 2 else exact_normaliser(
        q0, amax=reduce.amax(q0.abs(), over=ROWS))
    q = torch.ones(p.shape[:-1], dtype=p.dtype, device=p.device) if q0 is None else q0 * u
    s = p.new_zeros(p.shape[:-2] + p.shape[-1:])
    for _ in range(iters):
        if p.ndim == 2:
            back, norm_sq = reduce.complete(torch.mv(p.mT, q), torch.dot(q, q), over=ROWS)
            s = back.div_(norm_sq.clamp_min_(tiny)).mul_(c)
            forth, norm_sq = reduce.complete(torch.mv(p, s), torch.dot(s, s), over=COLS)
            q = forth.div_(norm_sq.clamp_min_(tiny)).mul_(c)
        else:
            s = (p.mT @ q.unsqueeze(-1)).squeeze(-1) / (q * q).sum(-1, keepdim=True).clamp_min(tiny) * c
            q = (p @ s.unsqueeze(-1)).squeeze(-1) / (s * s).sum(-1, keepdim=True).clamp_min(tiny) * c
    s = s / c
    return (s, q) if u is None else (s * u, q / u)


def qr_complement(u: Tensor) -> Tensor:
    """Orthonormal basis of the orthogonal complement of the columns of ``u`` (m x r -> m x (m-r))."""
    r = u.shape[-1]
    full_q, _ = torch.linalg.qr(u, mode="complete")
    return full_q[..., r:]


def subspace_iteration(a: Tensor, u_init: Tensor, iters: int = 1) -> tuple[Tensor, Tensor]:
    """[P] Alg 10: ``iters`` steps of subspace iteration on symmetric ``a`` from ``u_init``.

    Returns the Ritz vectors (``m x r``, orthonormal, sorted by descending Ritz value) and the
    Ritz values. The paper prints "EVD(V)"; the Ritz vectors ``U @ evecs(U^T A U)`` are what
    keeps the result a basis of the iterated subspace.
    """
    u = u_init
    for _ in range(iters):
        u, _ = torch.linalg.qr(a @ u)
    ritz_values, ritz_vectors = eigh_descending(u.mT @ a @ u)
    return u @ ritz_vectors, ritz_values


def newton_schulz_inv_sqrt(a: Tensor, iters: int = 5, step: float = 0.5) -> Tensor:
    """Coupled Newton-Schulz iteration for ``A^{-1/2}`` of an SPD matrix ([P] App B.8).

    Each step is ``T = I + step (I - Z Y); Y <- Y T; Z <- T Z`` on ``Y = A / ||A||_F``. With
    ``step = 0.5`` this is the classical ``T = (3I - ZY) / 2``, which converges quadratically
    once ``||I - A/||A||_F|| < 1``. Accuracy depends strongly on ``iters``: see SWAN's notes.
    """
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device).expand_as(a)
    norm = torch.linalg.matrix_norm(a, keepdim=True).clamp_min(torch.finfo(a.dtype).tiny)
    y = a / norm
    z = eye.clone()
    for _ in range(iters):
        t = eye + step * (eye - z @ y)
        y = y @ t
        z = t @ z
    return z / norm.sqrt()


def norm_growth_limiter(
    update: Tensor, phi: Tensor, gamma: float, first: Tensor | bool
) -> tuple[Tensor, Tensor]:
    """Fira's norm-growth limiter ([P] Alg 1 and 3) without host synchronisation.

    Returns ``(eta, new_phi)``: ``eta = gamma / max(||X|| / phi, gamma)`` except on the first
    step (``eta = 1``), and ``new_phi = eta * ||X||``. So the update's norm never grows by more
    than a factor ``gamma`` from one step to the next, and the limiter is inactive when it
    shrinks. ``first`` may be a boolean tensor (e.g. ``phi == 0``) so no ``.item()`` is needed.
    """
    norm = torch.linalg.vector_norm(update, dim=(-2, -1))
    return limiter_from_norm(norm, phi, gamma, first)


def limiter_from_norm(norm: Tensor, phi: Tensor, gamma: float, first: Tensor | bool) -> tuple[Tensor, Tensor]:
    """:func:`norm_growth_limiter` given ``||X||`` (e.g. computed without forming ``X``)."""
    ratio = norm / phi.clamp_min(torch.finfo(norm.dtype).tiny)
    eta = gamma / ratio.clamp_min(gamma)
    eta = torch.where(torch.as_tensor(first, device=norm.device), 1.0, eta)
    return eta, eta * norm
