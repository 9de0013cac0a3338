"""The non-finite guard of a :class:`~fimkit.optim.chain.ChainOptimizer` step: which parameters
a step takes, and each param group's ``on_nonfinite`` policy for a gradient that is not finite
(``"skip"``: leave parameter and state untouched, count and warn; ``"raise"``; ``"ignore"``).

The eager step reads every gradient's ``max |G|`` to the host once per param group
(:func:`fimkit.optim.units.gradient_extremes`); the traceable step
(:mod:`fimkit.optim.traced`) once per step, in its host operator. Both apply :func:`admit`.
"""

from __future__ import annotations

import math
import warnings

from torch import Tensor

from .protocol import Group


def live_params(optimizer, group: Group) -> list[tuple[int, Tensor]]:
    """``(index, param)`` of the group's parameters with a gradient (a sparse one refused), and
    the group's missing hyperparameters filled (a group loaded from a checkpoint older than them)."""
    live = [(i, p) for i, p in enumerate(group["params"]) if p.grad is not None]
    for index, p in live:
        if p.grad.is_sparse:
            raise ValueError(f"{type(optimizer).__name__}: parameter {optimizer._param_name(group, index)} "
                             f"has a sparse gradient, which fimkit optimizers do not support")
    missing = optimizer.defaults.keys() - group.keys() if live else ()
    if missing:
        group.update({key: optimizer.defaults[key] for key in missing})
    return live


def admit(optimizer, group: Group, index: int, grad_max: float | None) -> bool:
    """The group's policy for its parameter ``index`` whose gradient has ``max |G| = grad_max``
    (``None``: not read): True to step it; ``"raise"`` raises ``FloatingPointError``; ``"skip"``
    counts it in ``optimizer.nonfinite_skips``, warns, and says False."""
    if grad_max is None or math.isfinite(grad_max):
        return True
    name = optimizer._param_name(group, index)
    if group["on_nonfinite"] == "raise":
        raise FloatingPointError(f"{type(optimizer).__name__}: non-finite gradient for parameter {name}")
    optimizer.nonfinite_skips += 1
    warnings.warn(f"{type(optimizer).__name__}: skipped a non-finite gradient for parameter {name}; its "
                  f"state is unchanged", stacklevel=4)
    return False
