"""How an optimizer tracks a structure online: the *where the statistics live* layer.

A preconditioner owns the statistics of one parameter and maps a direction ``X`` to
``Mat(F~^{-power} vec(X))``. ``preconditioner_for(structure)`` picks one:

- :class:`StatisticPreconditioner` (any structure, including a user's): EMA (or running sum) of
  ``structure.statistics(G)``, then ``structure.fit`` and ``structure.precondition``. Adam,
  Shampoo and Adafactor are this one with different structures and estimators.
- :class:`CarriedStatePreconditioner` (any structure that carries state between refits,
  ``Structure.carried_shapes``, including a user's): the state is refreshed periodically and
  the statistics are taken in it. ``EigenvalueCorrected`` (SOAP, Eigen-Adam) is this one.
- The fast paths of ``Kronecker`` members fitted to one gradient at a time:
  :class:`RowColumnPreconditioner` (``estimator="per_sample"`` with diagonal or identity sides:
  RACS), :class:`WhiteningPreconditioner` (``"one_sample"`` whitening: SWAN, Muon) and
  :class:`SinkhornPreconditioner` (``"sinkhorn"`` balancing: SinkGD).

A structure with its own tracker registers it with ``preconditioner_for.register`` (as
``LowRankPlusDiagonal`` does in ``fimkit.lowrank``). Every periodic refresh follows
:func:`~fimkit.optim.chain.is_refresh_step`.
"""

from __future__ import annotations

import dataclasses
import math
from functools import singledispatch
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..linalg import fixed_point_rank1, keep_on_failure
from ..reductions import Reduction
from ..normalisation import WHITENING_METHODS, row_column_inverse_sqrt, sinkhorn_normalise, whiten
from ..structures.base import Structure
from ..structures.factors import DiagonalFactor, Full, Identity
from ..structures.kronecker import Kronecker
from . import sharded
from .chain import Group, State, is_refresh_step
from .domains import BETAS, BOOLEAN, DECAY, NON_NEGATIVE, POSITIVE, choice, integer, optional, real


class Preconditioner:
    hyperparameters: ClassVar[dict[str, Any]] = {}
    #: the valid values of each hyperparameter (``fimkit.optim.domains``)
    domains: ClassVar[dict[str, Any]] = {}
    #: whether it reads the per-parameter step counter
    needs_step: ClassVar[bool] = True
    #: whether its reductions go through ``sharded.reduction()`` (``Block.partial_sums``)
    partial_sums: bool = False
    #: shifts periodic refreshes (``is_refresh_step``); set by the ``Precondition`` block
    refresh_offset: int = 0

    def validate(self, group: Group) -> None:
        pass

    # How it scales with the gradient (see ``Block.state_degrees``): by default a -1/2 power of a
    # second moment, whose output has the degree of its input minus 1, with an absolute eps.
    def state_degrees(self, group: Group, degree: float) -> dict[str, float]:
        return {}

    def output_degree(self, group: Group, degree: float) -> float:
        return degree - 1.0

    def scale_equivariant(self, group: Group) -> bool:
        return False

    def init_state(self, m: int, n: int, like: Tensor, group: Group) -> State:
        raise NotImplementedError

    def __call__(self, update: Tensor, grad: Tensor, state: State, group: Group, step: int) -> Tensor:
        raise NotImplementedError


def _ema_weight(group: Group, step: int) -> float:
    """Weight of the new sample: ``1 - beta2``, or Adafactor's ``t ** beta2_decay``."""
    decay = group.get("beta2_decay")
    return step**decay if decay is not None else 1.0 - group["betas"][1]


