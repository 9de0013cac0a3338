"""What the fast steps of named chains share (issue 14): which tensors they take, and how a compiled
kernel is called, with the fallback when it cannot be compiled.

A fast step (``inplace_adam``, ``fused_adam``, ``fused_racs``) covers the plain case only: a
float32/float64 tensor (and gradient, and state, in its dtype and on its device), not a DTensor,
contiguous, with a gradient unit of 1 that is not about to move (``fimkit.optim.units``). Anything
else takes the per-block step, which handles every case.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from . import sharded, units
from .protocol import Group, matrix_shape, working_shape

#: compiled variants a kernel may have in one process (dynamo's default is 8 per function): a group
#: kernel compiles once per group composition, a static-shape kernel once per shape, and a process
#: that builds many optimizers (a sweep, a test session) would otherwise fall back to the eager step
RECOMPILE_LIMIT = 64


def plain_tensor(optimizer, p: Tensor, group: Group, grad_max: float | None, state_keys: tuple[str, ...],
                 transposed: bool = False) -> bool:
    """Whether ``p`` (admitted by the non-finite guard, its largest gradient entry ``grad_max``) is
    the plain case a fast step takes; ``transposed``: whether it may run on its transpose (a tall
    matrix under ``transpose_to_short_side``). Makes ``p``'s state when it has none yet."""
    if sharded.is_dtensor(p) or p.dtype not in (torch.float32, torch.float64) or not p.is_contiguous():
        return False
    if p.grad.dtype != p.dtype:
        return False
    m, n = matrix_shape(p.shape)
    if not transposed and working_shape(m, n, group["transpose_to_short_side"])[2]:
        return False
    state = optimizer.state[p]
    if not state:
        optimizer._fresh_state(p, group)
    if units.unit_exponent(state) != 0:
        return False
    if grad_max is not None and not units.comfortable(0, grad_max, optimizer._unit_rules(p, group)[0]):
        return False  # the per-block step moves the unit first
    return all(state[k].dtype == p.dtype and state[k].device == p.device for k in state_keys)


def recompile_room():
    """A context in which the compiled kernels may have :data:`RECOMPILE_LIMIT` variants (entered
    once per parameter group's step, not per call: the patch cost ~15 us a call)."""
    return torch._dynamo.config.patch(recompile_limit=max(RECOMPILE_LIMIT, torch._dynamo.config.recompile_limit))


def compiled_call(optimizer, kernel, arguments: tuple) -> bool:
    """``kernel()(*arguments)`` (inside :func:`recompile_room`); False, with ``optimizer.fused_step``
    turned off and one warning, when the kernel cannot be compiled here (nothing was computed:
    compiling comes before running)."""
    try:
        kernel()(*arguments)
    except (torch._dynamo.exc.TorchDynamoException, RuntimeError, OSError) as exc:  # not compilable here
        _switch_off(optimizer, exc, stacklevel=5)
        return False
    return True


def _switch_off(optimizer, exc: Exception, stacklevel: int) -> None:
    optimizer.fused_step = False
    first_line = str(exc).splitlines()[0] if str(exc) else ""
    warnings.warn(f"{type(optimizer).__name__}: fused_step=True could not compile its kernel here "
                  f"({type(exc).__name__}: {first_line}); taking the eager step", RuntimeWarning,
                  stacklevel=stacklevel + 1)
