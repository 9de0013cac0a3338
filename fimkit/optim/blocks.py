"""Reusable blocks of update chains (see ``chain.py`` for the protocol).

Each block is the code form of one line of an algorithm in algorithms.md: momentum (and Muon's
Nesterov form), the structured preconditioned step, the learning rate, a scale, Fira's
norm-growth limiter, Adafactor's update clipping and relative step size, SWAN's row
standardisation and rescale, Muon's aspect-ratio factor. :func:`tracking_blocks` is what
``fimkit.derive`` puts between a recipe's ``pre`` and ``post`` blocks for a structure.
"""

from __future__ import annotations

import math
from functools import singledispatch

import torch
from torch import Tensor

from ..linalg import limiter_from_norm
from ..normalisation import rescale_to_rms, standardize_rows
from ..reductions import BOTH
from ..structures.base import Structure
from ..structures.diagonal import Diagonal
from . import sharded
from .chain import Block, Group, ScalarBlock
from .domains import BETAS, BOOLEAN, NON_NEGATIVE, POSITIVE, real
from .preconditioners import Preconditioner, StatisticPreconditioner, preconditioner_for


class Momentum(Block):
    """``m = b1 m + (1 - b1) G`` (bias-corrected when ``bias_correction``); off when b1 = 0."""

    hyperparameters = {"betas": (0.9, 0.999), "bias_correction": True}
    domains = {"betas": BETAS, "bias_correction": BOOLEAN}
    needs_step = True
    elementwise = True

    def init_state(self, m, n, like, group):
        return {"exp_avg": like.new_zeros(m, n)} if group["betas"][0] > 0 else {}

    def state_degrees(self, group, degree):
        return {"exp_avg": degree}

    def scale_equivariant(self, group):
        return True

    def __call__(self, update, grad, param, state, group, step):
        beta1 = group["betas"][0]
        if beta1 == 0:
            return update
        exp_avg = state["exp_avg"]
        exp_avg.lerp_(update, 1 - beta1)
        if group["bias_correction"]:
            return exp_avg / (1 - beta1**step)
        return exp_avg


class Precondition(Block):
    """``Mat(F~^{-power} vec(X))`` with ``F~`` the structure's member tracked from gradients
    (by ``preconditioner_for(structure)``; ``refresh_offset`` shifts its periodic refreshes, see
    :func:`~fimkit.optim.chain.is_refresh_step`)."""

    def __init__(self, structure: Structure, preconditioner: Preconditioner | None = None,
                 refresh_offset: int = 0):
        self.structure = structure
        self.preconditioner = preconditioner or preconditioner_for(structure)
        self.preconditioner.refresh_offset = refresh_offset
        self.hyperparameters = self.preconditioner.hyperparameters
        self.domains = self.preconditioner.domains
        self.needs_step = self.preconditioner.needs_step
        # Diagonal's statistic G*G, fit and G / (sqrt(d) + eps) are per entry (Adam); every other
        # structure couples entries (a row, a column, a Gram), as a user's may.
        self.elementwise = type(structure) is Diagonal and type(self.preconditioner) is StatisticPreconditioner
        self.partial_sums = self.preconditioner.partial_sums

    def __repr__(self) -> str:
        return f"Precondition({self.structure!r})"

    def validate(self, group: Group) -> None:
        self.preconditioner.validate(group)

    def init_state(self, m, n, like, group):
        return self.preconditioner.init_state(m, n, like, group)

    def state_degrees(self, group, degree):
        return self.preconditioner.state_degrees(group, degree)

    def output_degree(self, group, degree):
        return self.preconditioner.output_degree(group, degree)

    def scale_equivariant(self, group):
        return self.preconditioner.scale_equivariant(group)

    def __call__(self, update, grad, param, state, group, step):
        return self.preconditioner(update, grad, state, group, step)


class LearningRate(ScalarBlock):
    """The final signed change ``-lr * X``."""

    elementwise = True

    def factor(self, update, state, group, step):
        return -group["lr"]


class Scale(ScalarBlock):
    """``alpha * X`` with ``alpha`` read from the hyperparameter named ``name``."""

    elementwise = True

    def __init__(self, name: str = "alpha", default: float = 1.0):
        self.name = name
        self.hyperparameters = {name: default}
        self.domains = {name: NON_NEGATIVE}  # a negative scale would ascend the loss

    def __repr__(self) -> str:
        default = self.hyperparameters[self.name]
        return f"Scale({self.name!r})" if default == 1.0 else f"Scale({self.name!r}, {default!r})"

    def factor(self, update, state, group, step):
        return group[self.name]