class StatisticPreconditioner(Preconditioner):
    """EMA of the structure's statistics -> fitted member -> preconditioned direction.

    ``accumulate=True`` sums instead (Shampoo, AdaGrad); ``stat_init`` starts the statistics at
    that multiple of the structure's identity statistics (Shampoo's ``L = eps I``);
    ``precondition_frequency`` refits at the refresh steps only and reuses the fitted member in
    between.
    """

    hyperparameters = {
        "betas": (0.9, 0.999), "eps": 1e-8, "power": 0.5, "bias_correction": True,
        "precondition_frequency": 1, "accumulate": False, "stat_init": 0.0, "beta2_decay": None,
    }
    domains = {
        "betas": BETAS, "eps": NON_NEGATIVE, "power": POSITIVE, "bias_correction": BOOLEAN,
        "precondition_frequency": integer(1), "accumulate": BOOLEAN, "stat_init": NON_NEGATIVE,
        "beta2_decay": optional(real(high=0.0)),  # Adafactor's t^beta2_decay: a weight that decays
    }

    def __init__(self, structure: Structure):
        self.structure = structure
        self.partial_sums = structure.reduces_by_partial_sums()

    def state_degrees(self, group, degree):
        degrees = {f"fisher_{name}": self.structure.statistic_degree(name) for name in self._statistic_names()}
        for key in self._parameter_names():
            if self.structure.parameter_degree(key) is not None:
                degrees[f"fit_{key}"] = self.structure.parameter_degree(key)
        return degrees

    # Names do not depend on the shape; a structure that refuses a 1 x 1 weight declares none
    # (its state is then left as it is when the unit moves).
    def _statistic_names(self):
        try:
            return self.structure.statistic_shapes(1, 1)
        except (ValueError, ArithmeticError):
            return {}

    def _parameter_names(self):
        try:
            return self.structure.parameter_spec(1, 1)
        except (ValueError, ArithmeticError):
            return {}

    def output_degree(self, group, degree):
        return degree - 2.0 * group["power"]

    def scale_equivariant(self, group):
        return group["eps"] == 0 and not group["stat_init"]

    def _cached_keys(self, m: int, n: int) -> dict[str, tuple[int, ...]]:
        return {f"fit_{k}": s.shape for k, s in self.structure.parameter_spec(m, n).items()}

    def init_state(self, m, n, like, group):
        state = {}
        prior = self.structure.statistics_prior(m, n, like.dtype) if group["stat_init"] else {}
        for name, shape in self.structure.statistic_shapes(m, n).items():
            start = like.new_zeros(shape)
            if name in prior:
                start = prior[name].to(like.device) * group["stat_init"]
            state[f"fisher_{name}"] = start
        if group["precondition_frequency"] > 1:
            state.update({k: like.new_zeros(s) for k, s in self._cached_keys(m, n).items()})
        return state

    def __call__(self, update, grad, state, group, step):
        m, n = grad.shape
        # passed only to a structure that takes it (an element-wise one needs none), on a shard
        sums = {"reduce": sharded.reduction()} if self.partial_sums else {}
        stats = {}
        for name, sample in self.structure.statistics(grad, **sums).items():
            running = state[f"fisher_{name}"]
            if group["accumulate"]:
                running.add_(sample)
            else:
                running.lerp_(sample, _ema_weight(group, step))
            stats[name] = running
        if group["bias_correction"] and not group["accumulate"] and group["beta2_decay"] is None:
            correction = 1 - group["betas"][1] ** step
            stats = {k: v / correction for k, v in stats.items()}

        frequency = int(group["precondition_frequency"])
        if frequency == 1:
            params = self.structure.fit(stats, m, n, **sums)
        else:
            if is_refresh_step(step, frequency, self.refresh_offset):
                for key, value in self.structure.fit(stats, m, n, **sums).items():
                    state[f"fit_{key}"].copy_(value)
            params = {k[len("fit_"):]: v for k, v in state.items() if k.startswith("fit_")}
        return self.structure.precondition(params, update, group["power"], group["eps"])


