"""Blocks that normalise or whiten the update: the shared pieces of RACS, SWAN, SinkGD and Muon.

Each block is one line of an algorithm (see ``chain.py`` for the protocol) over the pure math
of :mod:`fimkit.normalisation`. None adds an absolute ``eps``, so the optimizers built from them
are invariant to the gradient's scale (tested from step 1 for scales 1e-6 to 1e6).
"""

from __future__ import annotations

import dataclasses
import math

import torch

from ..linalg import fixed_point_rank1
from ..normalisation import (WHITENING_METHODS, rescale_to_rms, row_column_inverse_sqrt,
                             sinkhorn_normalise, standardize_rows, whiten)
from ..structures.factors import DiagonalFactor, Identity
from ..structures.kronecker import Kronecker
from .chain import Block, Group


class RowColumnScaling(Block):
    """RACS's preconditioner ([P] Alg 1, lines 5-8): ``X / sqrt(q s^T)`` with EMAs of q and s.

    Each step the structure's one-sample estimate (for ``RowColumn(estimator="per_sample")``:
    ``fixed_point_iters`` steps of Eq 16 on ``G*G`` from ``q = 1``) gives ``(q1, s1)``; the state
    ``q`` (rows) and ``s`` (columns) follow ``EMA_beta`` of them from zero, without bias
    correction ([P] Alg 1). ``ema=False`` uses ``q1, s1`` directly ([P] Fig 5e ablation).
    ``eps`` is relative to ``mean(q s^T)`` (see :func:`row_column_inverse_sqrt`).
    ``bias_correction=True`` (not in the paper) divides q and s by ``1 - beta^t``, i.e. scales
    the direction by ``1 - beta^t``; it keeps ``beta^t`` in the state (one more number) instead
    of a step counter.

    Works for any per-sample ``Kronecker`` whose sides are ``DiagonalFactor`` or ``Identity``:
    ``Kronecker(Identity(), DiagonalFactor(), estimator="per_sample")`` pins ``q`` to a
    constant, which is column normalisation ([P] App E.1).
    """

    hyperparameters = {"beta": 0.9, "ema": True, "eps": 1e-8, "bias_correction": False,
                       "fixed_point_iters": 5}

    def __init__(self, structure: Kronecker):
        sides_ok = all(isinstance(side, (DiagonalFactor, Identity)) for side in (structure.rows, structure.cols))
        if not (isinstance(structure, Kronecker) and structure.estimator == "per_sample" and sides_ok):
            raise ValueError("RowColumnScaling needs a Kronecker structure with estimator='per_sample' "
                             f"and DiagonalFactor/Identity sides, got {structure!r}")
        self.structure = structure
        self.hyperparameters = {**self.hyperparameters, "fixed_point_iters": structure.fixed_point_iters}

    def validate(self, group: Group) -> None:
        if not 0.0 <= group["beta"] < 1.0:
            raise ValueError(f"beta (EMA of the row and column scales) must be in [0, 1), got {group['beta']}")
        if not group["eps"] >= 0:
            raise ValueError(f"eps must be >= 0, got {group['eps']}")
        if int(group["fixed_point_iters"]) < 1:
            raise ValueError(f"fixed_point_iters must be >= 1, got {group['fixed_point_iters']}")

    def init_state(self, m, n, like, group):
        shapes = self.structure.statistic_shapes(m, n)
        state = {"q": like.new_zeros(shapes["rows"]),
                 "s": like.new_zeros(shapes["cols"])}
        if group["bias_correction"] and group["ema"]:
            state["beta_power"] = like.new_ones(())
        return state

    def _structure(self, group: Group) -> Kronecker:
        iters = int(group["fixed_point_iters"])
        if iters == self.structure.fixed_point_iters:
            return self.structure
        return dataclasses.replace(self.structure, fixed_point_iters=iters)

    def _one_sample_scales(self, grad: torch.Tensor, group: Group):
        """``(q1, s1, G*G or None)``: the structure's per-sample fit of this gradient."""
        if self.structure.rows == DiagonalFactor() and self.structure.cols == DiagonalFactor():
            # RowColumn: Eq 16 on G*G directly (the structure's generic path costs two more
            # passes over the m x n moment, a third of RACS's step)
            square = grad * grad
            s1, q1 = fixed_point_rank1(square, int(group["fixed_point_iters"]))
            return q1, s1, square
        sample = self._structure(group).statistics(grad)
        return sample["rows"], sample["cols"], None

    def __call__(self, update, grad, param, state, group, step):
        q1, s1, scratch = self._one_sample_scales(grad, group)
        weight = 1.0 - group["beta"] if group["ema"] else 1.0
        q, s = state["q"], state["s"]
        q.lerp_(q1, weight)
        s.lerp_(s1, weight)
        # (q s^T)^{-1/2} * X, computed in the G*G buffer when there is one (no new m x n tensor)
        inverse_sqrt = row_column_inverse_sqrt(q, s, group["eps"], out=scratch)
        direction = inverse_sqrt.mul_(update) if inverse_sqrt.shape == update.shape else inverse_sqrt * update
        if "beta_power" in state:
            beta_power = state["beta_power"]
            beta_power.mul_(group["beta"])
            direction = direction * (1 - beta_power)
        return direction


