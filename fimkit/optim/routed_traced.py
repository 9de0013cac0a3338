"""The step of a :class:`~fimkit.optim.routed.RoutedOptimizer` as ``torch.compile`` traces it.

The eager step reads every gradient's extremes with one ``.tolist()`` and hides a torch child's
parameter whose gradient is not finite (``p.grad = None`` for its step); torch's own step breaks
the graph on purpose before and after it (``_use_grad_for_differentiable``). Traced, that made
a compiled training step 4 graphs (3 breaks) against torch Adam's 2 (1 break, the
``backward()``).

Traced, the container makes one graph of the whole step, with one host read:

- one ``fimkit::host_step`` (:class:`fimkit.optim.traced.HostRead`) for every child: the
  ChainOptimizers' guard, units and step counters and the torch children's guard (raise, or warn
  and count in ``nonfinite_skips``, as in eager: :func:`fimkit.optim.child_guard.admit`);
- each ChainOptimizer child's traced updates (:func:`fimkit.optim.traced.apply`);
- each torch child's own step function without the ``_use_grad`` wrapper that breaks the graph
  (the container's step already runs under ``no_grad``; step hooks still run), on every
  parameter, and a guarded parameter's value and state written back as ``torch.where(finite,
  new, old)``: a skip leaves them bit-identical, as hiding the gradient does in eager.

Only torch children of the Adam family (``torch.optim.Adam``, ``AdamW``), not ``differentiable``
and without DTensor parameters, take this path: their state is made first, with their own
``_init_group`` (which dynamo runs eagerly), so that it can be written back. A parameter skipped
at its very first step keeps that fresh state (zeros), where eager makes none; its next step is
the same. The write-back costs a copy of the torch child's guarded parameters and state per
step. With any other child (or a ChainOptimizer child that takes its eager step) the container
takes the eager step, with its graph breaks, also under ``torch.compile``.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor
from torch.optim.optimizer import (_global_optimizer_post_hooks, _global_optimizer_pre_hooks,
                                   _use_grad_for_differentiable)

from . import sharded, traced
from .chain import ChainOptimizer
from .child_guard import guarded
from .matrix_views import views_in, views_matrices

#: torch optimizers whose ``_init_group`` this module calls (Adam's signature)
ADAM_FAMILY = (torch.optim.Adam, torch.optim.AdamW)

_HOOKED = torch.optim.Optimizer.profile_hook_step(lambda self: None).__code__
_USE_GRAD = _use_grad_for_differentiable(lambda self: None).__code__


def wanted(routed) -> bool:
    """Whether ``routed.step()`` takes this path now (while ``torch.compile`` traces it)."""
    return torch.compiler.is_compiling() and all(
        _chain_traceable(child) if isinstance(child, ChainOptimizer) else _maskable(child)
        for child in routed.children.values())


def _chain_traceable(child: ChainOptimizer) -> bool:
    """Traced, a ChainOptimizer child steps an N-d tensor of a ``non_matrix="flatten"`` group as
    its matrix itself (as the matrix view the eager container hands it); a group without
    ``non_matrix`` needs that view, which dynamo cannot take as a parameter."""
    viewed = views_matrices(child) and any(p.ndim > 2 for g in child.param_groups
                                           if views_in(g) and "non_matrix" not in g for p in g["params"])
    return traced.wanted(child) and not viewed and not child._takes_eager_step()  # DTensors: eagerly


def _maskable(child: torch.optim.Optimizer) -> bool:
    """An Adam-family torch child, not differentiable, without DTensor parameters (their guard
    reduces across ranks: the eager step's)."""
    return (isinstance(child, ADAM_FAMILY) and not child.defaults.get("differentiable", False)
            and not sharded.holds_dtensor(child))


def _own_step(cls: type):
    """``cls.step`` below torch's hook and ``_use_grad`` wrappers."""
    step = cls.step
    while getattr(step, "__code__", None) in (_HOOKED, _USE_GRAD):
        step = step.__wrapped__
    return step


def step(routed, grad_mode: bool) -> None:
    """``routed.step()`` in one graph (see the module's docstring), under ``no_grad``;
    ``grad_mode`` is the caller's (restored if the host operator raises)."""
    # The torch children's state is made first (Adam's _init_group, which dynamo runs eagerly):
    # made after a ChainOptimizer child's, dynamo's view of the state dict they all share misses
    # it, and the analysis diverges when dynamo restarts it.
    for child in routed.children.values():
        if not isinstance(child, ChainOptimizer):
            for group in child.param_groups:
                child._init_group(group, [], [], [], [], [], [])
    plans = [(name, child, traced.live(child) if isinstance(child, ChainOptimizer) else guarded(child))
             for name, child in routed.children.items()]
    read = traced.HostRead()
    starts = [(read.add(child, params, guard_handle=routed._guard_handles.get(name)) if params else 0)
              for name, child, params in plans]
    on_host, on_device = read.rows(grad_mode) if len(read) else (None, None)
    for (_, child, params), start in zip(plans, starts):  # in the children's order, within their hooks
        _hooks(child, _global_optimizer_pre_hooks.values(), child._optimizer_step_pre_hooks.values())
        if isinstance(child, ChainOptimizer):
            traced.apply(child, params, on_host, on_device, start)
        else:
            _masked_step(child, params, on_host, on_device, start)
        _hooks(child, child._optimizer_step_post_hooks.values(), _global_optimizer_post_hooks.values())


def _hooks(child, *hooks) -> None:
    """Step hooks, called as torch calls them around a child's ``step()`` (a pre-hook's new
    arguments are not taken: the container gives its children none)."""
    for hook in itertools.chain(*hooks):
        hook(child, (child,), {})


def _masked_step(child, params, on_host: Tensor | None, on_device: Tensor | None, start: int) -> None:
    """The torch child's own step on every parameter; a guarded one whose gradient is not finite
    gets its value and state back."""
    before = [(p, p.detach().clone(), {key: value.clone() for key, value in child.state[p].items()
                                       if isinstance(value, Tensor)}) for _, _, _, p in params]
    _own_step(type(child))(child)
    for k, (p, value, state) in enumerate(before, start):
        host, device = on_host[k, 0] > 0, on_device[k, 0] > 0  # a CPU step counter takes the host's
        for key, new in child.state[p].items():
            if isinstance(new, Tensor):
                finite = device if new.device == device.device else host
                new.copy_(torch.where(finite, new, state[key]))
        p.detach().copy_(torch.where(device, p, value))
