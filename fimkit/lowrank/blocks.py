"""The low-rank pieces as chain blocks (``fimkit.optim.chain``): Alice, GaLore, Fira and APOLLO
are short recipes over them.

A low-rank chain runs in the subspace between its first and its lifting block: the value passed
along is a :class:`Projected` pair ``(sigma, direction)`` (``r x n`` each), so that ``sigma = U^T G``
is computed once per step and every later block can use it:

    SubspaceProjection  -> Projected(sigma, sigma)       basis refresh every K steps, tracking
    ProjectedAdam       -> Projected(sigma, omega)       Adam moments of sigma
    CompensatedBackProjection -> alpha U omega + compensation    (Alice, GaLore, Fira)
    ChannelScaling      -> G * (||omega_j|| / ||sigma_j||)      (APOLLO)

followed by ordinary blocks (limiter, scale, bias correction, learning rate). Each block owns
state declared in ``init_state`` (so memory accounting sees all of it); the basis lives in
``state["basis"]`` and later blocks read it from there.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import NamedTuple

import torch
from torch import Tensor

from ..linalg import keep_on_failure, limiter_from_norm
from ..optim import traced
from ..optim.chain import Block, Group, ScalarBlock, State, is_refresh_step
from ..optim.domains import BETAS, BOOLEAN, DECAY, NON_NEGATIVE, choice, integer, optional, real
from ..structures.lowrank import PROJECTIONS, SWITCH_MODES
from ..structures.lowrank import COMPENSATION_MODES, TRACKING_OPTIONS, LowRankPlusDiagonal
from .compensation import (
    back_project, column_norm_ratio, optimal_column_scale, residual_energy, scaled_residual_norm, tensor_norm_ratio,
)
from .moments import bias_correction_factor, projected_adam_direction
from .switching import is_orthonormal_rule
from .tracking import (
    change_of_basis, rotate_first_moment, rotate_projected_gram, rotate_second_moment, track_projected_gram,
)

#: the subspace a bare ``SubspaceProjection()`` tracks (its hyperparameters' defaults)
DEFAULT_SUBSPACE = LowRankPlusDiagonal(rank=128)
#: projected-space moments that ``rotate_moments_on_switch`` re-expresses in the new basis
FIRST_MOMENTS = ("projected_exp_avg",)
SECOND_MOMENTS = ("projected_exp_avg_sq",)


class Projected(NamedTuple):
    """The running value of a low-rank chain: ``sigma = U^T G`` and the current direction (``r x n``)."""

    coords: Tensor
    direction: Tensor


def effective_rank(rank: int, m: int, n: int | None = None, warn: bool = False) -> int:
    """``min(rank, m)``; warns when ``rank >= m`` (the complement is then empty)."""
    if warn and rank >= m:
        shape = f"{m} x {n}" if n is not None else f"{m}-row"
        warnings.warn(
            f"low-rank optimizer: rank {rank} >= {m}, the short side of a {shape} weight; using rank "
            f"{m}. The complement is empty, so the compensation is 0 and leading = min(leading, {m}).",
            stacklevel=2,
        )
    return min(rank, m)


class SubspaceProjection(Block):
    """Maintains the basis ``U`` (``m x r``) and projects: ``X -> Projected(U^T X, U^T X)``.

    The basis is ``LowRankPlusDiagonal``'s carried state: at the refresh steps (``t == 1`` and
    every ``update_interval`` = K steps, :func:`~fimkit.optim.chain.is_refresh_step`) it is
    replaced by the structure's ``refresh`` ([P] Alg 4's switch, or the plain top-``r`` basis of
    ``projection``), with the structure's options read from the param group (their defaults are
    the fields of ``structure``). ``tracking_beta`` (b3) > 0 keeps the tracked ``r x r`` statistic
    ``Qt``; b3 = 0 stores none (Alice-0). Must be the first block of a chain.
    """

    hyperparameters = {
        "rank": 128, "leading": 40, "update_interval": 200, "tracking_beta": 0.999,
        "switching": True, "switch_mode": "complement", "projection": "eigen", "seed": None,
        "rotate_moments_on_switch": False, "reproject_Q_on_switch": False,
    }
    domains = {
        "rank": integer(1), "leading": integer(0), "update_interval": integer(1), "tracking_beta": DECAY,
        "switching": BOOLEAN, "switch_mode": choice(*SWITCH_MODES), "projection": choice(*PROJECTIONS),
        "seed": optional(integer(None)), "rotate_moments_on_switch": BOOLEAN, "reproject_Q_on_switch": BOOLEAN,
    }
    needs_step = True

    def __init__(self, structure: LowRankPlusDiagonal = DEFAULT_SUBSPACE, refresh_offset: int = 0):
        self.structure = structure
        self.refresh_offset = refresh_offset
        self.trace_handle = traced.register(self)
        options = {k: v for k, v in structure.tracking_options().items() if k in self.hyperparameters}
        self.hyperparameters = {**self.hyperparameters, **options}

    def __repr__(self) -> str:
        args = [repr(self.structure)] if self.structure != DEFAULT_SUBSPACE else []
        args += [f"refresh_offset={self.refresh_offset}"] if self.refresh_offset else []
        return f"SubspaceProjection({', '.join(args)})"

    def structure_for(self, group: Group) -> LowRankPlusDiagonal:
        """The structure with the group's options (validated by the structure)."""
        return replace(self.structure, **{k: group[k] for k in TRACKING_OPTIONS if k in group and k != "compensation"})

    def validate(self, group: Group) -> None:
        self.structure_for(group)  # the combinations of options the structure refuses

    def init_state(self, m: int, n: int, like: Tensor, group: Group) -> State:
        r = effective_rank(group["rank"], m, n, warn=True)
        state = {"basis": like.new_zeros(m, r)}
        if group["tracking_beta"] > 0:
            state["projected_gram"] = like.new_zeros(r, r)
        if group["switching"] or group["projection"] == "random":
            # [DECISION] one int64 seed per matrix; None draws it from torch's global generator.
            seed = group["seed"]
            if seed is None:
                seed = int(torch.randint(0, 2**62, (), dtype=torch.int64))
            state["switch_seed"] = torch.tensor(seed, dtype=torch.int64)
        return state

    def state_degrees(self, group, degree):
        return {"basis": 0.0, "projected_gram": 2.0 * degree}

    def scale_equivariant(self, group):
        return True

    def __call__(self, update, grad, param, state, group, step):
        if isinstance(step, Tensor):  # the traceable step: decided and run on the host, when due
            traced.refresh_if_due(self, update, state, group)
        else:
            self.refresh_if_due(update, state, group, step)
        sigma = self.structure.coordinates(update, state)
        if "projected_gram" in state:
            track_projected_gram(state["projected_gram"], sigma, group["tracking_beta"])
        return Projected(sigma, sigma)

    def refresh_if_due(self, update: Tensor, state: State, group: Group, step: int) -> None:
        if is_refresh_step(step, group["update_interval"], self.refresh_offset):
            self.refresh_basis(update, state, group, step)

    def refresh_basis(self, grad: Tensor, state: State, group: Group, step: int) -> None:
        """The basis update of step ``step`` (the only place with eigh/QR/SVD)."""
        old = state["basis"]
        stats = {"projected_gram": state["projected_gram"]} if "projected_gram" in state else {}
        carried = {key: state[key] for key in ("basis", "switch_seed") if key in state}
        new = keep_on_failure(lambda: self.structure_for(group).refresh(stats, carried, grad, step)["basis"],
                              old, f"the subspace refresh of step {step}")
        if step > 1 and (group["rotate_moments_on_switch"] or group["reproject_Q_on_switch"]):
            self.rotate_state(change_of_basis(new, old), state, group)
        old.copy_(new)

    @staticmethod
    def rotate_state(rotation: Tensor, state: State, group: Group) -> None:
        """Re-express the projected statistics in the new basis ([DECISION] options, off by default)."""
        if group["reproject_Q_on_switch"] and "projected_gram" in state:
            state["projected_gram"].copy_(rotate_projected_gram(rotation, state["projected_gram"]))
        if group["rotate_moments_on_switch"]:
            for key in FIRST_MOMENTS:
                if key in state:
                    state[key].copy_(rotate_first_moment(rotation, state[key]))
            for key in SECOND_MOMENTS:
                if key in state:
                    state[key].copy_(rotate_second_moment(rotation, state[key]))


