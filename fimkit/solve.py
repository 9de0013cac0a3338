"""``fimkit.solve``: the Frobenius-optimal member of a structure for a given Fisher."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from .fim import check_fim, check_psd, check_samples, empirical_fim
from .generic_solver import generic_fit
from .structures.base import Params, Structure


@dataclass
class Approximation:
    """The solution of ``min ||F - F~||_F`` over a structure.

    ``matrix`` is the dense ``F~`` (mn x mn), ``error`` is ``||F - F~||_F``, ``params`` the
    structure's own parameters, which are also attributes (``approx.rows``, ``approx.d``, ...),
    together with the structure's extra views (e.g. ``rows_matrix``). ``solver`` says how the
    solution was found: "closed form", "fixed point" or "generic".
    """

    structure: Structure
    shape: tuple[int, int]
    params: Params
    matrix: Tensor
    error: Tensor
    solver: str
    views: dict[str, Tensor] = field(default_factory=dict)
    fim_norm: float = 1.0

    def __getattr__(self, name: str):
        if name.startswith("__") or name in ("params", "views", "structure"):
            raise AttributeError(name)
        for source in (self.params, self.views):
            if name in source:
                return source[name]
        raise AttributeError(
            f"{type(self.structure).__name__} approximation has no {name!r}; "
            f"parameters: {sorted(self.params)}, views: {sorted(self.views)}"
        )

    @property
    def relative_error(self) -> Tensor:
        """``||F - F~|| / ||F||``."""
        return self.error / max(self.fim_norm, 1e-300)


class SolverError(ArithmeticError):
    """A solver that did not converge, or returned a non-finite member."""


def check_dense_shape(structure: Structure, params: Params, m: int, n: int) -> Tensor:
    """``structure.dense(params, m, n)``, refused unless it is ``mn x mn`` (a user structure whose
    ``dense`` returns a vector or a 1 x 1 would otherwise broadcast into a "solution")."""
    matrix = structure.dense(params, m, n)
    if not isinstance(matrix, Tensor) or tuple(matrix.shape) != (m * n, m * n):
        shape = tuple(matrix.shape) if isinstance(matrix, Tensor) else type(matrix).__name__
        raise ValueError(f"{type(structure).__name__}.dense(params, {m}, {n}) must return the {m * n} x {m * n} "
                         f"member F~ of a {m} x {n} weight; it returned {shape}")
    return matrix


def solve(structure: Structure, fim: Tensor, shape: tuple[int, int] | None = None, *,
          method: str | None = None, restarts: int = 2, seed: int = 0) -> Approximation:
    """The member of ``structure`` closest to the Fisher in Frobenius norm.

    ``fim`` is either a dense Fisher (mn x mn, then ``shape=(m, n)`` is required) or a stack of
    gradient samples (k, m, n). ``method``: ``None`` uses the structure's own solver (closed form
    or fixed point where one is known, otherwise the generic numerical solver), ``"generic"``
    forces the numerical solver (used to cross-check closed forms).
    """
    if not isinstance(structure, Structure):
        raise TypeError(f"solve() needs a fimkit Structure, got {structure!r}")
    samples = None
    if not isinstance(fim, Tensor):
        raise TypeError(f"solve() takes a torch.Tensor (a dense Fisher or gradient samples), got {type(fim).__name__}")
    if fim.ndim not in (2, 3):
        raise ValueError(
            f"solve() takes a dense Fisher (mn, mn) with shape=(m, n), or gradient samples of shape "
            f"(k, m, n); got a tensor of shape {tuple(fim.shape)}"
        )
    if fim.ndim == 3:
        samples = check_samples(fim)
        inferred = tuple(samples.shape[-2:])
        if shape is not None and tuple(shape) != inferred:
            raise ValueError(f"shape={tuple(shape)} disagrees with the samples' shape {inferred}")
        shape = inferred
        fim = empirical_fim(samples)
    elif shape is None:
        raise ValueError("solve() with a dense (mn x mn) Fisher needs shape=(m, n)")
    m, n = shape
    fim = check_fim(fim, (m, n))
    if samples is None:
        check_psd(fim)
    if method not in (None, "generic"):
        raise ValueError(f"method must be None (the structure's own solver) or 'generic', got {method!r}")

    params = None if method == "generic" else structure.fit_fim(fim, m, n)
    solver = structure.solver
    if params is None:
        solver = "generic"
        check_dense_shape(structure, structure.initial_params(m, n, 1.0), m, n)
        params = generic_fit(structure, (m, n), fim=fim if samples is None else None,
                             grads=samples, restarts=restarts, seed=seed)
        params = {k: v.to(fim.dtype) for k, v in params.items()}
    matrix = check_dense_shape(structure, params, m, n)
    if not bool(torch.isfinite(matrix).all()):
        raise SolverError(f"{structure!r}: the {solver} solution is not finite")
    return Approximation(
        structure=structure, shape=(m, n), params=params, matrix=matrix,
        error=torch.linalg.matrix_norm(fim - matrix), solver=solver,
        views=structure.parameters_view(params, m, n),
        fim_norm=float(torch.linalg.matrix_norm(fim)),
    )
