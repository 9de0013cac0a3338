"""One ``torch.optim.Optimizer`` made of several, each owning some param groups.

The container's ``param_groups`` are the children's own group dicts and its ``state`` is shared
with them, so learning-rate schedulers, ``zero_grad``, ``state_dict`` and ``load_state_dict``
work on the container exactly as on any optimizer (torchtitan's OptimizersContainer idea).

The non-finite policy (``on_nonfinite`` of each group: ``"skip"``, the default, ``"raise"`` or
``"ignore"``) covers every parameter, those of a torch child (the Adam of embeddings, norms and
biases) included: the container reads every gradient's extremes with one host sync per step and
hands them to its fimkit children; a torch child's parameter with a non-finite gradient is hidden
from it for that step (its gradient set aside and put back), so its value and state stay as
they were.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections import defaultdict
from typing import Any

import torch

from .chain import ChainOptimizer, with_saved_classes
from .loading import check_loadable, restore_saved_state_dtypes
from .units import gradient_extremes

NONFINITE_POLICIES = ("skip", "raise", "ignore")


def guarded_parameters(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """Parameters with a dense gradient whose group's policy is not ``"ignore"``."""
    return [p for g in optimizer.param_groups if g.get("on_nonfinite", "skip") != "ignore"
            for p in g["params"] if p.grad is not None and not p.grad.is_sparse]


@contextlib.contextmanager
def nonfinite_hidden(optimizer: torch.optim.Optimizer, extremes: dict[torch.Tensor, float]):
    """Apply each group's non-finite policy to a torch optimizer's step: ``"raise"`` raises
    ``FloatingPointError`` naming the parameter, ``"skip"`` sets its gradient aside for the step
    (torch optimizers skip a parameter without gradient, leaving its value and state), warns and
    counts it in ``optimizer.nonfinite_skips``."""
    hidden = []
    for group in optimizer.param_groups:
        names = group.get("param_names") or []
        for index, p in enumerate(group["params"]):
            if p.grad is None or math.isfinite(extremes.get(p, 0.0)):
                continue
            name = repr(names[index]) if index < len(names) else f"{index} of its group"
            if group.get("on_nonfinite", "skip") == "raise":
                raise FloatingPointError(f"{type(optimizer).__name__}: non-finite gradient for parameter {name}")
            warnings.warn(f"{type(optimizer).__name__}: skipped a non-finite gradient for parameter {name}; its "
                          f"state is unchanged", stacklevel=4)
            hidden.append((p, p.grad))
            p.grad = None
    optimizer.nonfinite_skips = getattr(optimizer, "nonfinite_skips", 0) + len(hidden)
    try:
        yield
    finally:
        for p, grad in hidden:
            p.grad = grad


def guarded_step(optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.step()`` under the non-finite policy, reading its own gradients' extremes (one
    sync): for a torch optimizer stepped alone (layer-wise gradient release)."""
    if isinstance(optimizer, ChainOptimizer):
        optimizer.step()
        return
    guarded = guarded_parameters(optimizer)
    extremes = dict(zip(guarded, gradient_extremes([p.grad for p in guarded]))) if guarded else {}
    with nonfinite_hidden(optimizer, extremes):
        optimizer.step()


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
        extremes = self._gradient_extremes()
        for child in self.children.values():
            if isinstance(child, ChainOptimizer):
                child.step(gradient_extremes=extremes)
            else:
                with nonfinite_hidden(child, extremes):
                    child.step()
        return loss

    def _gradient_extremes(self) -> dict[torch.Tensor, float]:
        """``max |grad|`` of every guarded parameter of every child: one host sync per step."""
        guarded = [p for child in self.children.values() for p in guarded_parameters(child)]
        return dict(zip(guarded, gradient_extremes([p.grad for p in guarded]))) if guarded else {}

    @property
    def nonfinite_skips(self) -> int:
        """Parameter updates skipped for a non-finite gradient, in every child."""
        return sum(getattr(child, "nonfinite_skips", 0) for child in self.children.values())

    def state_dict(self) -> dict[str, Any]:
        return with_saved_classes(self, super().state_dict())

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        check_loadable(self, state_dict)
        # torch rebuilds self.param_groups and self.state; re-share them with the children.
        super().load_state_dict(state_dict)
        self.state = defaultdict(dict, self.state)
        self._link()
        restore_saved_state_dtypes(self, state_dict)

    def __repr__(self) -> str:
        inner = ", ".join(f"{role}={type(c).__name__}({sum(len(g['params']) for g in c.param_groups)} "
                          f"tensors)" for role, c in self.children.items())
        return f"RoutedOptimizer({inner})"
