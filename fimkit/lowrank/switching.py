"""Subspace switching ([P] §5.2, Alg 4 and Alg 10) and the other ways to choose a basis.

Every ``K`` steps Alice refreshes its ``m x r`` basis ``U``: one step of subspace iteration on
``Qfull`` from the previous ``U`` gives Ritz vectors sorted by Ritz value; the top ``l`` are
kept and the other ``r - l`` columns are sampled uniformly from an orthonormal basis of the
complement of the Ritz subspace, so that directions the statistic has not seen yet get explored.

Modes (Fig 5b ablation): ``complement`` (the paper's), ``full_basis`` (sample ``r - l`` from all
directions except the top ``l``: Ritz vectors ``l..r`` and the complement), ``gaussian_mix``
(top ``l`` plus unit-norm Gaussian columns) and ``gaussian`` (``r`` unit-norm Gaussian columns).
The two Gaussian modes follow the spec literally: columns are normalised, not orthogonalised.

Bases that do not switch: ``top_eigenvectors`` (Alice with switching off), ``top_left_singular_vectors``
(GaLore: SVD of the gradient) and ``gaussian_projection`` (APOLLO: ``N(0, 1/r)`` entries).

Randomness: each switch draws from a fresh CPU generator seeded by ``(seed, step)``
(:func:`switch_generator`), so the optimizer state only holds the seed and a resumed run makes
exactly the draws the uninterrupted run made.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..linalg import eigh_descending, qr_complement, subspace_iteration
from ..structures.lowrank import SWITCH_MODES

_MASK63 = (1 << 63) - 1


def switch_generator(seed: int, step: int) -> torch.Generator:
    """The CPU generator of the switch at ``step``: a function of ``(seed, step)`` only."""
    mixed = (seed * 6364136223846793005 + step * 1442695040888963407 + 1) & _MASK63
    return torch.Generator().manual_seed(mixed)


def top_eigenvectors(q: Tensor, rank: int) -> Tensor:
    """``EVD(Q, r)``: eigenvectors of the ``rank`` largest eigenvalues (descending)."""
    return eigh_descending(q)[1][..., :rank]


def top_left_singular_vectors(grad: Tensor, rank: int) -> Tensor:
    """GaLore's basis: the first ``rank`` left singular vectors of ``G`` (the same subspace as
    ``top_eigenvectors(G G^T)``, computed without squaring the condition number)."""
    return torch.linalg.svd(grad, full_matrices=False)[0][..., :rank]


def gaussian_projection(m: int, rank: int, generator: torch.Generator, like: Tensor) -> Tensor:
    """APOLLO's random projection: ``m x rank`` with i.i.d. ``N(0, 1/rank)`` entries."""
    draw = torch.randn(m, rank, generator=generator, dtype=like.dtype)
    return draw.to(like.device) / math.sqrt(rank)


def unit_gaussian_columns(m: int, count: int, generator: torch.Generator, like: Tensor) -> Tensor:
    """``count`` columns of i.i.d. ``N(0, 1)`` entries, each normalised to unit length."""
    draw = torch.randn(m, count, generator=generator, dtype=like.dtype).to(like.device)
    return draw / torch.linalg.vector_norm(draw, dim=0, keepdim=True).clamp_min(torch.finfo(like.dtype).tiny)


def sample_columns(candidates: Tensor, count: int, generator: torch.Generator) -> Tensor:
    """``count`` distinct columns of ``candidates`` drawn uniformly (without replacement)."""
    index = torch.randperm(candidates.shape[-1], generator=generator)[:count]
    return candidates[..., index.to(candidates.device)]


def keep_leading_and_sample_complement(ritz: Tensor, leading: int, generator: torch.Generator) -> Tensor:
    """[P] Alg 4: the top ``leading`` Ritz vectors plus ``r - leading`` columns sampled from an
    orthonormal basis of the complement of ``span(ritz)``.

    When the complement has fewer than ``r - leading`` directions (``m - r < r - l``) all of it
    is taken and the remaining columns are the next Ritz vectors ``l, l+1, ...`` [DECISION].
    """
    r = ritz.shape[-1]
    complement = qr_complement(ritz)
    wanted, available = r - leading, complement.shape[-1]
    if available >= wanted:
        return torch.cat([ritz[..., :leading], sample_columns(complement, wanted, generator)], -1)
    return torch.cat([ritz[..., : r - available], complement], -1)


def switch_basis(q: Tensor, previous: Tensor, leading: int, mode: str, generator: torch.Generator,
                 first: bool) -> Tensor:
    """One subspace switch ([P] Alg 4 with Alg 10) of an ``m x r`` basis on statistic ``q``.

    ``first``: there is no previous basis (the paper's ``U_0 = 0`` makes the subspace iteration
    degenerate), so the Ritz vectors are the exact top-``r`` eigenvectors [DECISION].
    """
    m, r = previous.shape[-2:]
    leading = min(leading, r)
    if mode == "gaussian":
        return unit_gaussian_columns(m, r, generator, previous)
    ritz = top_eigenvectors(q, r) if first else subspace_iteration(q, previous, iters=1)[0]
    if mode == "complement":
        return keep_leading_and_sample_complement(ritz, leading, generator)
    if mode == "full_basis":
        others = torch.cat([ritz[..., leading:], qr_complement(ritz)], -1)
        return torch.cat([ritz[..., :leading], sample_columns(others, r - leading, generator)], -1)
    if mode == "gaussian_mix":
        return torch.cat([ritz[..., :leading], unit_gaussian_columns(m, r - leading, generator, ritz)], -1)
    raise ValueError(f"switch_mode must be one of {SWITCH_MODES}, got {mode!r}")


def is_orthonormal_rule(switching: bool, mode: str, projection: str) -> bool:
    """Whether the basis rule always produces orthonormal columns (Gaussian rules do not)."""
    if switching:
        return mode in ("complement", "full_basis")
    return projection != "random"
