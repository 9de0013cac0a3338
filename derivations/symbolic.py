"""Sympy machinery shared by every derivation (fimkit's row-major vec: ``vec(G) = G.reshape(-1)``).

Two kinds of symbolic objects, for two kinds of proof:

- **size-generic** (``m``, ``n``, ``r`` are symbols): ``MatrixSymbol`` calculus on the objective
  written through the Kronecker moments (``E[GG^T]``, ``E[G B G^T]``, ...), and index sums with
  symbolic bounds for the reductions from ``F`` to those moments. A result proven this way holds
  for every size and every distribution of ``G``.
- **fixed size** (2x2, 2x3, 3x2): explicit matrices whose entries are symbols. A fully symbolic
  symmetric ``F`` stands for *every* Fisher of that size (any distribution of ``G``); the
  Frobenius objective is then an explicit polynomial whose stationary points sympy solves.

Everything here is pure sympy; the numeric comparison with fimkit lives in ``checks.py``.
"""

from __future__ import annotations

import itertools

import sympy as sp

m, n, r = sp.symbols("m n r", integer=True, positive=True)

#: the fixed sizes on which every closed form is also solved from a fully symbolic F
FIXED_SIZES = ((2, 2), (2, 3), (3, 2))


class DerivationMismatch(AssertionError):
    """A closed form (fimkit's, or a symbolic one) disagrees with the derivation."""


# --------------------------------------------------------------------------- fixed size objects
def symmetric_matrix(name: str, k: int) -> sp.Matrix:
    """A ``k x k`` symmetric matrix of independent symbols ``name_i_j`` (i <= j)."""
    sym = {(i, j): sp.Symbol(f"{name}_{i}_{j}", real=True) for i in range(k) for j in range(i, k)}
    return sp.Matrix(k, k, lambda i, j: sym[(min(i, j), max(i, j))])


def diagonal_symbols(name: str, k: int, positive: bool = True) -> list[sp.Symbol]:
    return list(sp.symbols(f"{name}0:{k}", positive=positive))


def symbolic_fim(m_: int, n_: int) -> sp.Matrix:
    """A fully symbolic Fisher ``F`` (mn x mn, symmetric): every distribution of an m x n ``G``."""
    return symmetric_matrix("f", m_ * n_)


def symbolic_samples(m_: int, n_: int, k: int) -> list[sp.Matrix]:
    """``k`` gradient samples of symbols ``g{s}_{i}_{j}``; their mean outer product is a Fisher."""
    return [sp.Matrix(m_, n_, lambda i, j, s=s: sp.Symbol(f"g{s}_{i}_{j}", real=True)) for s in range(k)]


def vec(g: sp.Matrix) -> sp.Matrix:
    """Row-major vec (sympy's ``reshape`` is row-major, as ``torch.reshape``)."""
    return g.reshape(g.rows * g.cols, 1)


def fim_of_samples(samples: list[sp.Matrix]) -> sp.Matrix:
    """``F = mean_s vec(G_s) vec(G_s)^T``, the empirical Fisher (``fimkit.empirical_fim``)."""
    return sum((vec(g) * vec(g).T for g in samples), sp.zeros(samples[0].rows * samples[0].cols)) / len(samples)


def kron(a: sp.Matrix, b: sp.Matrix) -> sp.Matrix:
    """``kron(A, B)``: with row-major vec, ``kron(A, B) vec(G) = vec(A G B^T)``."""
    return sp.kronecker_product(a, b)


def fim_entry(f: sp.Matrix, n_: int, i: int, j: int, k: int, l: int) -> sp.Expr:
    """``F[(i, j), (k, l)] = E[G_ij G_kl]``."""
    return f[i * n_ + j, k * n_ + l]


def contract_cols(f: sp.Matrix, b: sp.Matrix, m_: int, n_: int) -> sp.Matrix:
    """``E[G B G^T]`` read off ``F`` (m x m); ``B = I`` gives ``E[G G^T]``."""
    return sp.Matrix(m_, m_, lambda i, k: sum(fim_entry(f, n_, i, j, k, l) * b[j, l]
                                             for j in range(n_) for l in range(n_)))