class CarriedStatePreconditioner(Preconditioner):
    """A structure that carries state between refits (``Structure.carried_shapes``), e.g. an
    eigenbasis: [P] Alg 6 (SOAP) and Alg 7 (Eigen-Adam) for ``EigenvalueCorrected``.

    Each step: the statistics a refresh reads (``structure.statistics(G)``, e.g. the Gram
    matrices) are an EMA with ``shampoo_beta`` (the paper's b3); at the refresh steps
    (``precondition_frequency`` = K) ``structure.refresh`` recomputes the carried state from
    them; ``d``, the second moment of the gradient's ``structure.coordinates`` in the carried
    state, is an EMA with ``betas[1]``; ``structure.fit`` of all of it preconditions the
    direction (e.g. the momentum, kept in the original space).
    """

    hyperparameters = {
        "betas": (0.9, 0.999), "eps": 1e-8, "shampoo_beta": 0.95, "precondition_frequency": 10,
        "bias_correction": True,
    }
    domains = {"betas": BETAS, "eps": NON_NEGATIVE, "shampoo_beta": DECAY, "precondition_frequency": integer(1),
               "bias_correction": BOOLEAN}

    def __init__(self, structure: Structure):
        self.structure = structure

    def state_degrees(self, group, degree):
        carried = self.structure.carried_shapes(1, 1)
        degrees = {f"fisher_{name}": 0.0 if name in carried else self.structure.statistic_degree(name)
                   for name in self.structure.statistic_shapes(1, 1)}
        return {**degrees, "fisher_d": 2.0}

    def scale_equivariant(self, group):
        return group["eps"] == 0

    def init_state(self, m, n, like, group):
        state = {f"fisher_{k}": like.new_zeros(s) for k, s in self.structure.statistic_shapes(m, n).items()}
        for key, value in self.structure.initial_carried(m, n, like).items():
            state[f"fisher_{key}"] = value
        return state

    def __call__(self, update, grad, state, group, step):
        structure, (m, n) = self.structure, grad.shape
        stats = {}
        for name, sample in structure.statistics(grad).items():
            stats[name] = state[f"fisher_{name}"].lerp_(sample, 1 - group["shampoo_beta"])
        carried = {k: state[f"fisher_{k}"] for k in structure.carried_shapes(m, n)}
        if is_refresh_step(step, group["precondition_frequency"], self.refresh_offset):
            fresh = keep_on_failure(lambda: structure.refresh(stats, carried, grad, int(step)), carried,
                                    f"the refresh of step {step}")
            for name, value in fresh.items():
                carried[name].copy_(value)

        coordinates = structure.coordinates(grad, carried)
        d = state["fisher_d"]
        d.mul_(group["betas"][1]).addcmul_(coordinates, coordinates, value=1 - group["betas"][1])
        if group["bias_correction"]:
            d = d / (1 - group["betas"][1] ** step)
        return structure.precondition(structure.fit({**stats, **carried, "d": d}, m, n), update, 0.5, group["eps"])


class RowColumnPreconditioner(Preconditioner):
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
    domains = {"beta": DECAY, "ema": BOOLEAN, "eps": NON_NEGATIVE, "bias_correction": BOOLEAN,
               "fixed_point_iters": integer(1)}
    needs_step = False

    def __init__(self, structure: Kronecker):
        self.structure = structure
        self.hyperparameters = {**self.hyperparameters, "fixed_point_iters": structure.fixed_point_iters}
        # the fast path's fixed point and means complete their sums across shards; the generic
        # path (an Identity side) does not
        self.partial_sums = self._is_row_column()

    def _is_row_column(self) -> bool:
        return self.structure.rows == DiagonalFactor() and self.structure.cols == DiagonalFactor()

    def state_degrees(self, group, degree):
        # the fixed point's q is scale-free (it starts from ones), s carries G^2; beta^t is a number
        return {"q": 0.0, "s": 2.0, "beta_power": 0.0}

    def scale_equivariant(self, group):
        return True  # eps is relative to mean(q s^T)

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

    def _one_sample_scales(self, grad: Tensor, group: Group, reduce: Reduction):
        """``(q1, s1, G*G or None)``: the structure's per-sample fit of this gradient."""
        if self._is_row_column():
            # RowColumn: Eq 16 on G*G directly (the structure's generic path costs two more
            # passes over the m x n moment, a third of RACS's step)
            square = grad * grad
            s1, q1 = fixed_point_rank1(square, int(group["fixed_point_iters"]), reduce=reduce, nonnegative=True)
            return q1, s1, square
        sample = self._structure(group).statistics(grad)
        return sample["rows"], sample["cols"], None

    def __call__(self, update, grad, state, group, step):
        reduce = sharded.reduction()
        q1, s1, scratch = self._one_sample_scales(grad, group, reduce)
        weight = 1.0 - group["beta"] if group["ema"] else 1.0
        q, s = state["q"], state["s"]
        q.lerp_(q1, weight)
        s.lerp_(s1, weight)
        # (q s^T)^{-1/2} * X, computed in the G*G buffer when there is one (no new m x n tensor)
        # (dynamo refuses an out= that is not contiguous, as G*G of a transposed G is)
        scratch = None if torch.compiler.is_compiling() else scratch
        inverse_sqrt = row_column_inverse_sqrt(q, s, group["eps"], out=scratch, reduce=reduce)
        direction = inverse_sqrt.mul_(update) if inverse_sqrt.shape == update.shape else inverse_sqrt * update
        if "beta_power" in state:
            beta_power = state["beta_power"]
            beta_power.mul_(group["beta"])
            direction = direction * (1 - beta_power)
        return direction


