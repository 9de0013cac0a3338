"""How an optimizer tracks a structure online: the *where the statistics live* layer.

A preconditioner owns the statistics of one parameter and maps a direction ``X`` to
``Mat(F~^{-power} vec(X))``. ``preconditioner_for(structure)`` picks one:

- :class:`StatisticPreconditioner` (any structure, including a user's): EMA (or running sum) of
  ``structure.statistics(G)``, then ``structure.fit`` and ``structure.precondition``. Adam,
  Shampoo, Adafactor and RACS are this one with different structures and estimators.
- :class:`EigenbasisPreconditioner` (``EigenvalueCorrected``): its eigenvalues live in a basis
  refreshed every ``precondition_frequency`` steps, so the statistics are not a plain average.

New stateful structures register theirs with ``preconditioner_for.register``.
"""

from __future__ import annotations

from functools import singledispatch
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..structures.base import Structure
from ..structures.eigen import EigenvalueCorrected
from .chain import Group, State, check_betas


class Preconditioner:
    hyperparameters: ClassVar[dict[str, Any]] = {}

    def validate(self, group: Group) -> None:
        pass

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
    ``precondition_frequency`` refits every K steps and reuses the fitted member in between.
    """

    hyperparameters = {
        "betas": (0.9, 0.999), "eps": 1e-8, "power": 0.5, "bias_correction": True,
        "precondition_frequency": 1, "accumulate": False, "stat_init": 0.0, "beta2_decay": None,
    }

    def __init__(self, structure: Structure):
        self.structure = structure

    def validate(self, group: Group) -> None:
        check_betas(group)
        if not group["eps"] >= 0:
            raise ValueError(f"eps must be >= 0, got {group['eps']}")
        if not group["power"] > 0:
            raise ValueError(f"power must be > 0, got {group['power']}")
        if int(group["precondition_frequency"]) < 1:
            raise ValueError(f"precondition_frequency must be >= 1, got {group['precondition_frequency']}")

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
        stats = {}
        for name, sample in self.structure.statistics(grad).items():
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
            params = self.structure.fit(stats, m, n)
        else:
            if (step - 1) % frequency == 0:
                for key, value in self.structure.fit(stats, m, n).items():
                    state[f"fit_{key}"].copy_(value)
            params = {k[len("fit_"):]: v for k, v in state.items() if k.startswith("fit_")}
        return self.structure.precondition(params, update, group["power"], group["eps"])


class EigenbasisPreconditioner(Preconditioner):
    """[P] Alg 6 (SOAP) and Alg 7 (Eigen-Adam) for ``EigenvalueCorrected``.

    Gram matrices of the rotated sides are EMAs with ``shampoo_beta`` (the paper's b3); their
    eigenvectors are recomputed at step 1 and every ``precondition_frequency`` (K) steps; the
    eigenvalues ``v`` are an EMA (b2) of the squared gradient in the current basis. The
    direction (the momentum, kept in the original space) is rotated in, divided by
    ``sqrt(v) + eps`` and rotated back.
    """

    hyperparameters = {
        "betas": (0.95, 0.95), "eps": 1e-8, "shampoo_beta": 0.95, "precondition_frequency": 10,
        "bias_correction": True,
    }

    def __init__(self, structure: EigenvalueCorrected):
        self.structure = structure

    def validate(self, group: Group) -> None:
        check_betas(group)
        if not 0.0 <= group["shampoo_beta"] < 1.0:
            raise ValueError(f"shampoo_beta must be in [0, 1), got {group['shampoo_beta']}")
        if int(group["precondition_frequency"]) < 1:
            raise ValueError(f"precondition_frequency must be >= 1, got {group['precondition_frequency']}")

    def init_state(self, m, n, like, group):
        shapes = self.structure.statistic_shapes(m, n)
        state = {f"fisher_{k}": like.new_zeros(s) for k, s in shapes.items()}
        for key in state:
            if key.endswith("_basis"):
                state[key] = torch.eye(state[key].shape[0], dtype=like.dtype, device=like.device)
        return state

    def __call__(self, update, grad, state, group, step):
        structure = self.structure
        grams = {}
        for name, sample in structure.gram_statistics(grad).items():
            state[f"fisher_{name}"].lerp_(sample, 1 - group["shampoo_beta"])
            grams[name] = state[f"fisher_{name}"]
        if step == 1 or step % int(group["precondition_frequency"]) == 0:
            for name, basis in structure.bases_from_grams(grams).items():
                state[f"fisher_{name}"].copy_(basis)
        bases = {k[len("fisher_"):]: v for k, v in state.items() if k.endswith("_basis")}

        rotated = structure.rotate(grad, bases)
        d = state["fisher_d"]
        d.mul_(group["betas"][1]).addcmul_(rotated, rotated, value=1 - group["betas"][1])
        if group["bias_correction"]:
            d = d / (1 - group["betas"][1] ** step)
        return structure.precondition({"d": d, **bases}, update, 0.5, group["eps"])


@singledispatch
def preconditioner_for(structure: Structure) -> Preconditioner:
    """The online preconditioner that tracks ``structure`` (dispatch on its type)."""
    return StatisticPreconditioner(structure)


@preconditioner_for.register
def _(structure: EigenvalueCorrected) -> Preconditioner:
    return EigenbasisPreconditioner(structure)