class ProjectedAdam(Block):
    """Adam's moments of ``sigma`` (``r x n`` each): ``Projected(sigma, m / (sqrt(v) + eps))``."""

    hyperparameters = {"betas": (0.9, 0.9), "eps": 1e-8}
    domains = {"betas": BETAS, "eps": NON_NEGATIVE}

    def init_state(self, m, n, like, group):
        r = effective_rank(group["rank"], m)
        return {key: like.new_zeros(r, n) for key in FIRST_MOMENTS + SECOND_MOMENTS}

    def state_degrees(self, group, degree):
        return {**dict.fromkeys(FIRST_MOMENTS, degree), **dict.fromkeys(SECOND_MOMENTS, 2.0 * degree)}

    def output_degree(self, group, degree):
        return 0.0

    def scale_equivariant(self, group):
        return group["eps"] == 0

    def __call__(self, update, grad, param, state, group, step):
        direction = projected_adam_direction(
            state[FIRST_MOMENTS[0]], state[SECOND_MOMENTS[0]], update.direction, group["betas"], group["eps"])
        return Projected(update.coords, direction)


class CompensatedBackProjection(Block):
    """``alpha U omega + w C`` with ``C = (G - U U^T G) diag(c)`` the ``compensation`` mode's term.

    ``w = alpha * alpha_c`` ([P] Alg 4: ``alpha (U omega + alpha_c C)``), or ``w = alpha_c`` when
    ``compensation_scaled_by_alpha=False`` (Fira adds its term unscaled). The ``optimal`` and
    ``fira`` terms pass through the norm-growth limiter (``gamma``; first use when ``phi == 0``);
    ``fira_plus`` is rescaled to ``||U omega||`` instead. ``p`` is an EMA with ``betas[0]`` (b1).
    """

    hyperparameters = {"alpha": 0.3, "alpha_c": 0.4, "compensation": "optimal", "gamma": 1.01,
                       "compensation_eps": 1e-8}
    domains = {"alpha": NON_NEGATIVE, "alpha_c": NON_NEGATIVE, "compensation": choice(*COMPENSATION_MODES),
               "gamma": real(1.0), "compensation_eps": NON_NEGATIVE}

    def __init__(self, compensation_scaled_by_alpha: bool = True, compensation: str = "optimal"):
        self.compensation_scaled_by_alpha = compensation_scaled_by_alpha
        self.hyperparameters = {**self.hyperparameters, "compensation": compensation}

    def __repr__(self) -> str:
        return (f"CompensatedBackProjection(compensation_scaled_by_alpha={self.compensation_scaled_by_alpha}, "
                f"compensation={self.hyperparameters['compensation']!r})")

    def state_degrees(self, group, degree):
        # p is the complement energy of the gradient; phi the norm of the scale-free C
        return {"compensation_p": 2.0, "compensation_phi": 0.0}

    def output_degree(self, group, degree):
        return 0.0

    def scale_equivariant(self, group):
        return group["compensation"] == "none" or (group["compensation"] == "optimal"
                                                   and group["compensation_eps"] == 0)

    def init_state(self, m, n, like, group):
        mode, state = group["compensation"], {}
        if mode == "optimal":
            state["compensation_p"] = like.new_zeros(n)
        if mode in ("optimal", "fira"):
            state["compensation_phi"] = like.new_zeros(())
        return state

    def __call__(self, update, grad, param, state, group, step):
        basis, (sigma, direction) = state["basis"], update
        m, r = basis.shape
        alpha, mode = group["alpha"], group["compensation"]
        if mode == "none" or r == m:
            return basis @ (direction * alpha)
        orthonormal = is_orthonormal_rule(group["switching"], group["switch_mode"], group["projection"])
        # eager: G^2 goes into m x n memory that the back-projection then writes its result into
        # (compiled: the compiler plans the memory, and out= would break its graph)
        workspace = torch.empty_like(grad) if orthonormal and not torch.compiler.is_compiling() else None
        energy = residual_energy(grad, sigma, None if orthonormal else basis, workspace)
        if mode == "optimal":  # Alg 3
            p = state["compensation_p"].lerp_(energy, 1.0 - group["betas"][0])
            scale = optimal_column_scale(p, m - r, group["compensation_eps"])
        else:
            scale = column_norm_ratio(direction, sigma)
        norm = scaled_residual_norm(energy, scale)
        if mode == "fira_plus":
            target = torch.linalg.vector_norm(direction if orthonormal else basis @ direction)
            factor = torch.where(norm > 0, target / norm.clamp_min(torch.finfo(norm.dtype).tiny), 0.0)
        else:
            phi = state["compensation_phi"]
            factor, new_phi = limiter_from_norm(norm, phi, group["gamma"], first=phi == 0)
            phi.copy_(new_phi)
        weight = group["alpha_c"] * (alpha if self.compensation_scaled_by_alpha else 1.0)
        return back_project(basis, direction * alpha, grad, sigma, scale * (factor * weight), workspace)


