"""Matrix views for the routed optimizer: a matrix-only child steps an N-d tensor (a convolution
kernel routed with ``conv="matrix"``) as its matrix view ``(d0, d1 * ... * dk)``, sharing the
tensor's storage, with its gradient viewed alike and the state of that matrix (see
``fimkit.optim.routed``)."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch import Tensor

from .chain import ChainOptimizer, matrix_shape


def views_matrices(optimizer: torch.optim.Optimizer | type) -> bool:
    """Whether ``optimizer`` (an instance or class) runs its algorithm on 2-D tensors only, so
    that the routed optimizer hands it the matrix view of an N-d tensor."""
    cls = optimizer if isinstance(optimizer, type) else type(optimizer)
    return issubclass(cls, ChainOptimizer) and cls.matrix_only


def views_in(group: dict[str, Any]) -> bool:
    """Whether a matrix-only optimizer's ``group`` takes N-d tensors as matrices: its
    ``non_matrix`` is ``"flatten"``, or the optimizer has no ``non_matrix`` (then a matrix view
    is the only way it can take them)."""
    return group.get("non_matrix", "flatten") == "flatten"


def _matrix_view(p: Tensor) -> Tensor:
    """A 2-D leaf tensor sharing ``p``'s storage (a contiguous copy when ``p``'s strides do not
    allow a view, e.g. a channels-last kernel: written back after the step)."""
    shape = matrix_shape(p.shape)
    return p.detach().view(shape) if p.is_contiguous() else p.detach().reshape(shape).clone()


def _viewed(groups: list[dict[str, Any]], defaults: dict[str, Any]) -> list[dict[str, Any]]:
    """Copies of ``groups`` whose N-d tensors are matrix views where the group views them."""
    return [{**g, "params": [_matrix_view(p) if p.ndim > 2 else p for p in g["params"]]}
            if views_in({**defaults, **g}) else g for g in groups]


@contextlib.contextmanager
def matrix_views(optimizer: torch.optim.Optimizer, extremes: dict[Tensor, float] | None = None) -> Iterator[None]:
    """For the duration of a step (or a state check), every N-d tensor of a matrix-only child's
    viewing groups (:func:`views_in`) is replaced in its group by its matrix view, with the
    tensor's gradient (viewed), state and gradient extremes; afterwards the tensor is put back,
    the state it grew kept under it. The child only ever sees 2-D tensors there, so the view is
    the routing's, whatever the child does with N-d tensors itself."""
    if not views_matrices(optimizer):
        yield
        return
    swaps = []
    try:
        for group in optimizer.param_groups:
            if not views_in(group):
                continue
            for index, p in enumerate(group["params"]):
                if p.ndim <= 2:
                    continue
                view = _matrix_view(p)
                if p.grad is not None:
                    view.grad = p.grad.reshape(view.shape)
                optimizer.state[view] = optimizer.state[p]  # one dict: what the step adds is p's
                if extremes is not None and p in extremes:
                    extremes[view] = extremes[p]
                group["params"][index] = view
                swaps.append((group, index, p, view))
        yield
    finally:
        for group, index, p, view in reversed(swaps):
            group["params"][index] = p
            optimizer.state.pop(view, None)
            if not optimizer.state.get(p, True):  # no step happened: no empty entry left behind
                del optimizer.state[p]
            if view.untyped_storage().data_ptr() != p.untyped_storage().data_ptr():
                p.detach().copy_(view.reshape(p.shape))
            view.grad = None
            if extremes is not None:
                extremes.pop(view, None)


def add_group_viewing_matrices(optimizer: torch.optim.Optimizer, group: dict[str, Any]) -> None:
    """``optimizer.add_param_group(group)``; a matrix-only optimizer's viewing group is given the
    matrix view of each N-d tensor (its own check may refuse N-d tensors), and the tensors are
    put back at once."""
    if not views_matrices(optimizer):
        optimizer.add_param_group(group)
        return
    params = list(group["params"])
    optimizer.add_param_group(_viewed([group], optimizer.defaults)[0])
    optimizer.param_groups[-1]["params"] = params


def make_viewing_matrices(cls: type[torch.optim.Optimizer], groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    """``cls(groups)``; a matrix-only class sees the matrix view of each N-d tensor of a viewing
    group (:func:`views_in`), and the tensors are put back in its groups afterwards."""
    if not views_matrices(cls):
        return cls(groups)
    originals = [list(g["params"]) for g in groups]
    optimizer = cls(_viewed(groups, cls.default_hyperparameters()))
    for group, params in zip(optimizer.param_groups, originals):
        group["params"] = params
    return optimizer
