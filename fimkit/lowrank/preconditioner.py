"""How ``fimkit.derive`` tracks ``LowRankPlusDiagonal``, per its ``estimator``.

``"subspace"`` ([P] Alg 4): the blocks of :func:`~fimkit.lowrank.blocks.subspace_tracking_blocks`
(Alice, GaLore, Fira: Adam's moments in the subspace, the compensation from the gradient).

``"ema"``: :class:`LowRankPlusDiagonalPreconditioner`. The subspace is maintained by
:class:`~fimkit.lowrank.blocks.SubspaceProjection` (the structure's refresh: tracking and
switching, same hyperparameters as Alice); the structure's parameters are EMAs (``betas[1]``)
of their Thm 5.1 closed forms, ``D = E[sigma^2]`` and ``o = E[||r_j||^2] / (m - r)``, and the
direction (e.g. derive's momentum, in the full space) is preconditioned by the structure's
matrix-free ``F~^{-power}``: the plain square-root natural gradient of the structure.
"""

from __future__ import annotations

from ..optim.blocks import tracking_blocks
from ..optim.chain import Group
from ..optim.domains import BETAS, BOOLEAN, NON_NEGATIVE, POSITIVE
from ..optim.preconditioners import Preconditioner, preconditioner_for
from ..structures.lowrank import LowRankPlusDiagonal
from .blocks import SECOND_MOMENTS, SubspaceProjection, effective_rank, subspace_tracking_blocks
from .compensation import residual_energy
from .switching import is_orthonormal_rule


class LowRankPlusDiagonalPreconditioner(Preconditioner):
    def __init__(self, structure: LowRankPlusDiagonal):
        self.structure = structure
        self.subspace = SubspaceProjection(structure)
        self.hyperparameters = {
            **self.subspace.hyperparameters, "betas": (0.9, 0.999), "eps": 1e-8, "power": 0.5, "bias_correction": True,
        }
        self.domains = {**self.subspace.domains, "betas": BETAS, "eps": NON_NEGATIVE, "power": POSITIVE,
                        "bias_correction": BOOLEAN}

    @property
    def refresh_offset(self) -> int:
        return self.subspace.refresh_offset

    @refresh_offset.setter
    def refresh_offset(self, offset: int) -> None:
        self.subspace.refresh_offset = offset

    def validate(self, group: Group) -> None:
        self.subspace.validate(group)

    def state_degrees(self, group, degree):
        return {**self.subspace.state_degrees(group, 1.0), SECOND_MOMENTS[0]: 2.0, "complement_energy": 2.0}

    def output_degree(self, group, degree):
        return degree - 2.0 * group["power"]

    def scale_equivariant(self, group):
        return group["eps"] == 0

    def init_state(self, m, n, like, group):
        state = self.subspace.init_state(m, n, like, group)
        r = effective_rank(group["rank"], m)
        state[SECOND_MOMENTS[0]] = like.new_zeros(r, n)
        if r < m:
            state["complement_energy"] = like.new_zeros(n)
        return state

    def __call__(self, update, grad, state, group, step):
        sigma = self.subspace(grad, grad, None, state, group, step).coords
        basis, beta2 = state["basis"], group["betas"][1]
        correction = 1.0 - beta2**step if group["bias_correction"] else 1.0
        d = state[SECOND_MOMENTS[0]].mul_(beta2).addcmul_(sigma, sigma, value=1.0 - beta2)
        params = {"basis": basis, "d": d / correction}
        if "complement_energy" in state:
            orthonormal = is_orthonormal_rule(group["switching"], group["switch_mode"], group["projection"])
            energy = residual_energy(grad, sigma, None if orthonormal else basis)
            ema = state["complement_energy"].lerp_(energy, 1.0 - beta2)
            params["compensation"] = ema / (correction * (basis.shape[0] - basis.shape[1]))
        return self.structure.precondition(params, update, group["power"], group["eps"])


@preconditioner_for.register
def _(structure: LowRankPlusDiagonal) -> Preconditioner:
    return LowRankPlusDiagonalPreconditioner(structure)


@tracking_blocks.register
def _(structure: LowRankPlusDiagonal, refresh_offset: int = 0):
    if structure.estimator == "subspace":
        return subspace_tracking_blocks(structure, refresh_offset)
    return tracking_blocks.dispatch(object)(structure, refresh_offset)