class ChannelScaling(Block):
    """APOLLO: ``G diag(s)`` with ``s_j = ||omega_j|| / ||sigma_j||`` (``scale_type="channel"``)
    or one ``s = ||omega|| / ||sigma||`` (``"tensor"``, APOLLO-Mini)."""

    hyperparameters = {"scale_type": "channel"}
    domains = {"scale_type": choice("channel", "tensor")}

    def output_degree(self, group, degree):
        return 0.0  # G times a ratio of a scale-free direction to sigma

    def __call__(self, update, grad, param, state, group, step):
        ratio = column_norm_ratio if group["scale_type"] == "channel" else tensor_norm_ratio
        return grad * ratio(update.direction, update.coords)


class BiasCorrection(ScalarBlock):
    """Adam's bias correction as a step-size factor ``sqrt(1 - b2^t) / (1 - b1^t)`` when
    ``bias_correction`` (official GaLore/Fira/APOLLO place it after their scalings)."""

    hyperparameters = {"bias_correction": True}
    domains = {"bias_correction": BOOLEAN}
    needs_step = True

    def factor(self, update, state, group, step):
        return bias_correction_factor(group["betas"], step) if group["bias_correction"] else 1.0


def subspace_tracking_blocks(structure: LowRankPlusDiagonal, refresh_offset: int = 0) -> tuple[Block, ...]:
    """``LowRankPlusDiagonal(estimator="subspace")`` online ([P] Alg 4): project on the tracked
    subspace, Adam's moments there, back-project with the structure's compensation."""
    return (SubspaceProjection(structure, refresh_offset), ProjectedAdam(),
            CompensatedBackProjection(structure.compensation != "fira", structure.compensation))