class OneDirectionPreconditioner(Preconditioner):
    """A member fitted to the direction it preconditions alone: no state, no step counter, and
    an output of degree 0 in the gradient's scale (a normalisation or whitening)."""

    needs_step = False

    def __init__(self, structure: Kronecker):
        self.structure = structure

    def output_degree(self, group, degree):
        return 0.0

    def scale_equivariant(self, group):
        return True

    def init_state(self, m, n, like, group):
        return {}


class WhiteningPreconditioner(OneDirectionPreconditioner):
    """The whitening member fitted to the direction alone ([P] Prop 2 with one sample):
    ``(X X^T)^{-1/2} X``, the polar factor: SWAN's GradWhitening ([P] Eq 31) and Muon's
    orthogonalisation. With ``keep_constants`` the FIM view's factor ``sqrt(n)`` (``sqrt(m)``
    for a column-side structure) multiplies it; SWAN and Muon omit it ([P] App E.5).

    ``whitening`` picks the method of :func:`fimkit.normalisation.whiten` (``"eigh"`` exact,
    ``"newton_schulz"`` SWAN's coupled iteration with ``ns_steps`` and ``ns_step_size``,
    ``"newton_schulz5"`` Muon's quintic iteration with ``ns_steps``). Stateless.
    """

    hyperparameters = {"whitening": "eigh", "ns_steps": 20, "ns_step_size": 0.5}
    domains = {"whitening": choice(*WHITENING_METHODS), "ns_steps": integer(1),
               "ns_step_size": real(0.0, 1.0, low_open=True, high_open=True)}
    def __call__(self, update, grad, state, group, step):
        out = whiten(update, group["whitening"], int(group["ns_steps"]), group["ns_step_size"])
        if self.structure.keep_constants:
            out = out * math.sqrt(update.shape[-1] if isinstance(self.structure.rows, Full) else update.shape[-2])
        return out


class SinkhornPreconditioner(OneDirectionPreconditioner):
    """The ``RowColumn`` member that balances the direction alone (SinkGD, arXiv 2502.06742):
    ``sinkhorn_iters`` rounds of SR-Sinkhorn, rows to l2 norm ``sqrt(n)`` and then columns to
    ``sqrt(m)``; every iterate is ``X / sqrt(q s^T)`` for positive ``q``, ``s``. Stateless."""

    hyperparameters = {"sinkhorn_iters": 5}
    domains = {"sinkhorn_iters": integer(1)}
    def __call__(self, update, grad, state, group, step):
        return sinkhorn_normalise(update, int(group["sinkhorn_iters"]))


@singledispatch
def preconditioner_for(structure: Structure) -> Preconditioner:
    """The online preconditioner that tracks ``structure`` (dispatch on its type)."""
    if type(structure).carried_shapes is not Structure.carried_shapes:
        return CarriedStatePreconditioner(structure)
    return StatisticPreconditioner(structure)


@preconditioner_for.register
def _(structure: Kronecker) -> Preconditioner:
    estimator = structure.resolved_estimator
    diagonal_sides = all(isinstance(side, (DiagonalFactor, Identity)) for side in (structure.rows, structure.cols))
    if estimator == "per_sample" and diagonal_sides:
        return RowColumnPreconditioner(structure)
    if estimator == "one_sample":
        return WhiteningPreconditioner(structure)
    if estimator == "sinkhorn":
        return SinkhornPreconditioner(structure)
    return StatisticPreconditioner(structure)
