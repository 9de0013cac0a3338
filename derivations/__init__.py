"""Symbolic derivations of fimkit's structures, each checked against the library.

One runnable module per result (``python -m derivations.<name>`` prints the derivation, every
proof step and every check against fimkit; exit status 1 on a mismatch):

- ``kronecker``: the Kronecker lemma every ``Kronecker(rows, cols)`` composition reduces to;
- ``diagonal``: ``Diagonal`` -> Adam's second moment;
- ``one_sided``: whitening and normalisation of one side (whiten_left/right, norm_row/col, scalar);
- ``nearest_kronecker``: ``Kronecker(Full, Full)``, the nearest Kronecker product, and Shampoo's bound;
- ``row_column``: ``RowColumn`` -> RACS's fixed point;
- ``kron_diag_spd``: ``Kronecker(Full, DiagonalFactor)`` and its transpose;
- ``eigenvalue_corrected``: SOAP and Eigen-Adam;
- ``normalisation``: SWAN / SinkGD / Muon as structures of one gradient;
- ``low_rank``: Alice's compensation ([P] Thm 5.1);
- ``block_whitening``: a new structure derived end to end (see README.md).

Shared machinery: ``symbolic`` (sympy), ``checks`` (numbers vs fimkit), ``report`` (records and
printing), ``resolve`` (names and expressions -> structures), ``cli`` (``fimkit derive``).
fimkit never imports this package.
"""

from __future__ import annotations

import importlib

#: result modules, most specific first (the first derivation that applies to a structure wins)
RESULT_MODULES = (
    "diagonal", "one_sided", "nearest_kronecker", "row_column", "kron_diag_spd",
    "eigenvalue_corrected", "low_rank", "block_whitening", "normalisation", "kronecker",
)


def result_module(name: str):
    if name not in RESULT_MODULES:
        raise ValueError(f"unknown derivation module {name!r}; known: {', '.join(RESULT_MODULES)}")
    return importlib.import_module(f"{__name__}.{name}")


def all_derivations() -> list:
    """Every :class:`~derivations.report.Derivation`, in precedence order."""
    return [d for name in RESULT_MODULES for d in result_module(name).DERIVATIONS]


def derivation_for(structure):
    """The derivation of ``structure``'s family, or ``None`` when no closed form is derived."""
    return next((d for d in all_derivations() if d.applies(structure)), None)


__all__ = ["RESULT_MODULES", "result_module", "all_derivations", "derivation_for"]
