"""Numeric side of every derivation: the symbolic closed form against fimkit, on random instances.

Each derivation evaluates its symbolic solution on random Fishers (``lambdify``) and compares the
resulting ``F~`` with what fimkit computes: ``fimkit.solve`` (the structure's ``fit_fim``), the
generic numerical solver (``fimkit.solve(..., method="generic")``: is the closed form at least as
good as a direct minimisation?), the online path (``statistics`` -> ``fit``) and ``precondition``.
Oracles here are written from the equations (dense ``F~``, ``eigh``), never with fimkit's helpers.
Any disagreement raises :class:`~derivations.symbolic.DerivationMismatch`.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp
import torch
from torch import Tensor

import fimkit

from .symbolic import DerivationMismatch

#: weight shapes of the random instances (small: the whole suite runs in seconds)
NUMERIC_SHAPES = ((2, 3), (3, 2), (3, 4))
RTOL = 1e-7


@dataclass(frozen=True)
class CheckResult:
    """One verified claim: ``scope`` is "general", "fixed sizes", "numeric" or "fimkit"."""

    name: str
    scope: str
    status: str = "ok"  # or "skipped"
    detail: str = ""


def ok(name: str, scope: str, detail: str = "") -> CheckResult:
    return CheckResult(name, scope, "ok", detail)


def skipped(name: str, scope: str, why: str) -> CheckResult:
    return CheckResult(name, scope, "skipped", why)


# ------------------------------------------------------------------------------ instances
def gradient_samples(m: int, n: int, k: int = 6, seed: int = 0) -> Tensor:
    """float64 samples (k, m, n) with distinct row and column scales and a shared mean, so that
    the structures differ and ``F`` is far from diagonal (algorithms.md §5)."""
    gen = torch.Generator().manual_seed(seed)
    rows = torch.linspace(0.5, 2.0, m, dtype=torch.float64)
    cols = torch.linspace(0.3, 3.0, n, dtype=torch.float64)
    base = torch.randn(k, m, n, generator=gen, dtype=torch.float64)
    shared = torch.randn(m, n, generator=gen, dtype=torch.float64)
    return (base + 0.7 * shared) * rows[:, None] * cols[None, :]


def instances(shapes=NUMERIC_SHAPES, k: int = 6, seed: int = 0):
    """``(m, n, samples, F)`` for each shape, ``F = mean vec(G) vec(G)^T`` (row-major)."""
    for index, (m, n) in enumerate(shapes):
        samples = gradient_samples(m, n, k, seed + index)
        g = samples.reshape(k, m * n)
        yield m, n, samples, g.T @ g / k


def moments(fim: Tensor, m: int, n: int) -> dict[str, Tensor]:
    """The Kronecker moments of a dense Fisher, by index bookkeeping on ``F[(i,j),(k,l)]``."""
    f4 = fim.reshape(m, n, m, n)
    return {
        "row_gram": torch.einsum("ijkj->ik", f4),      # E[G G^T]
        "col_gram": torch.einsum("ijil->jl", f4),      # E[G^T G]
        "elementwise": torch.einsum("ijij->ij", f4),   # E[G * G]
    }


def evaluate(expr, values: dict[str, Tensor], sizes: dict | None = None) -> Tensor:
    """A size-generic symbolic result (``MatrixSymbol`` expression) evaluated on numbers:
    ``values`` maps each matrix symbol's name to a tensor, ``sizes`` the size symbols to ints."""
    from . import symbolic as S

    sizes = {S.m: sizes.get("m"), S.n: sizes.get("n"), S.r: sizes.get("r")} if sizes else {}
    concrete = expr.xreplace({k: v for k, v in sizes.items() if v is not None})
    replace = {}
    for sym in concrete.atoms(sp.MatrixSymbol):
        value = values[sym.name].reshape(int(sym.shape[0]), int(sym.shape[1]))
        replace[sym] = sp.ImmutableMatrix(value.tolist())
    result = concrete.xreplace(replace).doit()
    return torch.tensor(sp.Matrix(result).evalf().tolist(), dtype=torch.float64)


# ----------------------------------------------------------------------------- comparisons
def relative_gap(got: Tensor, expected: Tensor) -> float:
    got, expected = torch.as_tensor(got, dtype=torch.float64), torch.as_tensor(expected, dtype=torch.float64)
    return float((got - expected).norm() / expected.norm().clamp_min(1e-300))


def expect_close(what: str, got: Tensor, expected: Tensor, rtol: float = RTOL) -> float:
    if tuple(torch.as_tensor(got).shape) != tuple(torch.as_tensor(expected).shape):
        raise DerivationMismatch(f"{what}: shape {tuple(got.shape)} != derived {tuple(expected.shape)}")
    gap = relative_gap(got, expected)
    if not gap <= rtol:
        raise DerivationMismatch(f"{what}: fimkit and the derivation differ (relative gap {gap:.3g} > {rtol:g})")
    return gap


def inverse_power_apply(ftilde: Tensor, grad: Tensor, power: float = 0.5) -> Tensor:
    """``Mat(F~^{-power} vec(G))`` from the dense ``F~`` (pseudo-inverse on its null space)."""
    m, n = grad.shape
    evals, evecs = torch.linalg.eigh(0.5 * (ftilde + ftilde.T))
    keep = evals > 1e-12 * evals.abs().max()
    scale = torch.where(keep, evals.clamp_min(1e-300).pow(-power), torch.zeros_like(evals))
    return (evecs @ (scale * (evecs.T @ grad.reshape(-1)))).reshape(m, n)


def frobenius_error(fim: Tensor, ftilde: Tensor) -> float:
    return float((fim - ftilde).norm())


