"""What a derivation is (a record the CLI prints) and how a result module runs and reports.

A result module defines one :class:`Derivation`: the family, the Frobenius problem, the solution,
the update rule and the state memory (printed by ``fimkit derive``), plus its proof steps
(functions returning :class:`Step` lists, raising ``DerivationMismatch`` when sympy disagrees)
and its ``check`` against fimkit. ``python -m derivations.<name>`` calls :func:`main`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sympy as sp


@dataclass(frozen=True)
class Formula:
    """One statement in plain text and in LaTeX."""

    text: str
    latex: str


@dataclass(frozen=True)
class Step:
    """One proven step: what was shown, the sympy result, and how general the proof is."""

    what: str
    result: Any = None
    scope: str = "general"


@dataclass(frozen=True)
class Memory:
    """State memory of the structure's optimizer statistics as a formula in m, n (and r)."""

    formula: sp.Expr
    holds: str  # what the state is, e.g. "E[G*G] (m x n)"


@dataclass(frozen=True)
class Derivation:
    """What ``fimkit derive`` prints for the structures this derivation ``applies`` to."""

    key: str  # the name the CLI knows it by
    module: str  # the runnable module that proves and checks it
    title: str
    source: str
    family: Formula
    problem: Formula
    solution: tuple[Formula, ...]
    update: Formula
    solver: str
    applies: Callable[[Any], bool]
    memory: Callable[[Any], Memory]
    example: str  # a structure expression this derivation applies to
    notes: tuple[Formula, ...] = field(default_factory=tuple)


def verify(proofs, check, structure=None) -> list:
    """Run a module's proofs and its check against fimkit; raises ``DerivationMismatch``."""
    results: list = []
    for proof in proofs:
        results.extend(proof())
    if check is not None:
        results.extend(check() if structure is None else check(structure=structure))
    return results


def format_result(result) -> str:
    return "" if result is None else str(result)


def print_summary(derivation: Derivation, out=sys.stdout) -> None:
    print(f"{derivation.title}  ({derivation.source})", file=out)
    print(f"  family   : {derivation.family.text}", file=out)
    print(f"  problem  : {derivation.problem.text}", file=out)
    for i, line in enumerate(derivation.solution):
        print(f"  {'solution' if i == 0 else '':<9}: {line.text}", file=out)
    print(f"  update   : {derivation.update.text}", file=out)
    for note in derivation.notes:
        print(f"  note     : {note.text}", file=out)


def main(derivations: tuple[Derivation, ...], proofs, check) -> int:
    """``python -m derivations.<module>``: the results, every proof step and every check against
    fimkit; exit status 1 on a mismatch."""
    from .symbolic import DerivationMismatch

    for derivation in derivations:
        print_summary(derivation)
        print()
    try:
        for proof in proofs:
            for step in proof():
                shown = format_result(step.result)
                print(f"[proof, {step.scope}] {step.what}" + (f"\n    = {shown}" if shown else ""))
        if check is not None:
            print()
            for res in check():
                mark = "ok" if res.status == "ok" else "SKIPPED"
                print(f"[check {mark}, {res.scope}] {res.name}" + (f": {res.detail}" if res.detail else ""))
    except DerivationMismatch as exc:
        print(f"\nMISMATCH: {exc}", file=sys.stderr)
        return 1
    return 0
