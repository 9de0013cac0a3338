"""One ``torch.optim.Optimizer`` made of several, each owning some param groups.

The container's ``param_groups`` are the children's own group dicts and its ``state`` is shared
with them, so learning-rate schedulers, ``zero_grad``, ``state_dict`` and ``load_state_dict``
work on the container exactly as on any optimizer (torchtitan's OptimizersContainer idea).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch

from .chain import restore_saved_state_dtypes


class RoutedOptimizer(torch.optim.Optimizer):
    """Steps each child optimizer; looks like one optimizer from outside."""

    def __init__(self, children: dict[str, torch.optim.Optimizer]):
        if not children:
            raise ValueError("RoutedOptimizer needs at least one child optimizer")
        self.children = dict(children)
        groups = [g for child in self.children.values() for g in child.param_groups]
        super().__init__([{"params": g["params"]} for g in groups], defaults={})
        self.param_groups = groups  # the children's own dicts, hyperparameters included
        for child in self.children.values():
            for p, s in child.state.items():
                self.state[p] = s
        self._link()

    def _link(self) -> None:
        """Make the children use the container's group dicts and state dict."""
        offset = 0
        for child in self.children.values():
            count = len(child.param_groups)
            child.param_groups = self.param_groups[offset: offset + count]
            child.state = self.state
            offset += count

    def group_owner(self, group: dict[str, Any]) -> torch.optim.Optimizer:
        for child in self.children.values():
            if any(g is group for g in child.param_groups):
                return child
        raise KeyError("group not owned by any child")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for child in self.children.values():
            child.step()
        return loss

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # torch rebuilds self.param_groups and self.state; re-share them with the children.
        super().load_state_dict(state_dict)
        self.state = defaultdict(dict, self.state)
        self._link()
        restore_saved_state_dtypes(self, state_dict)

    def __repr__(self) -> str:
        inner = ", ".join(f"{role}={type(c).__name__}({sum(len(g['params']) for g in c.param_groups)} "
                          f"tensors)" for role, c in self.children.items())
        return f"RoutedOptimizer({inner})"
