"""Which optimizer class owns each param group, as a state dict records it (checked on load by
:func:`fimkit.optim.loading.check_loadable`).

A routed optimizer's groups belong to its children (``group_owner``); any other optimizer owns
all of its groups.
"""

from __future__ import annotations

from typing import Any

import torch

#: the state dict key naming the class that owns each param group
CLASSES_KEY = "fimkit_classes"


def group_owner(optimizer: torch.optim.Optimizer, group: dict[str, Any]) -> torch.optim.Optimizer:
    """The optimizer that steps ``group``: ``optimizer.group_owner(group)`` where it routes, else itself."""
    owner = getattr(optimizer, "group_owner", None)
    return owner(group) if owner is not None else optimizer


def with_saved_classes(optimizer: torch.optim.Optimizer, state_dict: dict[str, Any]) -> dict[str, Any]:
    """``state_dict`` with the class name of each group's owner under :data:`CLASSES_KEY`."""
    return {**state_dict, CLASSES_KEY: [type(group_owner(optimizer, g)).__name__ for g in optimizer.param_groups]}
