"""The non-finite policy for the children of a routed optimizer that are torch optimizers (the
Adam of embeddings, norms and biases), which have none of their own: a parameter with a
non-finite gradient is hidden from the child for that step, so its value and state stay."""

from __future__ import annotations

import contextlib
import math
import warnings

import torch

from .chain import ChainOptimizer
from .matrix_views import matrix_views
from .units import gradient_extremes


def guarded(optimizer: torch.optim.Optimizer) -> list[tuple[int, dict, int, torch.Tensor]]:
    """``(group index, group, index, param)`` of the parameters with a dense gradient whose
    group's policy is not ``"ignore"`` (the compiled step, ``fimkit.optim.routed_traced``, needs
    where each is)."""
    return [(group_index, group, index, p) for group_index, group in enumerate(optimizer.param_groups)
            if group.get("on_nonfinite", "skip") != "ignore"
            for index, p in enumerate(group["params"]) if p.grad is not None and not p.grad.is_sparse]


def guarded_parameters(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The parameters of :func:`guarded`."""
    return [p for *_, p in guarded(optimizer)]


@contextlib.contextmanager
def nonfinite_hidden(optimizer: torch.optim.Optimizer, extremes: dict[torch.Tensor, float]):
    """Apply each group's non-finite policy to a torch optimizer's step: ``"raise"`` raises
    ``FloatingPointError`` naming the parameter, ``"skip"`` sets its gradient aside for the step
    (torch optimizers skip a parameter without gradient, leaving its value and state), warns and
    counts it in ``optimizer.nonfinite_skips``."""
    hidden = []
    for group in optimizer.param_groups:
        for index, p in enumerate(group["params"]):
            if p.grad is None or admit(optimizer, group, index, extremes.get(p, 0.0), stacklevel=5):
                continue
            hidden.append((p, p.grad))
            p.grad = None
    count_skips(optimizer, len(hidden))
    try:
        yield
    finally:
        for p, grad in hidden:
            p.grad = grad


def admit(optimizer: torch.optim.Optimizer, group: dict, index: int, grad_max: float, stacklevel: int = 4) -> bool:
    """The policy of ``group`` for its parameter ``index`` whose gradient has ``max |G| =
    grad_max``: True to step it; ``"raise"`` raises ``FloatingPointError`` naming it; otherwise
    (``"skip"``) warn and say False. The eager step and the compiled one's host operator
    (``fimkit.optim.traced``) both decide with this."""
    if math.isfinite(grad_max):
        return True
    names = group.get("param_names") or []
    name = repr(names[index]) if index < len(names) else f"{index} of its group"
    if group.get("on_nonfinite", "skip") == "raise":
        raise FloatingPointError(f"{type(optimizer).__name__}: non-finite gradient for parameter {name}")
    warnings.warn(f"{type(optimizer).__name__}: skipped a non-finite gradient for parameter {name}; its "
                  f"state is unchanged", stacklevel=stacklevel)
    return False


def count_skips(optimizer: torch.optim.Optimizer, skips: int) -> None:
    optimizer.nonfinite_skips = getattr(optimizer, "nonfinite_skips", 0) + skips


def guarded_step(optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.step()`` under the non-finite policy, reading its own gradients' extremes (one
    sync): for a torch optimizer stepped alone (layer-wise gradient release)."""
    if isinstance(optimizer, ChainOptimizer):
        with matrix_views(optimizer):
            optimizer.step()
        return
    guarded = guarded_parameters(optimizer)
    extremes = dict(zip(guarded, gradient_extremes([p.grad for p in guarded]))) if guarded else {}
    with nonfinite_hidden(optimizer, extremes):
        optimizer.step()