class NormGrowthLimiter(ScalarBlock):
    """Fira's limiter ([P] Alg 1): the update norm grows at most by ``gamma`` per step.

    State ``phi`` (the last update norm, one number). The first step, detected as ``phi == 0``
    so that no step counter is needed, is not limited. The factor ``eta`` is a 0-d tensor (no
    host sync).
    """

    hyperparameters = {"gamma": 1.01}
    domains = {"gamma": real(1.0)}  # the factor by which the update norm may grow per step
    reads_update = True
    partial_sums = True

    def init_state(self, m, n, like, group):
        return {"phi": like.new_zeros(())}

    def state_degrees(self, group, degree):
        return {"phi": degree}  # the norm of its input

    def factor(self, update, state, group, step):
        phi = state["phi"]
        norm = sharded.reduction().norm(update)
        eta, new_phi = limiter_from_norm(norm, phi, group["gamma"], first=phi == 0)
        phi.copy_(new_phi)
        return eta


class ClipUpdateRMS(Block):
    """Adafactor's update clipping: ``X / max(1, RMS(X) / d)`` (no host sync)."""

    hyperparameters = {"d": 1.0}
    domains = {"d": POSITIVE}  # the largest RMS an update may have
    partial_sums = True

    def __call__(self, update, grad, param, state, group, step):
        rms = sharded.reduction().mean(update.square(), over=BOTH).sqrt()
        return update / torch.clamp(rms / group["d"], min=1.0)


class RelativeStepSize(Block):
    """Adafactor's step size ``max(eps2, RMS(W)) * min(lr, 1/sqrt(t))`` and the sign."""

    hyperparameters = {"eps2": 1e-3}
    domains = {"eps2": NON_NEGATIVE}
    needs_step = True
    partial_sums = True

    def scale_equivariant(self, group):
        return True  # a function of the parameter, times its input

    def __call__(self, update, grad, param, state, group, step):
        rho = min(group["lr"], step**-0.5) if not isinstance(step, Tensor) else (step**-0.5).clamp(max=group["lr"])
        scale = torch.clamp(sharded.reduction().mean(param.square(), over=BOTH).sqrt(), min=group["eps2"]) * rho
        return update * -scale


class StandardizeRows(Block):
    """SWAN's GradNorm ([P] Eq 30): every row to zero mean and unit standard deviation."""

    def output_degree(self, group, degree):
        return 0.0  # (a one-column matrix passes through; SWAN's whitening then normalises it)

    def scale_equivariant(self, group):
        return True

    def __call__(self, update, grad, param, state, group, step):
        return standardize_rows(update)


class RescaleToRMS(Block):
    """SWAN's optional rescale: the direction to root-mean-square entry 1 (norm ``sqrt(mn)``)
    when ``rescale`` is true, so that ``lr * alpha`` is the per-entry step size."""

    hyperparameters = {"rescale": True}
    domains = {"rescale": BOOLEAN}

    def output_degree(self, group, degree):
        return 0.0 if group["rescale"] else degree

    def scale_equivariant(self, group):
        return True

    def __call__(self, update, grad, param, state, group, step):
        return rescale_to_rms(update) if group["rescale"] else update


class NesterovLookahead(Block):
    """After ``Momentum``: Muon's Nesterov form ``(1 - b1) G + b1 M`` when ``nesterov``."""

    hyperparameters = {"nesterov": True}
    domains = {"nesterov": BOOLEAN}

    def scale_equivariant(self, group):
        return True  # both its inputs scale like the gradient

    def __call__(self, update, grad, param, state, group, step):
        return torch.lerp(grad, update, group["betas"][0]) if group["nesterov"] else update


class AspectRatioScale(Block):
    """Muon's shape factor ``sqrt(max(1, rows / cols))`` of the (untransposed) weight."""

    def scale_equivariant(self, group):
        return True

    def __call__(self, update, grad, param, state, group, step):
        rows, cols = update.shape[-2:]
        return update * math.sqrt(max(1.0, rows / cols))


@singledispatch
def tracking_blocks(structure: Structure, refresh_offset: int = 0) -> tuple[Block, ...]:
    """The blocks that track ``structure`` online and precondition the direction with it: one
    :class:`Precondition` for most structures; a structure whose optimizer state lives in its
    own coordinates registers its own (``LowRankPlusDiagonal(estimator="subspace")``: project,
    Adam in the subspace, back-project with the compensation, see ``fimkit.lowrank``)."""
    return (Precondition(structure, refresh_offset=refresh_offset),)
