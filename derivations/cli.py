"""``fimkit derive STRUCTURE [--latex]``: the structure, its Frobenius problem, the solution, the
update rule and the state memory as a formula in m, n (and r).

STRUCTURE is a name (``fimkit derive --list``), an expression over ``fimkit.structures``
(``"Kronecker(Full(), Identity())"``) or ``module:attribute`` (a user's Structure instance or
class). A structure without a derived closed form gets its problem and the note that
``fimkit.solve`` uses the generic numerical solver.
"""

from __future__ import annotations

import argparse
import itertools
import sys

import sympy as sp

from fimkit.structures import Structure

from . import derivation_for, symbolic as S
from .report import Formula
from .resolve import ALIASES, known_names, resolve

AGREEMENT_SIZES = ((2, 3), (3, 5), (4, 4), (6, 5), (7, 2))


def memory_value(structure, formula: sp.Expr, m: int, n: int) -> int:
    r = structure.effective_rank(m) if hasattr(structure, "effective_rank") else getattr(structure, "rank", 0)
    return int(formula.subs({S.m: m, S.n: n, S.r: r}))


def memory_agrees(structure, formula: sp.Expr) -> bool:
    """The formula equals ``structure.state_numel(m, n)`` on several sizes."""
    return all(memory_value(structure, formula, m, n) == structure.state_numel(m, n) for m, n in AGREEMENT_SIZES)


def fitted_memory(structure) -> sp.Expr | None:
    """``state_numel`` as a polynomial of degree <= 2 in each of m, n, when it is one."""
    monomials = [S.m**a * S.n**b for a in range(3) for b in range(3)]
    coefficients = sp.symbols(f"c0:{len(monomials)}")
    poly = sum(c * mono for c, mono in zip(coefficients, monomials))
    try:
        equations = [poly.subs({S.m: m, S.n: n}) - structure.state_numel(m, n)
                     for m, n in itertools.product((2, 3, 4), repeat=2)]
        (solution,) = sp.linsolve(equations, coefficients)
        formula = sp.expand(poly.subs(dict(zip(coefficients, solution))))
        ok = all(formula.subs({S.m: m, S.n: n}) == structure.state_numel(m, n) for m, n in ((5, 6), (6, 5), (7, 3)))
    except Exception:  # a user's state_numel may refuse some sizes; then there is no formula to print
        return None
    return formula if ok else None


def plain(formula: sp.Expr) -> str:
    """``m^2 + n^2`` rather than sympy's ``m**2 + n**2``; a Piecewise as ``a if c; b otherwise``."""
    if isinstance(formula, sp.Piecewise):
        return "; ".join(plain(e) + ("" if c is sp.true else f" if {plain(c)}") for e, c in formula.args)
    return sp.sstr(formula).replace("**", "^").replace("*", " ")


def _overrides(structure, method: str) -> bool:
    return getattr(type(structure), method) is not getattr(Structure, method)


