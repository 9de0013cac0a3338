"""The contract of a Fisher structure.

A structure is a family of ``mn x mn`` matrices ``F~(theta)`` approximating the empirical Fisher
``F`` of one ``m x n`` weight. To declare a new one, subclass :class:`Structure` as a frozen
dataclass and implement the two *family* methods:

- ``parameter_spec(m, n)``: the free parameters, their shapes and constraints;
- ``dense(params, m, n)``: the member ``F~`` as a dense matrix (differentiable in ``params``).

That is enough for ``fimkit.solve`` (generic numerical Frobenius minimisation) and for
``fimkit.derive`` on small weights (the optimizer then tracks the dense Fisher). Built-in
structures, and user structures that want to scale, also override the *fast paths*:
closed forms (``fit_fim``), online statistics (``statistic_shapes``/``statistics``/``fit``) and
a matrix-free ``precondition``.

A structure whose member depends on state *carried between refits* (an eigenbasis, a tracked
subspace) declares it with the **carried-state hook**, and ``fimkit.derive`` then tracks it with
no optimizer code of its own (``CarriedStatePreconditioner``):

- ``carried_shapes(m, n)``: the carried tensors (``{}``, the default, for every other structure),
  started by ``initial_carried``;
- ``statistics(grad)``: what a refresh reads, averaged over steps (e.g. Gram matrices);
- ``refresh(stats, carried, grad, step)``: the new carried state, at the refresh steps only
  (``t == 1`` and every ``K`` steps);
- ``coordinates(grad, carried)``: the gradient in the carried state; the optimizer keeps ``d``,
  the EMA of their squares;
- ``fit(stats, m, n)``: the member from the statistics, the carried state and ``d``.

``statistic_shapes`` lists all of it (the statistics, the carried state and ``d``).
``EigenvalueCorrected`` (SOAP) is tracked this way; ``LowRankPlusDiagonal`` implements the same
hook and registers a tracker that keeps its statistics in its subspace (``fimkit.lowrank``).
Structures know nothing of torch.optim.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from ..fim import unvec, vec
from ..linalg import eigh_descending, inverse_power

Params = dict[str, Tensor]

# A user structure that relies on the dense fallbacks forms (mn)^2-sized matrices; beyond this
# many weight entries that stops being practical and we say so instead of running out of memory.
DENSE_FALLBACK_LIMIT = 4096

CONSTRAINTS = ("real", "positive", "symmetric", "orthogonal", "stiefel")


@dataclass(frozen=True)
class ParamSpec:
    """Shape and constraint of one parameter block of a structure.

    ``positive``: elementwise > 0 (the generic solver optimises its log); ``symmetric``: a square
    matrix equal to its transpose; ``orthogonal``: a square matrix with ``U^T U = I`` (optimised
    as the exponential of a skew-symmetric matrix); ``stiefel``: an ``m x r`` matrix (``r <= m``)
    with orthonormal columns (the first ``r`` columns of a rotated orthogonal completion of the
    initial point); ``real``: unconstrained.
    """

    shape: tuple[int, ...]
    constraint: str = "real"

    def __post_init__(self):
        if self.constraint not in CONSTRAINTS:
            raise ValueError(f"constraint must be one of {CONSTRAINTS}, got {self.constraint!r}")
        square = len(self.shape) == 2 and self.shape[0] == self.shape[1]
        if self.constraint in ("symmetric", "orthogonal") and not square:
            raise ValueError(f"a {self.constraint} parameter must be square, got shape {self.shape}")
        if self.constraint == "stiefel" and not (len(self.shape) == 2 and self.shape[0] >= self.shape[1]):
            raise ValueError(f"a stiefel parameter must be m x r with r <= m, got shape {self.shape}")


@dataclass(frozen=True)
class Structure:
    """Base class of every Fisher structure (see the module docstring for the contract)."""

    #: how ``fimkit.solve`` finds the Frobenius-optimal member: "closed form", "fixed point",
    #: or "generic" (numerical minimisation, the default for a new structure).
    solver: ClassVar[str] = "generic"
    #: whether the structure needs a 2-D weight (False: vectors are treated as 1 x n).
    matrix_only: ClassVar[bool] = True
    #: fields printed positionally by the built-in structures' compact ``repr``
    positional_fields: ClassVar[tuple[str, ...]] = ()

    def compact_repr(self, name: str | None = None, omit: tuple[str, ...] = ()) -> str:
        """The expression that builds this structure: its positional fields, then the fields that
        differ from their defaults (the built-in structures' ``repr``); ``name`` and ``omit`` for
        an alias that fixes some fields."""
        args = []
        for f in dataclasses.fields(self):
            if not f.init or f.name in omit:
                continue
            value = getattr(self, f.name)
            if f.name in self.positional_fields:
                args.append(repr(value))
            elif f.default is dataclasses.MISSING or value != f.default:
                args.append(f"{f.name}={value!r}")
        return f"{name or type(self).__name__}({', '.join(args)})"

    # ----------------------------------------------------------------- the family (required)
    def parameter_spec(self, m: int, n: int) -> dict[str, ParamSpec]:
        raise NotImplementedError(
            f"{type(self).__name__} must implement parameter_spec(m, n) to declare its parameters"
        )

    def dense(self, params: Params, m: int, n: int) -> Tensor:
        raise NotImplementedError(
            f"{type(self).__name__} must implement dense(params, m, n) returning F~ (mn x mn)"
        )

    # ------------------------------------------------------ objective pieces (matrix-free ok)
    def quadratic_form(self, params: Params, grads: Tensor) -> Tensor:
        """``vec(G_k)^T F~ vec(G_k)`` for a stack of samples (k, m, n) -> (k,)."""
        m, n = grads.shape[-2:]
        g = vec(grads)
        return ((g @ self.dense(params, m, n)) * g).sum(-1)

    def frobenius_sq(self, params: Params, m: int, n: int) -> Tensor:
        """``||F~||_F^2``."""
        return self.dense(params, m, n).square().sum()

    def initial_params(self, m: int, n: int, scale: float, dtype=torch.float64) -> Params:
        """A feasible starting point for the generic solver, sized like ``F`` (``scale``)."""
        spec = self.parameter_spec(m, n)
        positive_blocks = sum(s.constraint == "positive" for s in spec.values()) or 1
        params = {}
        for name, s in spec.items():
            if s.constraint == "symmetric":
                params[name] = torch.eye(s.shape[0], dtype=dtype) * scale
            elif s.constraint in ("orthogonal", "stiefel"):
                params[name] = torch.eye(s.shape[0], dtype=dtype)[:, : s.shape[1]]
            elif s.constraint == "positive":
                params[name] = torch.full(s.shape, scale ** (1.0 / positive_blocks), dtype=dtype)
            else:
                params[name] = torch.zeros(s.shape, dtype=dtype)
        return params

    # ------------------------------------------------------------ Frobenius-optimal member
    def fit_fim(self, fim: Tensor, m: int, n: int) -> Params | None:
        """Closed form (or fixed point) of ``argmin ||F - F~||_F`` from a dense ``F``.

        ``None`` (the default) means "no closed form": ``fimkit.solve`` then runs the generic
        numerical solver.
        """
        return None

    def parameters_view(self, params: Params, m: int, n: int) -> dict[str, Tensor]:
        """Extra named views of the parameters exposed on ``Approximation`` (e.g. ``.rows``)."""
        return {}

    # --------------------------------------------------------- what an optimizer tracks
    def statistic_shapes(self, m: int, n: int) -> dict[str, tuple[int, ...]]:
        """The gradient statistics (name -> shape) that an optimizer keeps for this structure."""
        _check_dense_fallback(self, m, n, "statistics")
        return {"fim": (m * n, m * n)}

    def reduces_by_partial_sums(self) -> bool:
        """Whether :meth:`statistics` and :meth:`fit` take ``reduce=`` (a
        :class:`fimkit.reductions.Reduction`) and reduce through it alone, with statistics per
        row, per column or per entry, and :meth:`precondition` is per entry given them: then an
        optimizer steps a block of rows of a sharded weight with this structure, completing the
        sums across ranks (``fimkit.optim.sharded``). False unless a structure says so."""
        return False

    def statistics(self, grad: Tensor) -> dict[str, Tensor]:
        """Per-step statistics of one gradient; the optimizer averages them (EMA)."""
        m, n = grad.shape[-2:]
        _check_dense_fallback(self, m, n, "statistics")
        g = vec(grad)
        return {"fim": torch.outer(g, g)}

    def fit(self, stats: dict[str, Tensor], m: int, n: int) -> Params:
        """The structured member from averaged statistics (default: solve on the dense Fisher)."""
        from ..solve import solve  # local import: solve depends on structures

        return solve(self, stats["fim"], (m, n)).params

    def precondition(self, params: Params, grad: Tensor, power: float = 0.5, eps: float = 0.0) -> Tensor:
        """``Mat((F~ + eps I)^{-power} vec(G))`` (pseudo-inverse where F~ is singular).

        The default forms ``F~`` densely (small weights only); structures override this with a
        matrix-free version.
        """
        m, n = grad.shape[-2:]
        _check_dense_fallback(self, m, n, "precondition")
        evals, evecs = eigh_descending(self.dense(params, m, n).to(grad.dtype))
        coeff = evecs.mT @ vec(grad).unsqueeze(-1)
        scaled = coeff * inverse_power(evals.clamp_min(0), power, eps).unsqueeze(-1)
        return unvec((evecs @ scaled).squeeze(-1), m, n)

    def statistic_degree(self, name: str) -> float:
        """How statistic ``name`` scales with the gradient: ``c^k`` for ``c G`` (default 2, a
        second moment). An optimizer keeps its state in a power-of-two unit of the gradient with
        it (``fimkit.optim.units``)."""
        return 2.0

    def parameter_degree(self, name: str) -> float | None:
        """How fitted parameter ``name`` scales with the gradient (``None``: not declared; a cached
        fit, ``precondition_frequency > 1``, is then not rescaled when the unit moves and is
        right again at its next refresh)."""
        return None

    def statistics_prior(self, m: int, n: int, dtype=torch.float32) -> dict[str, Tensor]:
        """Identity-like values of the statistics, to start accumulators at ``c * prior``
        (Shampoo's ``L = eps I``). Empty: start at zero."""
        return {}

    # ------------------------------------------- the carried-state hook (stateful structures)
    def carried_shapes(self, m: int, n: int) -> dict[str, tuple[int, ...]]:
        """State carried between refits (name -> shape), recomputed only by :meth:`refresh`;
        ``{}``: the member is a function of averaged statistics alone (the default)."""
        return {}

    def initial_carried(self, m: int, n: int, like: Tensor) -> Params:
        """The carried state before the first refresh (default: zeros, like ``like``)."""
        return {name: like.new_zeros(shape) for name, shape in self.carried_shapes(m, n).items()}

    def refresh(self, stats: dict[str, Tensor], carried: Params, grad: Tensor, step: int) -> Params:
        """The new carried state at refresh step ``step``, from the running ``statistics`` (this
        step's included), the current carried state and gradient. Only structures that declare
        :meth:`carried_shapes` implement it."""
        raise NotImplementedError(f"{type(self).__name__} declares carried state but no refresh()")

    def coordinates(self, grad: Tensor, carried: Params) -> Tensor:
        """The gradient expressed in the carried state (e.g. ``U^T G V``); the optimizer keeps the
        EMA of its square as the statistic ``d``. Only structures with carried state implement it."""
        raise NotImplementedError(f"{type(self).__name__} declares carried state but no coordinates()")

    def state_numel(self, m: int, n: int) -> int:
        """Elements of optimizer state this structure's statistics need for an m x n weight."""
        return sum(math.prod(shape) for shape in self.statistic_shapes(m, n).values())


def _check_dense_fallback(structure: Structure, m: int, n: int, what: str) -> None:
    if m * n > DENSE_FALLBACK_LIMIT:
        raise ValueError(
            f"{structure!r} has no matrix-free {what} and a {m} x {n} weight would need a dense "
            f"{m * n} x {m * n} Fisher (limit {DENSE_FALLBACK_LIMIT} weight entries). Override "
            f"statistics()/fit()/precondition() on {type(structure).__name__}, or route this "
            f"parameter to another optimizer."
        )