def check_solve(structure, fim: Tensor, m: int, n: int, derived: Tensor, what: str,
                rtol: float = RTOL) -> float:
    """``fimkit.solve(structure, F)`` (the library's closed form) equals the derived ``F~``."""
    approx = fimkit.solve(structure, fim, (m, n))
    return expect_close(f"{what}: fimkit.solve({structure!r}) at {m}x{n}", approx.matrix, derived, rtol)


def check_beats_generic(structure, fim: Tensor, m: int, n: int, derived: Tensor, what: str,
                        fixed: dict | None = None, rtol: float = 1e-6) -> float:
    """No numerical minimisation does better than the derived ``F~``; returns error ratio."""
    params = fimkit.generic_solver.generic_fit(structure, (m, n), fim=fim, fixed=fixed, restarts=0)
    generic_error = frobenius_error(fim, structure.dense(params, m, n))
    derived_error = frobenius_error(fim, derived)
    if derived_error > generic_error * (1 + rtol) + 1e-12 * float(fim.norm()):
        raise DerivationMismatch(
            f"{what}: the derived F~ is not optimal at {m}x{n}: error {derived_error:.10g} > "
            f"{generic_error:.10g} found by the generic numerical solver"
        )
    return derived_error / max(generic_error, 1e-300)


def online_params(structure, samples: Tensor) -> dict[str, Tensor]:
    """The optimizer's path: average ``structure.statistics`` over the samples, then ``fit``."""
    m, n = samples.shape[-2:]
    stats = [structure.statistics(g) for g in samples]
    mean = {k: torch.stack([s[k] for s in stats]).mean(0) for k in stats[0]}
    return structure.fit(mean, m, n)


def check_precondition(structure, params: dict, grad: Tensor, derived: Tensor, what: str,
                       rtol: float = 1e-6) -> float:
    """``structure.precondition(params, G)`` (matrix-free) equals the derived update rule."""
    got = structure.precondition(params, grad, 0.5, 0.0)
    return expect_close(f"{what}: {type(structure).__name__}.precondition", got, derived, rtol)


def check_closed_form(structure, derived_fn, what: str, shapes=NUMERIC_SHAPES, online: bool = True,
                      update_fn=None, fixed_fn=None) -> list[CheckResult]:
    """The standard comparison of a derived optimum with fimkit on random instances.

    ``derived_fn(fim, m, n, samples) -> F~`` is the derivation's optimum (dense). Checks that
    ``fimkit.solve`` returns it, that the generic solver finds nothing better (first shape; with
    ``fixed_fn(fim, m, n) -> fixed params`` held fixed, e.g. a basis), that the online path
    (``statistics`` -> ``fit``) reproduces it when ``online``, and that ``precondition`` equals
    ``update_fn(fim, m, n, samples, G)`` (default: ``Mat(F~^{-1/2} vec(G))`` of the derived F~).
    """
    gaps, ratio = [], None
    for index, (m, n, samples, fim) in enumerate(instances(shapes)):
        derived = derived_fn(fim, m, n, samples)
        gaps.append(check_solve(structure, fim, m, n, derived, what))
        if index == 0:
            fixed = fixed_fn(fim, m, n) if fixed_fn else None
            ratio = check_beats_generic(structure, fim, m, n, derived, what, fixed=fixed)
        grad = samples[0]
        expected = (update_fn(fim, m, n, samples, grad) if update_fn
                    else inverse_power_apply(derived, grad))
        check_precondition(structure, fimkit.solve(structure, fim, (m, n)).params, grad, expected, what)
        if online:
            params = online_params(structure, samples)
            expect_close(f"{what}: online path (statistics -> fit) at {m}x{n}", structure.dense(params, m, n), derived)
    results = [ok(f"{what}: fimkit.solve returns the derived optimum", "fimkit", f"max gap {max(gaps):.1e}"),
               ok(f"{what}: the generic numerical solver finds nothing better", "numeric",
                  f"error ratio derived/generic {ratio:.8f}"),
               ok(f"{what}: precondition equals the derived update rule", "fimkit")]
    if online:
        results.append(ok(f"{what}: online statistics -> fit reproduces the optimum", "fimkit"))
    return results


def substitute_fim(expr, fim_symbolic: sp.Matrix, fim: Tensor) -> Tensor:
    """A fixed-size symbolic result (entries in the symbols of a symbolic F) evaluated at a numeric F."""
    values = {fim_symbolic[i, j]: float(fim[i, j]) for i in range(fim.shape[0]) for j in range(i, fim.shape[0])}
    return torch.tensor(sp.Matrix(expr).xreplace(values).evalf().tolist(), dtype=torch.float64)


def check_fixed_size_solutions(structure, solve_fixed, what: str,
                               shapes=((2, 3), (3, 2))) -> list[CheckResult]:
    """sympy's exact fixed-size optimum ``solve_fixed(m, n) -> (F_sym, F~_sym)``, evaluated at a
    random numeric F, equals ``fimkit.solve``'s member."""
    gaps = []
    for m, n, _, fim in instances(shapes):
        fim_symbolic, ftilde = solve_fixed(m, n)
        gaps.append(check_solve(structure, fim, m, n, substitute_fim(ftilde, fim_symbolic, fim),
                                f"{what} (sympy's {m}x{n} solution)"))
    return [ok(f"{what}: sympy's exact fixed-size solutions, evaluated numerically, equal fimkit.solve",
               "fixed sizes", f"max gap {max(gaps):.1e}")]


def psd_power(a: Tensor, power: float) -> Tensor:
    """``A^power`` of a symmetric PSD matrix by its eigen-decomposition (an oracle, not fimkit's)."""
    evals, evecs = torch.linalg.eigh(0.5 * (a + a.T))
    return (evecs * evals.clamp_min(1e-300).pow(power)) @ evecs.T
