"""An optimizer named on the command line: a registered name or a structure to derive one from.

``fimkit train --optimizer SPEC`` and every ``fimkit compare`` spec accept

- a registered name (``fimkit optimizers``): ``adam``, ``racs``, ``alice``, ...;
- a structure, derived on the spot with ``fimkit.derive``'s defaults: a name of ``fimkit derive
  --list`` (``whiten_left``) or an expression over ``fimkit.structures``
  (``"Kronecker(Full(), DiagonalFactor())"``);
- ``derive(STRUCTURE, key=value, ...)``: the same with ``fimkit.derive``'s keyword arguments
  (default hyperparameters such as ``lr``, ``betas``, ``eps``; ``momentum``, ``matrix_only``),
  each a constant;
- ``module:attribute``: a user's ``Structure`` instance or class (derived as above), or a
  ``torch.optim.Optimizer`` subclass (used as it is). The working directory is importable, as
  with ``python -m``.

Structures are read by ``fimkit derive``'s own parser (``derivations.resolve``: ``ast``, calls
of ``fimkit.structures``' names with constant arguments, nothing evaluated); the keyword
arguments of ``derive(...)`` by ``ast.literal_eval``. The optimizer is registered under the
spec's text (``fimkit.optim.register``), so routing, checkpoints and ``config.json`` name it
by that text and ``--config`` / ``--resume`` rebuild it.
"""

from __future__ import annotations

import ast
import difflib
import inspect
import re
from typing import Any

import torch

import fimkit
from fimkit.optim import register, registered
from fimkit.structures import Structure

#: the optimizer class of each spec text built in this process (a spec is derived once)
_BUILT: dict[str, type[torch.optim.Optimizer]] = {}

SPEC_FORMS = ("a structure name of `fimkit derive --list`, an expression such as 'Kronecker(Full(), DiagonalFactor())', "
              "'derive(STRUCTURE, lr=1e-2)', or 'module:attribute' (a Structure or a torch.optim.Optimizer class)")


def is_spec(text: str) -> bool:
    """Whether ``text`` is a structure spec rather than a plain optimizer name."""
    return not text.strip().isidentifier()


def canonical(text: str) -> str:
    """The value ``TrainConfig.optimizer`` records for ``text``: a registered name in lower case,
    a spec as typed (a module path is case-sensitive). Registers the spec's optimizer; a
    ``ValueError`` in one line says what is wrong with it."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"--optimizer {text!r}: give an optimizer name or a structure spec")
    text = text.strip()
    if text.lower() in registered() and not is_spec(text):
        return text.lower()
    if not is_spec(text):
        from derivations.resolve import ALIASES, namespace

        if text.lower() not in ALIASES and text not in namespace():
            names = sorted(registered())
            close = difflib.get_close_matches(text.lower(), names + sorted(ALIASES), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown optimizer {text!r}{hint}; registered: {', '.join(names)}; or {SPEC_FORMS}")
    ensure_registered(text)
    return text


def ensure_registered(text: str) -> str:
    """Register the optimizer of spec ``text`` (once per process); returns its registry name."""
    cls = _BUILT.get(text)
    if cls is None:
        cls = _BUILT[text] = optimizer_from_spec(text)
    key = text.lower()
    if registered().get(key) is not cls:
        try:
            register(key, cls)
        except ValueError as exc:
            raise ValueError(f"--optimizer {text!r}: {exc}") from None
    return key


def optimizer_from_spec(text: str) -> type[torch.optim.Optimizer]:
    """The optimizer class ``text`` names (see the module docstring)."""
    from derivations.resolve import import_attribute, resolve

    try:
        if ":" in text and "(" not in text:
            target = import_attribute(text)
            if isinstance(target, type) and issubclass(target, torch.optim.Optimizer):
                return _with_default_hyperparameters(target)
            return _derive(resolve(text), {}, text)
        tree = ast.parse(text, mode="eval").body
        if isinstance(tree, ast.Call) and isinstance(tree.func, ast.Name) and tree.func.id == "derive":
            return _derive_call(tree, text)
        return _derive(resolve(text), {}, text)
    except SyntaxError as exc:
        raise ValueError(f"--optimizer {text!r}: cannot parse it ({exc.msg}); expected {SPEC_FORMS}") from None
    except ValueError as exc:
        message = str(exc)
        raise ValueError(message if message.startswith("--optimizer") else f"--optimizer {text!r}: {message}") from None


def _derive_call(call: ast.Call, text: str) -> type[torch.optim.Optimizer]:
    from derivations.resolve import resolve

    if len(call.args) != 1 or any(isinstance(a, ast.Starred) for a in call.args):
        raise ValueError("derive(...) takes one structure and keyword arguments, e.g. derive(RowColumn(), lr=1e-2)")
    structure_node = call.args[0]
    if isinstance(structure_node, ast.Constant) and isinstance(structure_node.value, str):
        structure = resolve(structure_node.value)  # a name or 'module:attribute' in quotes
    else:
        structure = resolve(ast.unparse(structure_node))
    options = {}
    for keyword in call.keywords:
        if keyword.arg is None:
            raise ValueError("** arguments are not allowed in derive(...)")
        try:
            options[keyword.arg] = ast.literal_eval(keyword.value)
        except ValueError:
            raise ValueError(f"derive(...) keyword {keyword.arg}={ast.unparse(keyword.value)} is not a constant "
                             f"(numbers, strings, booleans, tuples)") from None
    return _derive(structure, options, text)


def _derive(structure: Structure, options: dict[str, Any], text: str) -> type[torch.optim.Optimizer]:
    try:
        return fimkit.derive(structure, **options)
    except TypeError as exc:
        raise ValueError(" ".join(str(exc).split())) from None


_JSON_SCALARS = (bool, int, float, str, type(None))


def _with_default_hyperparameters(cls: type[torch.optim.Optimizer]) -> type[torch.optim.Optimizer]:
    """``cls`` itself when it declares ``default_hyperparameters`` (fimkit's optimizers); else a
    subclass that declares its constructor's keyword defaults, which routing and ``--opt`` read.
    Defaults that a config file cannot hold (tensors, dtypes) are left to the constructor."""
    if hasattr(cls, "default_hyperparameters"):
        return cls
    defaults = {}
    for name, parameter in inspect.signature(cls.__init__).parameters.items():
        value = parameter.default
        if name in ("self", "params") or value is inspect.Parameter.empty:
            continue
        if isinstance(value, _JSON_SCALARS) or (isinstance(value, tuple) and all(isinstance(v, _JSON_SCALARS)
                                                                                 for v in value)):
            defaults[name] = value
    namespace = {"default_hyperparameters": classmethod(lambda _cls: dict(defaults)), "__module__": cls.__module__,
                 "__doc__": cls.__doc__}
    return type(cls.__name__, (cls,), namespace)


def slug(text: str) -> str:
    """A folder name for a spec: ``adam:lr=3e-3`` -> ``adam-lr3e-3``; anything else that a path
    should not hold becomes ``-``."""
    safe = text.replace(":", "-").replace(",", "-").replace("=", "")
    safe = re.sub(r"[^A-Za-z0-9._+-]+", "-", safe)
    return re.sub(r"-{2,}", "-", safe).strip("-.") or "optimizer"
