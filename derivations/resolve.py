"""From what a user types to a structure: a name, an expression, or ``module:attribute``.

Expressions such as ``"Kronecker(Full(), Identity())"`` are parsed with ``ast`` and built only
from calls of the public names of ``fimkit.structures`` with constant arguments; nothing is
evaluated. ``module:attribute`` imports the user's module (their code, by their request) and
takes a ``Structure`` instance, or a ``Structure`` class it instantiates without arguments.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import os
import sys

import fimkit.structures as structures

#: readable names -> structure expressions (the CLI's vocabulary; ``fimkit derive --list``)
ALIASES = {
    "diagonal": "Diagonal()",
    "adam": "Diagonal()",
    "row_column": "RowColumn()",
    "racs": "RowColumn(estimator='per_sample')",
    "adafactor": "RowColumn(estimator='marginal')",
    "shampoo": "Kronecker(Full(), Full(), estimator='bound', keep_constants=False)",
    "kron_full_full": "Kronecker(Full(), Full())",
    "nkp": "Kronecker(Full(), Full())",
    "whiten_left": "Kronecker(Full(), Identity())",
    "whiten_right": "Kronecker(Identity(), Full())",
    "norm_row": "Kronecker(DiagonalFactor(), Identity())",
    "norm_col": "Kronecker(Identity(), DiagonalFactor())",
    "scalar": "Kronecker(Identity(), Identity())",
    "kron_diag_spd": "Kronecker(Full(), DiagonalFactor())",
    "kron_spd_diag": "Kronecker(DiagonalFactor(), Full())",
    "eigen_adam": "EigenvalueCorrected(Kronecker(Full(), Identity()))",
    "soap": "EigenvalueCorrected(Kronecker(Full(), Full()))",
    "low_rank": "LowRankPlusDiagonal(rank=4)",
    "alice": "LowRankPlusDiagonal(rank=4)",
    "block_whitening": "derivations.block_whitening:BlockWhitening",
}

_HIDDEN = {"Structure", "ParamSpec", "FactorFamily"}


def namespace() -> dict:
    """The callables an expression may use: ``fimkit.structures``' public structures and factors."""
    return {name: getattr(structures, name) for name in structures.__all__ if name not in _HIDDEN}


def normalise_name(text: str) -> str:
    return text.strip().lower().replace("-", "_")


def known_names() -> list[str]:
    return sorted(ALIASES)


def resolve(text: str):
    """A ``Structure`` from a name, an expression or ``module:attribute``; ``ValueError`` otherwise."""
    name = normalise_name(text)
    if name in ALIASES:
        return resolve(ALIASES[name])
    if ":" in text and "(" not in text:
        return from_module_attribute(text.strip())
    if text.strip().isidentifier() and text.strip() not in namespace():
        raise ValueError(f"unknown structure name {text!r}. Known names: {', '.join(known_names())}; or give an "
                         f"expression such as 'Kronecker(Full(), Identity())', or 'module:attribute'.")
    return parse_expression(text)


def parse_expression(text: str):
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"cannot parse structure expression {text!r}: {exc.msg}") from None
    return _checked(_build(tree.body), text)


def _build(node):
    names = namespace()
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in names:
        if any(k.arg is None for k in node.keywords) or any(isinstance(a, ast.Starred) for a in node.args):
            raise ValueError("* and ** arguments are not allowed in a structure expression")
        args = [_build(a) for a in node.args]
        kwargs = {k.arg: _build(k.value) for k in node.keywords}
        try:
            return names[node.func.id](*args, **kwargs)
        except TypeError as exc:
            raise ValueError(f"{ast.unparse(node)}: {exc}") from None
    if isinstance(node, ast.Name) and node.id in names:
        return names[node.id]()
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool, type(None))):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
        return -_build(node.operand)
    raise ValueError(f"unsupported syntax {ast.unparse(node)!r}: a structure expression may only call "
                     f"{', '.join(sorted(names))} with constant arguments")


def import_attribute(target: str):
    """The object ``module:attribute`` names (the working directory importable, as with
    ``python -m``); a ValueError saying what is missing, with the closest name."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute or not all(p.isidentifier() for p in (*module_name.split("."),
                                                                              *attribute.split("."))):
        raise ValueError(f"expected 'module:attribute' such as 'my_package.module:MyStructure', got {target!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())  # as `python -m` does: the user's module next to their runs
    try:
        obj = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import module {module_name!r}: {exc}") from None
    for part in attribute.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            close = difflib.get_close_matches(part, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"module {module_name!r} has no attribute {attribute!r}{hint}")
        obj = getattr(obj, part)
    return obj


def from_module_attribute(target: str):
    obj = import_attribute(target)
    if isinstance(obj, type) and issubclass(obj, structures.Structure):
        try:
            obj = obj()
        except TypeError as exc:
            raise ValueError(f"{target} is a Structure class that needs arguments ({exc}); point to an "
                             f"instance instead") from None
    return _checked(obj, target)


def _checked(obj, text: str):
    if not isinstance(obj, structures.Structure):
        raise ValueError(f"{text!r} is not a fimkit Structure (got {type(obj).__name__})")
    return obj
