"""``fimkit optimizers``: every registered optimizer with the exact declaration that builds it.

Each printed line is a ``fimkit.derive(...)`` call (or a ``fimkit.recipe(...)`` for the
optimizers that are not a Frobenius fit) over the names of :func:`names`; evaluating it gives a
class that steps identically to the registered one (``tests/test_catalog.py``).
"""

from __future__ import annotations

import argparse

from .derive import expression
from .optim import registered

IMPORTS = ("from fimkit import derive, recipe; from fimkit.structures import *; "
           "from fimkit.optim.blocks import *; from fimkit.lowrank.blocks import *")


def names() -> dict:
    """The names a printed declaration uses (those of :data:`IMPORTS`)."""
    from . import derive, recipe, structures
    from .lowrank import blocks as lowrank_blocks
    from .optim import blocks

    namespace = {"derive": derive, "recipe": recipe}
    for module in (structures, blocks, lowrank_blocks):
        namespace.update({k: v for k, v in vars(module).items() if not k.startswith("_")})
    return namespace


def optimizers_command(argv: list[str]) -> int:
    """List the registered optimizers with the declaration that builds each one."""
    parser = argparse.ArgumentParser(prog="fimkit optimizers", description=optimizers_command.__doc__)
    parser.add_argument("--verbose", "-v", action="store_true", help="print every default hyperparameter")
    args = parser.parse_args(argv)
    print(f"# each declaration rebuilds the registered class, with: {IMPORTS}")
    for name, optimizer in sorted(registered().items()):
        declared = getattr(optimizer, "declaration", None)
        note = ""
        if declared is not None and declared.structure is None:
            note = "  (not a Frobenius fit: a recipe over the same blocks)"
        print(f"{name:<12} {optimizer.__name__}{note}")
        print(f"    {expression(optimizer)}" if declared is not None else "    (declared outside fimkit.derive)")
        if args.verbose and hasattr(optimizer, "default_hyperparameters"):
            for key, value in sorted(optimizer.default_hyperparameters().items()):
                print(f"      {key} = {value!r}")
    return 0
