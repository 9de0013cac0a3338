"""The Fisher approximation an optimizer actually uses, read off its state after a replay.

:func:`used_fisher` steps a fresh ``fimkit.optim`` optimizer on one parameter of the samples'
shape, feeding the gradient samples as the gradients of consecutive steps (one sample a step,
in the given order), and turns its state into the dense ``F~`` whose ``-1/2`` power its update
applies. The optimizer's own code does the estimating (its EMAs, fixed point, switches,
tracking), so the result is what it would use if the gradients kept this distribution: the
estimator's bias plus the noise of its averaging window, not the drift of a real trajectory.

What each reader takes as ``F~`` (global step-size constants such as ``lr``, ``alpha``, the limiter
and bias-correction step factors are dropped, since the learning rate absorbs them; factors that
change the *relative* scale of two parts are kept):

- ``adam``: ``diag(v_hat)``, the bias-corrected EMA of ``G*G``;
- ``racs``: ``diag(vec(q s^T))`` from the EMA of each sample's 5-step fixed point ([P] Alg 1);
- ``shampoo``: ``kron(L^{1/2}, R^{1/2})`` with ``L = eps I + sum G G^T``, ``R`` likewise (its step is
  ``L^{-1/4} G R^{-1/4}``; the sums are not divided by the step count, so its raw scale is ``k`` times
  too large and only the rescaled error is meaningful);
- ``soap``, ``eigen_adam``: ``Q diag(d_hat) Q^T`` in the eigenbasis last refreshed from the EMA Gram
  matrices (every ``precondition_frequency`` steps), ``d_hat`` the bias-corrected EMA of the
  squared rotated gradients;
- ``alice``, ``alice0``: per column ``U diag(v_i) U^T + o_i (I - U U^T)`` with the tracked, switched
  basis ``U``, ``v`` the EMA of ``(U^T G)^2`` and ``o_i = p_i / ((m - r) alpha_c^2)``: the step's
  compensation ``alpha_c sqrt(m - r) R / sqrt(p)`` is ``o^{-1/2} R`` ([P] Alg 3);
- ``galore``: ``U diag(v_hat_i) U^T`` and nothing on the complement (its step there is zero: the
  pseudo-inverse of a ``F~`` that is zero there);
- ``fira``: GaLore's plus ``o_i = (alpha / (k_t alpha_c c_i))^2`` on the complement, from its last
  step's column norm ratio ``c_i = ||omega_i|| / ||sigma_i||`` and ``k_t = sqrt(1 - b2^t) / (1 - b1^t)``
  (its bias correction scales the unscaled compensation ``alpha_c R diag(c)`` too).

Tall samples (``m > n``) are replayed transposed, as the optimizers' ``transpose_to_short_side``
would, and ``F~`` is permuted back to the samples' own vec order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from .fim import check_samples
from .linalg import psd_matrix_power
from .optim import get_optimizer
from .structures import Diagonal, EigenvalueCorrected, Full, Kronecker, LowRankPlusDiagonal, RowColumn

Reader = Callable[[dict, dict, Tensor], Tensor]
READERS: dict[str, Reader] = {}
#: what each reader builds, for tables
DESCRIPTIONS: dict[str, str] = {}
LOW_RANK = ("alice", "alice0", "galore", "fira")
#: [P]'s 60M proportions: rank 128 of 512 rows, 40 of the 128 basis vectors kept at a switch
RANK_FRACTION, LEADING_FRACTION = 128 / 512, 40 / 128


def reader(name: str, description: str):
    """Register ``fn(state, group, last_grad) -> F~`` as the reader of optimizer ``name``."""
    def register(fn: Reader) -> Reader:
        READERS[name], DESCRIPTIONS[name] = fn, description
        return fn
    return register


@dataclass(frozen=True)
class UsedFisher:
    """``matrix``: the dense ``F~`` (mn x mn) of optimizer ``name`` after the replay; ``state_numel``:
    the floating-point numbers its state holds for this weight (momentum included)."""

    name: str
    matrix: Tensor
    state_numel: int
    description: str


def paper_proportions(m: int) -> dict[str, int]:
    """Rank and leading count of the low-rank optimizers for an ``m``-row weight, in [P]'s 60M
    proportions (``r = m / 4``, ``l = 0.31 r``, each at least 1)."""
    rank = max(1, round(m * RANK_FRACTION))
    return {"rank": rank, "leading": max(1, round(rank * LEADING_FRACTION))}


def replay(name: str, grads: Tensor, **hparams) -> torch.optim.Optimizer:
    """A fresh optimizer ``name`` stepped once per sample of ``grads`` (k, m, n) on a parameter of
    shape (m, n), in float64; returns it (its state is what the readers read)."""
    cls = get_optimizer(name)
    defaults = cls.default_hyperparameters() if hasattr(cls, "default_hyperparameters") else {}
    if "seed" in defaults and "seed" not in hparams:
        hparams["seed"] = 0  # Alice's switches: reproducible draws
    param = torch.nn.Parameter(torch.zeros(grads.shape[-2:], dtype=torch.float64))
    optimizer = cls([param], **hparams)
    for grad in grads.to(torch.float64):
        param.grad = grad.clone()
        optimizer.step()
    return optimizer


def used_fisher(name: str, grads: Tensor, **hparams) -> UsedFisher:
    """The ``F~`` optimizer ``name`` uses after seeing ``grads`` (k, m, n), one sample a step.

    ``hparams`` are passed to the optimizer; low-rank optimizers default to
    :func:`paper_proportions` of the short side.
    """
    name = name.lower()
    if name not in READERS:
        raise ValueError(f"no Fisher reader for optimizer {name!r}; readers exist for {', '.join(sorted(READERS))}")
    grads = check_samples(grads)
    tall = grads.shape[-2] > grads.shape[-1]
    stream = grads.mT if tall else grads
    if name in LOW_RANK:
        hparams = {**paper_proportions(stream.shape[-2]), **hparams}
    optimizer = replay(name, stream, **hparams)
    param = optimizer.param_groups[0]["params"][0]
    state, group = optimizer.state[param], optimizer.param_groups[0]
    matrix = READERS[name](state, group, stream[-1].to(torch.float64))
    if tall:
        n, m = stream.shape[-2:]
        matrix = matrix.reshape(n, m, n, m).permute(1, 0, 3, 2).reshape(m * n, m * n)
    numel = sum(v.numel() for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point() and k != "step")
    return UsedFisher(name, matrix, numel, DESCRIPTIONS[name])


def _step(state: dict) -> int:
    return int(state["step"])


def _bias_corrected(ema: Tensor, beta: float, step: int, enabled: bool) -> Tensor:
    return ema / (1.0 - beta**step) if enabled else ema


@reader("adam", "diag(v_hat): bias-corrected EMA of G*G")
def adam_fisher(state: dict, group: dict, last_grad: Tensor) -> Tensor:
    d = _bias_corrected(state["fisher_d"], group["betas"][1], _step(state), group["bias_correction"])
    return Diagonal().dense({"d": d}, *d.shape)


@reader("racs", "diag(q s^T): EMA of per-sample 5-step fixed points")
def racs_fisher(state: dict, group: dict, last_grad: Tensor) -> Tensor:
    q, s = state["q"], state["s"]
    return RowColumn().dense({"rows": q, "cols": s}, q.numel(), s.numel())


@reader("shampoo", "kron(L^1/2, R^1/2): accumulated Gram matrices (Thm 3.1 bound)")
def shampoo_fisher(state: dict, group: dict, last_grad: Tensor) -> Tensor:
    rows, cols = state["fisher_rows"], state["fisher_cols"]
    params = {"rows": psd_matrix_power(rows, 0.5), "cols": psd_matrix_power(cols, 0.5)}
    return Kronecker(Full(), Full()).dense(params, rows.shape[0], cols.shape[0])


def _eigenvalue_corrected(state: dict, group: dict, last_grad: Tensor) -> Tensor:
    d = _bias_corrected(state["fisher_d"], group["betas"][1], _step(state), group["bias_correction"])
    params = {"d": d, **{k: state[f"fisher_{k}"] for k in ("rows_basis", "cols_basis") if f"fisher_{k}" in state}}
    return EigenvalueCorrected().dense(params, *d.shape)


reader("soap", "Q diag(d_hat) Q^T, Q from EMA Gram eigenbases refreshed every K steps")(_eigenvalue_corrected)
reader("eigen_adam", "U diag(d_hat) U^T per column, U from the EMA row Gram every K steps")(_eigenvalue_corrected)


def _low_rank(basis: Tensor, d: Tensor, compensation: Tensor | None) -> Tensor:
    m, r = basis.shape
    params = {"basis": basis, "d": d}
    if compensation is not None and r < m:
        params["compensation"] = compensation
    return LowRankPlusDiagonal(rank=r).dense(params, m, d.shape[-1])


def _subspace_second_moment(state: dict, group: dict) -> Tensor:
    return _bias_corrected(state["projected_exp_avg_sq"], group["betas"][1], _step(state), group["bias_correction"])


def _step_factor(state: dict, group: dict) -> float:
    """``k_t = sqrt(1 - b2^t) / (1 - b1^t)``, the bias correction the subspace optimizers fold into
    the step: it turns ``m / sqrt(v)`` into ``m_hat / sqrt(v_hat)`` but also scales the compensation."""
    b1, b2 = group["betas"]
    step = _step(state)
    return (1 - b2**step) ** 0.5 / (1 - b1**step) if group["bias_correction"] else 1.0


def _alice(state: dict, group: dict, last_grad: Tensor) -> Tensor:
    basis = state["basis"]
    m, r = basis.shape
    weight = group["alpha_c"] * _step_factor(state, group)
    o = state["compensation_p"] / (max(m - r, 1) * weight**2)
    return _low_rank(basis, _subspace_second_moment(state, group), o)


reader("alice", "U diag(v) U^T + p/((m-r) alpha_c^2) on the complement; tracked, switched U")(_alice)
reader("alice0", "as alice, without tracking (U from the current G G^T at a switch)")(_alice)


@reader("galore", "U diag(v_hat) U^T, U from the SVD of G every K steps; 0 on the complement")
def galore_fisher(state: dict, group: dict, last_grad: Tensor) -> Tensor:
    return _low_rank(state["basis"], _subspace_second_moment(state, group), None)


@reader("fira", "GaLore's plus (alpha / (k_t alpha_c c_i))^2 on the complement, c = Fira's column norm ratio")
def fira_fisher(state: dict, group: dict, last_grad: Tensor) -> Tensor:
    basis = state["basis"]
    omega = state["projected_exp_avg"] / (state["projected_exp_avg_sq"].sqrt() + group["eps"])
    ratio = omega.norm(dim=-2) / (torch.linalg.vector_norm(basis.mT @ last_grad, dim=-2) + 1e-8)  # Fira's guard
    # Fira adds alpha_c R diag(ratio) unscaled by alpha: relative to the subspace's alpha / sqrt(v_hat)
    weight = (group["alpha_c"] * _step_factor(state, group) / group["alpha"]) * ratio
    o = weight.clamp_min(torch.finfo(weight.dtype).tiny) ** -2
    return _low_rank(basis, _subspace_second_moment(state, group), o)
