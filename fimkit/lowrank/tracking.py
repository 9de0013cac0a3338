"""Subspace tracking ([P] §5.2, Alg 4): the Gram statistic kept in ``r x r`` instead of ``m x m``.

Eigen-Adam needs ``Q = EMA(G G^T)`` (``m x m``) to refresh its basis. Alice keeps only its
projection on the current subspace, ``Qt = b3 Qt + (1 - b3) sigma sigma^T`` with
``sigma = U^T G``, and rebuilds an ``m x m`` matrix at a switch from ``U Qt U^T`` plus the current
gradient's Gram. By [P] Prop 4 / Eq 18, when the gradients share an eigenbasis with ``Q`` the
part of ``Q`` inside ``span(U)`` is exactly ``U Qt U^T`` (no cross terms with the complement).

All functions are pure (the ``track_*`` one updates its first argument in place, as an EMA).
"""

from __future__ import annotations

from torch import Tensor


def project(basis: Tensor, x: Tensor) -> Tensor:
    """``sigma = U^T X``: coordinates of ``X``'s columns in the subspace (``r x n``)."""
    return basis.mT @ x


def track_projected_gram(projected_gram: Tensor, sigma: Tensor, beta: float) -> Tensor:
    """In place ``Qt = beta Qt + (1 - beta) sigma sigma^T`` ([P] Alg 4, tracking)."""
    return projected_gram.mul_(beta).addmm_(sigma, sigma.mT, alpha=1.0 - beta)


def reconstruct_gram(basis: Tensor, projected_gram: Tensor) -> Tensor:
    """``U Qt U^T``: the tracked statistic as an ``m x m`` matrix."""
    return (basis @ projected_gram) @ basis.mT


def switch_statistic(grad: Tensor, beta: float, basis: Tensor | None = None,
                     projected_gram: Tensor | None = None) -> Tensor:
    """``Qfull = beta U Qt U^T + (1 - beta) G G^T`` ([P] Alg 4), built only at a switch.

    Without a tracked statistic (``beta = 0``, Alice-0) it is ``G G^T``.
    """
    q = (grad @ grad.mT) * (1.0 - beta)
    if projected_gram is not None and beta > 0:
        q = q + reconstruct_gram(basis, projected_gram) * beta
    return q


def change_of_basis(new_basis: Tensor, old_basis: Tensor) -> Tensor:
    """``R = U_new^T U_old`` (``r x r``): maps coordinates in the old subspace to the new one."""
    return new_basis.mT @ old_basis


def rotate_projected_gram(rotation: Tensor, projected_gram: Tensor) -> Tensor:
    """``R Qt R^T``: the tracked statistic re-expressed in the new subspace (``reproject_Q_on_switch``)."""
    return rotation @ projected_gram @ rotation.mT


def rotate_first_moment(rotation: Tensor, moment: Tensor) -> Tensor:
    """``R M``: a first moment of ``sigma`` in the new coordinates (exact for the part in both subspaces)."""
    return rotation @ moment


def rotate_second_moment(rotation: Tensor, moment: Tensor) -> Tensor:
    """``(R * R) V``: an element-wise second moment of ``sigma`` in the new coordinates, assuming
    uncorrelated coordinates (the cross terms ``E[sigma_i sigma_j]`` are not stored)."""
    return (rotation * rotation) @ moment