def sections(structure, derivation) -> list[tuple[str, Formula]]:
    """(heading, formula) pairs, shared by the plain-text and the LaTeX output."""
    problem_fim = Formula("F = E[vec(G) vec(G)^T] (mn x mn, row-major vec), G the m x n gradient",
                          r"F = \mathbb{E}[\operatorname{vec}(G)\operatorname{vec}(G)^\top]")
    out = [("structure", Formula(repr(structure), r"\texttt{" + _tex_escape(repr(structure)) + "}"))]
    if derivation is not None:
        out += [("result", Formula(f"{derivation.title} ({derivation.source})", _tex_escape(derivation.title))),
                ("family", derivation.family), ("problem", derivation.problem), ("where", problem_fim)]
        out += [("solution", line) for line in derivation.solution]
        out += [("solver", Formula(f"fimkit.solve: {structure.solver}", _tex_escape(f"fimkit.solve: {structure.solver}"))),
                ("update", derivation.update)]
        memory = derivation.memory(structure)
        formula, holds = memory.formula, memory.holds
        if _overrides(structure, "fit_fim") and type(structure).fit_fim is not _builtin_fit_fim(structure):
            out.append(("note", Formula("this class overrides fit_fim: check it against the derivation with "
                                        f"`python -m {derivation.module}` or {derivation.module}.check(structure=...)",
                                        r"\text{this class overrides fit\_fim}")))
    else:
        spec = structure.parameter_spec(3, 4)
        params = ", ".join(f"{k} {tuple(v.shape)} {v.constraint}" for k, v in spec.items())
        out += [("family", Formula(f"F~(theta), theta = {{{params}}} at m, n = 3, 4", r"\tilde F(\theta)")),
                ("problem", Formula("min_theta ||F - F~(theta)||_F^2", r"\min_\theta \|F - \tilde F(\theta)\|_F^2")),
                ("where", problem_fim)]
        if _overrides(structure, "fit_fim"):
            line = ("no derivation here; the structure provides its own closed form (fit_fim), which fimkit.solve "
                    "uses: compare it with fimkit.solve(..., method='generic')")
        else:
            line = ("no closed form is known: only the numerical solver applies; fimkit.solve will use the generic "
                    "solver (L-BFGS-B over the constrained parameters)")
        out.append(("solution", Formula(line, r"\text{" + _tex_escape(line) + "}")))
        update = "Delta = Mat(F~^{-1/2} vec(G))" + ("" if _overrides(structure, "precondition")
                                                    else " (dense: the structure has no matrix-free precondition)")
        out.append(("update", Formula(update, r"\Delta = \operatorname{Mat}(\tilde F^{-1/2}\operatorname{vec}(G))")))
        formula, holds = fitted_memory(structure), "fitted to structure.state_numel(m, n)"
    if formula is None:
        out.append(("memory", Formula("state_numel(m, n) is not a polynomial of degree <= 2 in m and n",
                                      r"\text{not a low-degree polynomial}")))
    else:
        agrees = memory_agrees(structure, formula)
        check = "agrees with structure.state_numel" if agrees else "WARNING: disagrees with structure.state_numel"
        rank = "; r = min(rank, m)" if S.r in formula.free_symbols else ""
        out.append(("memory", Formula(f"{plain(formula)}  ({holds}; {check}{rank})",
                                      f"${sp.latex(formula)}$ ({_tex_escape(holds)})")))
    if derivation is not None:
        out.append(("derivation", Formula(f"python -m {derivation.module}",
                                          r"\texttt{python -m " + _tex_escape(derivation.module) + "}")))
    return out


def _builtin_fit_fim(structure):
    """The fit_fim of the built-in class the derivation is about (a subclass may override it)."""
    for cls in type(structure).__mro__:
        if cls.__module__.startswith("fimkit.structures") or cls.__module__.startswith("derivations."):
            return cls.fit_fim
    return None


def _tex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("&", r"\&"), ("%", r"\%"), ("#", r"\#"),
                 ("{", r"\{"), ("}", r"\}"), ("^", r"\^{}"), ("~", r"\~{}")):
        text = text.replace(a, b)
    return text


def render(structure, latex: bool = False) -> str:
    parts = sections(structure, derivation_for(structure))
    if not latex:
        return "\n".join(f"{heading:<11}: {formula.text}" for heading, formula in parts)
    lines = [r"\begin{description}"]
    for heading, formula in parts:
        body = formula.latex
        math = heading in ("family", "problem", "where", "solution", "update") and not body.startswith(r"\text")
        lines.append(rf"  \item[{heading.capitalize()}] " + (f"${body}$" if math else body))
    lines.append(r"\end{description}")
    return "\n".join(lines)


def list_names() -> str:
    rows = []
    for name in known_names():
        try:
            derivation = derivation_for(resolve(name))
            module = derivation.module if derivation else "(generic solver)"
        except ValueError as exc:
            module = f"(unavailable: {exc})"
        rows.append(f"  {name:<16} {ALIASES[name]:<66} {module}")
    return "\n".join(["names (STRUCTURE may also be an expression over fimkit.structures, or module:attribute):",
                      *rows])


def derive_command(argv: list[str]) -> int:
    """Print a structure's Frobenius-optimal solution, update rule and state memory."""
    parser = argparse.ArgumentParser(prog="fimkit derive", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("structure", nargs="?", help="a name, an expression, or module:attribute")
    parser.add_argument("--latex", action="store_true", help="print LaTeX instead of plain text")
    parser.add_argument("--list", action="store_true", help="list the known structure names")
    args = parser.parse_args(argv)
    if args.list:
        print(list_names())
        return 0
    if args.structure is None:
        parser.print_usage(sys.stderr)
        print(f"fimkit derive: give a STRUCTURE.\n{list_names()}", file=sys.stderr)
        return 2
    try:
        structure = resolve(args.structure)
    except ValueError as exc:
        print(f"fimkit derive: {exc}", file=sys.stderr)
        return 2
    print(render(structure, latex=args.latex))
    return 0