class StandardizeRows(Block):
    """SWAN's GradNorm ([P] Eq 30): every row to zero mean and unit standard deviation."""

    def __call__(self, update, grad, param, state, group, step):
        return standardize_rows(update)


class Whiten(Block):
    """``(X X^T)^{-1/2} X`` ([P] Eq 31): SWAN's GradWhitening and Muon's orthogonalisation.

    ``whitening`` picks the method of :func:`fimkit.normalisation.whiten` (``"eigh"`` exact,
    ``"newton_schulz"`` SWAN's coupled iteration with ``ns_steps`` and ``ns_step_size``,
    ``"newton_schulz5"`` Muon's quintic iteration with ``ns_steps``).
    """

    hyperparameters = {"whitening": "eigh", "ns_steps": 20, "ns_step_size": 0.5}

    def validate(self, group: Group) -> None:
        if group["whitening"] not in WHITENING_METHODS:
            raise ValueError(f"whitening must be one of {WHITENING_METHODS}, got {group['whitening']!r}")
        if int(group["ns_steps"]) < 1:
            raise ValueError(f"ns_steps must be >= 1, got {group['ns_steps']}")
        if not 0 < group["ns_step_size"] < 1:
            raise ValueError(f"ns_step_size must be in (0, 1), got {group['ns_step_size']}")

    def __call__(self, update, grad, param, state, group, step):
        return whiten(update, group["whitening"], int(group["ns_steps"]), group["ns_step_size"])


class RescaleToRMS(Block):
    """SWAN's optional rescale: the direction to root-mean-square entry 1 (norm ``sqrt(mn)``)
    when ``rescale`` is true, so that ``lr * alpha`` is the per-entry step size."""

    hyperparameters = {"rescale": True}

    def __call__(self, update, grad, param, state, group, step):
        return rescale_to_rms(update) if group["rescale"] else update


class SinkhornNormalise(Block):
    """SinkGD's SR-Sinkhorn (arXiv 2502.06742): ``sinkhorn_iters`` rounds of row then column
    l2 normalisation (rows to norm sqrt(n), columns to sqrt(m))."""

    hyperparameters = {"sinkhorn_iters": 5}

    def validate(self, group: Group) -> None:
        if int(group["sinkhorn_iters"]) < 1:
            raise ValueError(f"sinkhorn_iters must be >= 1, got {group['sinkhorn_iters']}")

    def __call__(self, update, grad, param, state, group, step):
        return sinkhorn_normalise(update, int(group["sinkhorn_iters"]))


class NesterovLookahead(Block):
    """After ``Momentum``: Muon's Nesterov form ``(1 - b1) G + b1 M`` when ``nesterov``."""

    hyperparameters = {"nesterov": True}

    def __call__(self, update, grad, param, state, group, step):
        return torch.lerp(grad, update, group["betas"][0]) if group["nesterov"] else update


class AspectRatioScale(Block):
    """Muon's shape factor ``sqrt(max(1, rows / cols))`` of the (untransposed) weight."""

    def __call__(self, update, grad, param, state, group, step):
        rows, cols = update.shape[-2:]
        return update * math.sqrt(max(1.0, rows / cols))
