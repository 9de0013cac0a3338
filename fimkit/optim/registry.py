"""Names of fimkit's optimizers (for routing, the command line and the contract tests)."""

from __future__ import annotations

from typing import Any

import torch

PAPER_SIZES = ("60M", "130M", "350M", "1.3B")

_REGISTRY: dict[str, type[torch.optim.Optimizer]] = {}


def register(name: str, optimizer: type[torch.optim.Optimizer]) -> type[torch.optim.Optimizer]:
    """Make ``optimizer`` available under ``name`` (lowercase) to routing and the CLI."""
    key = name.lower()
    if key in _REGISTRY and _REGISTRY[key] is not optimizer:
        raise ValueError(f"an optimizer is already registered as {key!r}: {_REGISTRY[key].__name__}")
    _REGISTRY[key] = optimizer
    return optimizer


def registered() -> dict[str, type[torch.optim.Optimizer]]:
    """name -> optimizer class, for every registered optimizer."""
    return dict(_REGISTRY)


def get_optimizer(name: str) -> type[torch.optim.Optimizer]:
    try:
        return _REGISTRY[name.lower()]
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r}; available: {', '.join(sorted(_REGISTRY))}") from None


def paper_hparams(name: str, size: str = "60M") -> dict[str, Any]:
    """The paper's hyperparameters for optimizer ``name`` at model ``size`` (Tables 7, 9, 11).

    Returns the optimizer's defaults overridden by its per-size row (``paper_hparams`` class
    attribute, a dict size -> overrides) where one exists.
    """
    if size not in PAPER_SIZES:
        raise ValueError(f"size must be one of {PAPER_SIZES}, got {size!r}")
    optimizer = get_optimizer(name)
    defaults = getattr(optimizer, "default_hyperparameters", lambda: {})()
    per_size = getattr(optimizer, "paper_hparams", {}) or {}
    return {**defaults, **per_size.get(size, {})}