def contract_rows(f: sp.Matrix, a: sp.Matrix, m_: int, n_: int) -> sp.Matrix:
    """``E[G^T A G]`` read off ``F`` (n x n); ``A = I`` gives ``E[G^T G]``."""
    return sp.Matrix(n_, n_, lambda j, l: sum(a[i, k] * fim_entry(f, n_, i, j, k, l)
                                             for i in range(m_) for k in range(m_)))


def elementwise_moment(f: sp.Matrix, m_: int, n_: int) -> sp.Matrix:
    """``E[G * G]`` (m x n): the diagonal of ``F`` as a matrix."""
    return sp.Matrix(m_, n_, lambda i, j: fim_entry(f, n_, i, j, i, j))


def frobenius_sq(x: sp.Matrix) -> sp.Expr:
    return sum(e**2 for e in x)


def gradient(objective: sp.Expr, unknowns: list[sp.Symbol]) -> list[sp.Expr]:
    return [sp.diff(objective, u) for u in unknowns]


def solve_stationary(objective: sp.Expr, unknowns: list[sp.Symbol]) -> dict[sp.Symbol, sp.Expr]:
    """The unique stationary point of an objective that is quadratic in ``unknowns``."""
    solutions = sp.solve(gradient(objective, unknowns), unknowns, dict=True)
    if len(solutions) != 1:
        raise DerivationMismatch(f"expected one stationary point, sympy found {len(solutions)}")
    return solutions[0]


def solve_least_squares(residual: sp.Matrix, unknowns: list[sp.Symbol]) -> dict[sp.Symbol, sp.Expr]:
    """Unique minimiser of ``||residual||_F^2`` for a residual affine in ``unknowns``: the gradient
    ``2 sum_ij r_ij dr_ij/dx`` (chain rule, cheaper than expanding the square) set to zero."""
    grad = [sp.expand(2 * sum(e * sp.diff(e, x) for e in residual)) for x in unknowns]
    solutions = sp.linsolve(grad, unknowns)
    if len(solutions) != 1:
        raise DerivationMismatch(f"expected one stationary point, sympy found {solutions}")
    (values,) = solutions
    if any(v.free_symbols & set(unknowns) for v in values):
        raise DerivationMismatch(f"the stationary point is not unique: {values}")
    return dict(zip(unknowns, values))


def free_entries(x: sp.Matrix) -> list[sp.Symbol]:
    """The distinct symbols of a parameter matrix, in first-appearance order."""
    seen: dict[sp.Symbol, None] = {}
    for e in x:
        for s in sorted(e.free_symbols, key=str):
            seen.setdefault(s, None)
    return list(seen)


def assert_zero(expr, what: str) -> None:
    """Raise :class:`DerivationMismatch` unless ``expr`` (scalar or matrix) simplifies to 0."""
    items = list(expr) if isinstance(expr, sp.MatrixBase) else [expr]
    for e in items:
        simplified = sp.simplify(e if isinstance(e, sp.MatrixExpr) else sp.expand(e))
        if not (simplified == 0 or getattr(simplified, "is_ZeroMatrix", False)):
            raise DerivationMismatch(f"{what}: the difference does not vanish: {simplified}")


def assert_equal(a, b, what: str) -> None:
    assert_zero(sp.Matrix(a) - sp.Matrix(b) if isinstance(a, sp.MatrixBase) else a - b, what)


# ------------------------------------------------------------------------ size-generic objects
def matrix_derivative(expr: sp.Expr, x: sp.MatrixSymbol, symmetric: tuple = ()) -> sp.MatrixExpr:
    """``d expr / d X`` by sympy's matrix calculus, with ``S^T`` replaced by ``S`` for the given
    symmetric symbols. (``Derivative(...).doit()``: ``Add.diff`` drops matrix terms in sympy 1.14.)"""
    return symmetrise(sp.Derivative(expr, x).doit(), symmetric)


def symmetrise(expr, symmetric: tuple):
    return expr.xreplace({s.T: s for s in symmetric}) if symmetric else expr


