"""``fimkit optimizers``: what is registered, with its structure, defaults and state size."""

from __future__ import annotations

import argparse

from .optim import registered


def optimizers_command(argv: list[str]) -> int:
    """List the registered optimizers with their structure and default hyperparameters."""
    parser = argparse.ArgumentParser(prog="fimkit optimizers", description=optimizers_command.__doc__)
    parser.add_argument("--verbose", "-v", action="store_true", help="print every default hyperparameter")
    args = parser.parse_args(argv)
    for name, optimizer in sorted(registered().items()):
        structure = getattr(optimizer, "structure", None)
        blocks = getattr(optimizer, "blocks", None)
        recipe = " -> ".join(type(b).__name__ for b in blocks) if blocks else ""
        print(f"{name:<12} {optimizer.__name__:<12} {structure!r}" if structure else f"{name:<12} {optimizer.__name__}")
        if recipe:
            print(f"{'':<12} chain: {recipe}")
        if args.verbose and hasattr(optimizer, "default_hyperparameters"):
            for key, value in sorted(optimizer.default_hyperparameters().items()):
                print(f"{'':<14}{key} = {value!r}")
    return 0
