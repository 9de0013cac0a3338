"""Low rank plus diagonal compensation: Alice's Fisher structure ([P] §5, Thm 5.1, Eq 19-21).

Row-major convention (``fimkit.fim``): column ``i`` of ``G`` is ``g_i`` (length ``m``) and ``F~`` is
block-diagonal over the ``n`` columns, one ``m x m`` block per column:

    M_i = U diag(D[:, i]) U^T + o_i (I_m - U U^T)

with ``basis`` ``U`` (``m x r``, orthonormal columns), eigenvalues ``d`` = ``D`` (``r x n``, > 0)
and ``compensation`` ``o`` (``n``, > 0). Inside ``span(U)`` it is Eigen-Adam's
eigenvalue-corrected block ([P] Thm 3.2); on the complement every direction of column ``i`` gets
the same eigenvalue ``o_i``, which is what makes the complement cheap (no ``m x (m - r)`` basis).

Frobenius optimum given ``U`` ([P] Thm 5.1, Eq 20-21), with ``S_i = E[g_i g_i^T]``:

    D = E[(U^T G)^2]                                        (= diag(U^T S_i U) per column)
    o_i = E[||g_i||^2 - ||U^T g_i||^2] / (m - r)            (= tr(U_c^T S_i U_c) / (m - r))

The basis is the paper's one alternating round: the top-``r`` eigenvectors of ``E[G G^T]``
(``sum_i S_i``). ``fit_fim(..., basis=U)`` holds a given basis fixed. With ``r >= m`` the rank is
clipped to ``m``, the complement is empty, there is no ``compensation`` parameter, and the
structure is ``EigenvalueCorrected(Kronecker(Full(), Identity()))``.

``precondition`` is matrix-free: ``U (U^T X / D^p) + (X - U U^T X) / o^p`` (``p = 1/2`` is the
paper's step, Eq 21), with ``eps`` added outside each root as ``EigenvalueCorrected`` does.

Online, the basis is the structure's carried state (the carried-state hook of ``Structure``):
``refresh`` is [P] Alg 4's switch, ``coordinates`` is ``sigma = U^T G``. The other fields say how
an optimizer tracks the member (like ``Kronecker.estimator``; ``solve`` always returns the
optimum above) and are the defaults of the hyperparameters of the same names:

- ``estimator``: ``"ema"`` (EMAs of the Thm 5.1 closed forms; ``fimkit.derive``'s momentum is
  preconditioned by ``F~^{-1/2}``) or ``"subspace"`` ([P] Alg 4: Adam's moments kept in the
  ``r``-dimensional subspace, the complement compensated from the current gradient: Alice,
  GaLore, Fira);
- ``tracking_beta`` (b3): the ``r x r`` statistic ``Qt`` tracked between switches (0: none, Alice-0);
- ``switching``, ``switch_mode``, ``leading``: Alg 4's switch (keep the top ``leading`` Ritz
  vectors, sample the rest; ``switching=False``: the plain top-``r`` basis of ``projection``:
  ``"eigen"`` of ``Qfull``, ``"svd"`` of ``G`` (GaLore), ``"random"`` (APOLLO));
- ``compensation``: the complement's term (``"optimal"``: Thm 5.1 / Alg 3; ``"none"``: GaLore;
  ``"fira"``: Fira's norm ratio; ``"fira_plus"``). A structure declared with ``"fira"`` is Fira's
  update ``alpha U omega + S``, whose ``S`` is not multiplied by ``alpha``; every other one is
  scaled with the low-rank term, as in Alice's ``alpha (U omega + alpha_c C)``.

The tracker is in ``fimkit.lowrank`` (it keeps ``Qt`` and Adam's moments in the subspace).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from ..linalg import eigh_descending
from .base import Params, ParamSpec, Structure

ESTIMATORS = ("ema", "subspace")
SWITCH_MODES = ("complement", "full_basis", "gaussian_mix", "gaussian")
#: how a non-switching basis is chosen: eigenvectors of Qfull, SVD of G, or a random projection
PROJECTIONS = ("eigen", "svd", "random")
COMPENSATION_MODES = ("optimal", "none", "fira", "fira_plus")
#: the fields that are also hyperparameters of the optimizers tracking this structure
TRACKING_OPTIONS = ("rank", "leading", "tracking_beta", "switching", "switch_mode", "projection", "compensation")


def _check_choice(name: str, value, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


@dataclass(frozen=True, repr=False)
class LowRankPlusDiagonal(Structure):
    """``blockdiag_i(U diag(D[:, i]) U^T + o_i (I - U U^T))``: a rank-``r`` eigenbasis plus the
    optimal diagonal compensation of its complement ([P] Thm 5.1)."""

    rank: int = 1
    estimator: str = "ema"
    leading: int = 40
    tracking_beta: float = 0.999
    switching: bool = True
    switch_mode: str = "complement"
    projection: str = "eigen"
    compensation: str = "optimal"
    solver: ClassVar[str] = "closed form (given the basis)"
    __repr__ = Structure.compact_repr

    def __post_init__(self):
        for name, low in (("rank", 1), ("leading", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        _check_choice("estimator", self.estimator, ESTIMATORS)
        _check_choice("switch_mode", self.switch_mode, SWITCH_MODES)
        _check_choice("projection", self.projection, PROJECTIONS)
        _check_choice("compensation", self.compensation, COMPENSATION_MODES)
        if not 0.0 <= self.tracking_beta < 1.0:
            raise ValueError(f"tracking_beta (b3) must be in [0, 1), got {self.tracking_beta}")
        if self.switching and self.projection != "eigen":
            raise ValueError(f"switching=True refines eigenvectors of Qfull; projection={self.projection!r} "
                             f"needs switching=False")
        if self.projection == "svd" and self.tracking_beta > 0:
            raise ValueError("projection='svd' takes the basis from the current gradient only; it needs "
                             "tracking_beta=0 (use projection='eigen' to include the tracked statistic)")
        if self.estimator == "ema" and self.compensation != "optimal":
            raise ValueError(f"estimator='ema' fits the Thm 5.1 compensation; compensation={self.compensation!r} "
                             f"needs estimator='subspace'")

    def tracking_options(self) -> dict:
        """The fields that are hyperparameters of an optimizer tracking this structure (their defaults)."""
        return {name: getattr(self, name) for name in TRACKING_OPTIONS}

    def effective_rank(self, m: int) -> int:
        """The rank actually used for an ``m``-row weight: ``min(rank, m)``."""
        return min(self.rank, m)

    # ------------------------------------------------------------------------ the family
    def parameter_spec(self, m: int, n: int) -> dict[str, ParamSpec]:
        r = self.effective_rank(m)
        spec = {"basis": ParamSpec((m, r), "stiefel"), "d": ParamSpec((r, n), "positive")}
        if r < m:
            spec["compensation"] = ParamSpec((n,), "positive")
        return spec

    def column_blocks(self, params: Params, m: int) -> Tensor:
        """The ``n`` diagonal blocks ``M_i`` (shape ``(n, m, m)``)."""
        u, d = params["basis"], params["d"]
        blocks = (u.unsqueeze(0) * d.mT.unsqueeze(1)) @ u.mT
        if "compensation" in params:
            complement = torch.eye(m, dtype=u.dtype, device=u.device) - u @ u.mT
            blocks = blocks + params["compensation"][:, None, None] * complement
        return blocks

    def dense(self, params: Params, m: int, n: int) -> Tensor:
        blocks = self.column_blocks(params, m)
        eye_n = torch.eye(n, dtype=blocks.dtype, device=blocks.device)
        # F[(a, i), (b, j)] = delta_ij M_i[a, b] in the row-major vec order (a * n + i).
        return torch.einsum("iab,ij->aibj", blocks, eye_n).reshape(m * n, m * n)

    def quadratic_form(self, params: Params, grads: Tensor) -> Tensor:
        sigma = params["basis"].mT @ grads
        value = (sigma.square() * params["d"]).sum((-2, -1))
        if "compensation" in params:
            complement_energy = grads.square().sum(-2) - sigma.square().sum(-2)
            value = value + (complement_energy * params["compensation"]).sum(-1)
        return value

    def frobenius_sq(self, params: Params, m: int, n: int) -> Tensor:
        # The two parts live on orthogonal subspaces: ||M_i||^2 = sum_k D_ki^2 + (m - r) o_i^2.
        value = params["d"].square().sum()
        if "compensation" in params:
            value = value + (m - params["basis"].shape[-1]) * params["compensation"].square().sum()
        return value

    # ------------------------------------------------------------------ the solution
    def fit_fim(self, fim: Tensor, m: int, n: int, basis: Tensor | None = None) -> Params:
        """Thm 5.1 given ``basis`` (default: top-``r`` eigenvectors of ``E[G G^T]``)."""
        r = self.effective_rank(m)
        column_second_moments = torch.einsum("aibi->iab", fim.reshape(m, n, m, n))  # S_i
        if basis is None:
            basis = eigh_descending(column_second_moments.sum(0))[1][:, :r]
        elif tuple(basis.shape) != (m, r):
            raise ValueError(f"basis must have shape ({m}, {r}) for a {m} x {n} weight at rank "
                             f"{self.rank}, got {tuple(basis.shape)}")
        d = torch.einsum("iab,ak,bk->ki", column_second_moments, basis, basis)
        params = {"basis": basis, "d": d}
        if r < m:
            total = torch.diagonal(column_second_moments, dim1=-2, dim2=-1).sum(-1)
            params["compensation"] = (total - d.sum(0)) / (m - r)
        return params

    # --------------------------------------------------------------- online estimation
    def statistic_shapes(self, m: int, n: int) -> dict[str, tuple[int, ...]]:
        r = self.effective_rank(m)
        shapes = {"basis": (m, r), "projected_gram": (r, r), "d": (r, n)}
        if r < m:
            shapes["compensation"] = (n,)
        return shapes

    def statistics(self, grad: Tensor) -> dict[str, Tensor]:
        """Nothing is averaged outside the subspace: a switch reads the tracked ``projected_gram``
        (an EMA of ``sigma sigma^T`` kept by the tracker) and the current gradient."""
        return {}

    def fit(self, stats: dict[str, Tensor], m: int, n: int) -> Params:
        """The member from the carried basis and the tracked ``d`` (and ``compensation``)."""
        return {name: stats[name] for name in ("basis", "d", "compensation") if name in stats}

    def carried_shapes(self, m: int, n: int) -> dict[str, tuple[int, ...]]:
        return {"basis": (m, self.effective_rank(m))}

    def refresh(self, stats: dict[str, Tensor], carried: Params, grad: Tensor, step: int) -> Params:
        """The basis at refresh step ``step`` ([P] Alg 4 and 10): a switch on
        ``Qfull = b3 U Qt U^T + (1 - b3) G G^T`` (``stats["projected_gram"]`` is ``Qt``), or the
        plain top-``r`` basis of ``projection``. ``carried["switch_seed"]`` seeds its random draws
        (a generator of ``(seed, step)``, see ``fimkit.lowrank.switching``)."""
        from ..lowrank import switching  # the pure math of the switch (fimkit.lowrank imports optim)
        from ..lowrank.tracking import switch_statistic

        old = carried["basis"]
        m, r = old.shape
        seed = carried.get("switch_seed")
        generator = switching.switch_generator(int(seed), step) if seed is not None else None
        if self.projection == "svd":
            return {"basis": switching.top_left_singular_vectors(grad, r)}
        if self.projection == "random":
            return {"basis": switching.gaussian_projection(m, r, generator, grad)}
        q = switch_statistic(grad, self.tracking_beta, old, stats.get("projected_gram"))
        if self.switching:
            return {"basis": switching.switch_basis(q, old, self.leading, self.switch_mode, generator, first=step == 1)}
        return {"basis": switching.top_eigenvectors(q, r)}

    def coordinates(self, grad: Tensor, carried: Params) -> Tensor:
        """``sigma = U^T G`` (``r x n``)."""
        return carried["basis"].mT @ grad

    def precondition(self, params: Params, grad: Tensor, power: float = 0.5, eps: float = 0.0) -> Tensor:
        basis, d = params["basis"], params["d"]
        sigma = basis.mT @ grad
        root = d.sqrt() if power == 0.5 else d.pow(power)
        step = basis @ (sigma / (root + eps))
        if "compensation" in params:
            o = params["compensation"]
            o_root = o.sqrt() if power == 0.5 else o.pow(power)
            step = step + (grad - basis @ sigma) / (o_root + eps)
        return step