def solve_linear_matrix_equation(grad: sp.MatrixExpr, x: sp.MatrixSymbol) -> sp.MatrixExpr:
    """Solve ``c X + K = 0`` (``c`` a scalar expression, ``K`` free of ``X``) and verify it."""
    zero = sp.ZeroMatrix(*x.shape)
    constant = grad.xreplace({x: zero}).doit()
    coefficient = None
    for term in sp.Add.make_args(sp.expand(grad.doit())):
        factors = term.args if isinstance(term, sp.MatMul) else (term,)
        if x in factors:
            coefficient = sp.Mul(*[f for f in factors if f != x]) + (coefficient or 0)
    if coefficient is None:
        raise DerivationMismatch(f"the gradient {grad} does not depend on {x}")
    solution = (-1 / coefficient) * constant
    residual = grad.xreplace({x: solution}).doit()
    if sp.simplify(residual) != sp.ZeroMatrix(*x.shape) and sp.simplify(residual) != 0:
        raise DerivationMismatch(f"solving {grad} = 0 for {x}: residual {residual}")
    return solution


def canonical_sum(expr: sp.Sum) -> tuple[sp.Expr, list[tuple]]:
    """(summand, limits) of a possibly nested ``Sum``."""
    limits: list[tuple] = []
    while True:
        if isinstance(expr, sp.Sum):
            limits.extend(expr.limits)
            expr = expr.function
        elif isinstance(expr, sp.Mul) and any(isinstance(f, sp.Sum) for f in expr.args):
            inner = [f for f in expr.args if isinstance(f, sp.Sum)]  # pull sums out of products
            rest = [f for f in expr.args if not isinstance(f, sp.Sum)]
            expr = sp.Mul(*rest) * sp.Mul(*[f.function for f in inner])
            for f in inner:
                limits.extend(f.limits)
        else:
            return expr, limits


def index_sums_equal(a: sp.Sum, b: sp.Sum) -> bool:
    """Whether two index sums are equal up to renaming the summation indices (a general proof
    of an index identity, valid for symbolic ranges)."""
    fa, la = canonical_sum(a)
    fb, lb = canonical_sum(b)
    if len(la) != len(lb):
        return False
    for perm in itertools.permutations(lb):
        if any((pa[1], pa[2]) != (pb[1], pb[2]) for pa, pb in zip(la, perm)):
            continue
        renamed = fb.xreplace({pb[0]: pa[0] for pa, pb in zip(la, perm)})
        if sp.expand(fa - renamed) == 0:
            return True
    return False


def index_expressions_equal(a: sp.Expr, b: sp.Expr) -> bool:
    """Sums of index sums equal term by term up to relabelling (greedy matching of the terms)."""
    left, right = list(sp.Add.make_args(sp.expand(a))), list(sp.Add.make_args(sp.expand(b)))
    if len(left) != len(right):
        return False
    as_sum = lambda t: sp.Sum(*((lambda f, lim: (f, *lim))(*canonical_sum(t))))  # noqa: E731
    for term in left:
        match = next((r for r in right if index_sums_equal(as_sum(term), as_sum(r))), None)
        if match is None:
            return False
        right.remove(match)
    return True


def in_range(expr):
    """Drop the ``Piecewise`` sympy adds around ``d/da[t] Sum(...)``: the index t is in range."""
    return expr.replace(lambda e: isinstance(e, sp.Piecewise), lambda e: e.args[0][0])


def solve_indexed_stationarity(objective: sp.Expr, unknown: sp.Indexed) -> sp.Expr:
    """Stationary value of one coordinate ``unknown = a[t]`` of an index-sum objective (any size)."""
    solutions = sp.solve(in_range(sp.diff(objective, unknown).doit()), unknown)
    if len(solutions) != 1:
        raise DerivationMismatch(f"expected one stationary value of {unknown}, got {solutions}")
    return solutions[0]


def ranges(*pairs: tuple[str, sp.Expr]) -> tuple[list[sp.Symbol], list[tuple]]:
    """Integer index symbols with their summation limits ``(i, 0, size - 1)``."""
    idx = [sp.Symbol(name, integer=True) for name, _ in pairs]
    return idx, [(i, 0, size - 1) for i, (_, size) in zip(idx, pairs)]
