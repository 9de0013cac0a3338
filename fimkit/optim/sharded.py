"""DTensor parameters (FSDP2's ``fully_shard``): every fimkit optimizer computes exactly what it
computes on one process (issue 13). :func:`step_dtensor` picks one of two strategies per parameter.

**Element-wise steps: on the local shard.** When every entry's update depends on that entry
alone (a chain of ``Block.elementwise`` blocks, ``ChainOptimizer.elementwise``: fimkit's Adam;
and the built-in Adam of a matrix-only optimizer's vectors), :func:`step_local` runs the
unchanged step on the plain local shards of the weight, the gradient and the state: no
all-gather, the same arithmetic per entry as one process (bit-identical weights). The state is
DTensors of the parameter's mesh, cut as the parameter is (the chain's matrix view: a vector's
``(1, n)`` view is ``Shard(1)``), as torch's Adam keeps it under FSDP2, so
``torch.distributed.checkpoint`` saves it sharded and reshards it on load; plain tensors that
differ between ranks would be saved once, as if replicated. The step count and the unit's
exponent stay plain CPU scalars, the same on every rank. A unit that comes down reads the
state's maxima, MAX-reduced over the shards (:func:`max_over_shards`). Needs placements
``Shard(0)`` or ``Replicate`` (FSDP2, HSDP) and state that one process keeps untransposed
(``transpose_to_short_side`` off or a wide matrix); otherwise the step is gathered.

**Everything else: gather, compute replicated, keep the local shard.** For a parameter that is a
``DTensor``, :func:`step_gathered` all-gathers the whole gradient and the whole weight
(``full_tensor()``), runs the optimizer's unchanged step on these plain tensors, and copies this
rank's shard of the new weight back into the parameter's local tensor. Every rank runs the same
arithmetic on the same numbers, so:

- the result is the one-process result for the same gradient, for every optimizer (a matrix
  algorithm needs the whole matrix: RACS's fixed point, Alice's and GaLore's eigendecompositions
  and QR, Shampoo's roots, Muon's Newton-Schulz, SinkGD's balancing; a row or column statistic
  needs every row or column);
- the state is a set of plain tensors, identical on every rank (``torch.distributed.checkpoint``
  saves one copy of a replicated tensor and loads it on any number of ranks);
- randomness is identical: Alice's switch draws come from a generator seeded by ``(seed, step)``
  (:mod:`fimkit.lowrank.switching`), the seed from the global generator, which every rank seeds
  alike;
- the non-finite guard decides alike on every rank: :func:`extremes` reduces each gradient's
  ``max |G|`` (``inf`` for a NaN or an infinity) with a MAX all-reduce over the mesh, so a NaN in
  one rank's shard makes every rank skip that parameter.

**Cost.** Communication per step and parameter: on the local shard none (beyond the guard's);
gathered, an all-gather of G and of W (each the size of the parameter). Both: one all-reduce of
two numbers per parameter for the guard (one collective for all of them). Memory per rank: on
the local shard, the state's shard (1/N of it); gathered, the whole optimizer state (replicated)
and, transiently, one whole G and W. RACS and Adafactor are gathered: their row and column
statistics by partial sums are not done (DECISIONS DT2 says what stands in the way), nor is each
matrix's factorisation owned by one rank; the gathered step is the exact baseline such schemes
are tested against. ``optimizer.sharded_step = "gather"`` (an attribute, default ``"auto"``)
gathers element-wise steps too, for debugging.

``torch.compile`` of a step over DTensor parameters takes the eager step (graph breaks and all);
``traceable_step=True`` with DTensor parameters is a ``ValueError``.
"""

from __future__ import annotations

import contextvars
import math
import sys
from typing import Any

import torch
from torch import Tensor


def _dtensor_class() -> type | None:
    """``DTensor``, or None while ``torch.distributed.tensor`` is not imported (then no tensor is
    one, and a process that never shards pays no import and registers nothing)."""
    module = sys.modules.get("torch.distributed.tensor")
    return getattr(module, "DTensor", None)


def is_dtensor(tensor: Any) -> bool:
    cls = _dtensor_class()
    return cls is not None and isinstance(tensor, cls)


def holds_dtensor(optimizer: torch.optim.Optimizer) -> bool:
    """Whether any parameter of ``optimizer`` is a DTensor."""
    cls = _dtensor_class()
    return cls is not None and any(isinstance(p, cls) for g in optimizer.param_groups for p in g["params"])


def takes_eager_step(optimizer) -> bool:
    """Whether ``optimizer`` (a ChainOptimizer about to take its traceable step) must take the eager
    one: its parameters are DTensors, whose gathers and host reads do not fit the traced step (one
    graph, gradients read in a host operator). ``traceable_step=True`` then is a ``ValueError``
    rather than a failure inside the graph."""
    if not holds_dtensor(optimizer):
        return False
    if optimizer.traceable_step:
        raise ValueError(f"{type(optimizer).__name__}: traceable_step=True does not take DTensor parameters "
                         f"(FSDP2's fully_shard); leave traceable_step=None (the eager step, also under "
                         f"torch.compile) or False")
    return True


# ------------------------------------------------------------------------- the guard
def extremes(tensors: list[Tensor]) -> list[float]:
    """``max |x|`` of every tensor, whole (over every rank's shard for a DTensor), ``inf`` for one
    with a NaN or an infinity, with one host sync for all: the non-finite guard's numbers, the
    same on every rank. Every rank of each DTensor's mesh must call it with the same list."""
    wide = torch.float64 if tensors[0].device.type != "mps" else torch.float32  # no float64 on mps
    rows = [_local_pair(t, wide) for t in tensors]
    # Non-finite entries become inf before the reduction: MAX over NaN is not portable, over inf it is.
    by_mesh: dict[int, list[int]] = {}
    for index, t in enumerate(tensors):
        if is_dtensor(t):
            by_mesh.setdefault(id(t.device_mesh), []).append(index)
    for indices in by_mesh.values():
        mesh = tensors[indices[0]].device_mesh
        block = torch.stack([rows[i] for i in indices])
        block = torch.where(block.isfinite(), block, torch.full_like(block, math.inf))
        for dim in range(mesh.ndim):  # Shard or Replicate on each mesh dimension: MAX is right for both
            torch.distributed.all_reduce(block, op=torch.distributed.ReduceOp.MAX, group=mesh.get_group(dim))
        for row, i in enumerate(indices):
            rows[i] = block[row]
    pairs = torch.stack([row.to(rows[0].device) for row in rows]).tolist()  # state may span devices
    return [max(pair) if all(map(math.isfinite, pair)) else math.inf for pair in pairs]


def _local_pair(t: Tensor, wide: torch.dtype) -> Tensor:
    """``(-min, max)`` of this rank's part of ``t`` (zeros when it holds none)."""
    if is_dtensor(t):
        t = _reduced(t).to_local()
    if not t.numel():
        return t.new_zeros(2, dtype=wide)
    low, high = torch.aminmax(t.detach())
    return torch.stack((-low, high)).to(wide)


def _reduced(t):
    """``t`` with any pending (``Partial``) sum carried out, so that its local parts are entries."""
    from torch.distributed.tensor import Replicate

    if not any(p.is_partial() for p in t.placements):
        return t
    return t.redistribute(t.device_mesh, [Replicate() if p.is_partial() else p for p in t.placements])


#: the mesh of the DTensor parameter whose local shard is being stepped (:func:`step_local`): a
#: host decision read from that shard's state (a unit's descent room) is reduced over it
_SHARD_MESH: contextvars.ContextVar = contextvars.ContextVar("fimkit_shard_mesh", default=None)


def max_over_shards(values: Tensor) -> Tensor:
    """``values`` (one number per state tensor) MAX-reduced over the ranks holding the other shards
    of the parameter being stepped on its shard; ``values`` itself outside such a step."""
    mesh = _SHARD_MESH.get()
    if mesh is None:
        return values
    reduced = values.to(mesh.device_type, copy=True)  # NCCL reduces device tensors only
    for dim in range(mesh.ndim):
        torch.distributed.all_reduce(reduced, op=torch.distributed.ReduceOp.MAX, group=mesh.get_group(dim))
    return reduced.to(values.device)


# -------------------------------------------------------------------------- the step
def step_dtensor(optimizer, p, group: dict, grad_max: float | None) -> None:
    """``optimizer``'s step of the DTensor parameter ``p``: on its local shard when the step is
    element-wise and the shard layout allows it (:func:`shard_layout`), else gathered."""
    layout = shard_layout(optimizer, p, group)
    if layout is None:
        step_gathered(optimizer._step_param, optimizer.state, p, group, grad_max)
    else:
        step_local(optimizer._step_param, optimizer.state, p, group, grad_max, *layout)


def shard_layout(optimizer, p, group: dict):
    """``(shape, placements)`` of ``p``'s state as DTensors when ``optimizer`` steps ``p`` on its
    local shard, None when it gathers. The shard path needs an element-wise step (the built-in
    Adam, or a chain of ``Block.elementwise`` blocks: fimkit's Adam), ``p``'s placements
    ``Shard(0)`` or ``Replicate`` (FSDP2's, HSDP's: a shard of the matrix view is then a block of
    rows, or of a vector's entries), and state that one process keeps untransposed, so that the
    sharded state is one process's state cut as the parameter is. ``optimizer.sharded_step =
    "gather"`` forces the gathered step (for debugging)."""
    from torch.distributed.tensor import Shard

    from .protocol import matrix_shape, working_shape

    if getattr(optimizer, "sharded_step", "auto") == "gather" or p.ndim == 0:
        return None
    if not all(pl.is_replicate() or pl.is_shard(0) for pl in p.placements):
        return None
    if optimizer._takes_builtin_adam(p, group):
        return tuple(p.shape), tuple(p.placements)
    m, n = matrix_shape(p.shape)
    if not optimizer.elementwise or working_shape(m, n, group["transpose_to_short_side"])[2]:
        return None
    # the chain keeps state in the matrix view: a vector's entries are its columns
    dim = 0 if p.ndim >= 2 else 1
    return (m, n), tuple(Shard(dim) if pl.is_shard() else pl for pl in p.placements)


def step_local(step_param, state: dict, p, group: dict, grad_max: float | None, shape: tuple[int, ...],
               placements: tuple) -> None:
    """One step of the DTensor parameter ``p`` on its local shard alone: ``step_param(local, group,
    grad_max)`` on the plain local tensor (written in place), with ``p``'s gradient's local shard
    and the local shards of its state; state tensors come back as DTensors of the global
    ``shape`` cut as ``placements`` (what ``torch.distributed.checkpoint`` saves sharded: a plain
    tensor that differs between ranks would be saved once, as if replicated). ``grad_max`` is the
    whole gradient's (:func:`extremes`), so the guard and the unit decide alike on every rank."""
    from torch.distributed.tensor import DTensor

    local = p.detach().to_local()  # shares p's storage: the step writes the new weights into it
    grad = _reduced(p.grad)
    if tuple(grad.placements) != tuple(p.placements):
        grad = grad.redistribute(p.device_mesh, p.placements)
    local.grad = grad.to_local()
    own = state[p]
    views = {key: value.to_local() if is_dtensor(value) else value for key, value in own.items()}
    state[local] = views
    token = _SHARD_MESH.set(p.device_mesh)
    try:
        step_param(local, group, grad_max)
    finally:
        _SHARD_MESH.reset(token)
        del state[local]
    stride = tuple(math.prod(shape[i + 1:]) for i in range(len(shape)))
    for key, value in views.items():
        if isinstance(value, Tensor) and value.ndim:  # a per-entry state tensor (step, unit: 0-d)
            if value.ndim != len(shape):
                raise RuntimeError(f"state {key!r} of shape {tuple(value.shape)} is not per entry of a "
                                   f"parameter whose state has shape {shape}; the step is not element-wise")
            value = DTensor.from_local(value, p.device_mesh, placements, run_check=False, shape=shape,
                                       stride=stride)
        own[key] = value


def step_gathered(step_param, state: dict, p: Tensor, group: dict, grad_max: float | None) -> None:
    """One step of the DTensor parameter ``p``: ``step_param(proxy, group, grad_max)`` (the
    optimizer's own step of a plain parameter) on a plain ``proxy`` holding the whole weight and
    gradient, whose state is ``p``'s own (``state``, the optimizer's ``state`` mapping; the same
    dict object, so what the step creates or changes is ``p``'s). Then this rank's shard of the
    new weight goes back into ``p``."""
    proxy = p.detach().full_tensor()  # a plain tensor of its own: the step writes it in place
    proxy.grad = _reduced(p.grad).full_tensor()
    state[proxy] = state[p]
    try:
        step_param(proxy, group, grad_max)
    finally:
        del state[proxy]
    local = p.detach().to_local()
    local.copy_(local_shard(proxy, p))


def local_shard(whole: Tensor, like) -> Tensor:
    """This rank's part of the plain tensor ``whole``, laid out as the DTensor ``like`` (its mesh
    and placements; no communication: every rank holds ``whole``)."""
    from torch.distributed.tensor import distribute_tensor

    shard = distribute_tensor(whole, like.device_mesh, like.placements, src_data_rank=None).to_local()
    if shard.shape != like.to_local().shape:  # a layout distribute_tensor does not reproduce
        raise RuntimeError(f"the local shard of a DTensor of shape {tuple(like.shape)} has shape "
                           f"{tuple(like.to_local().shape)}, its placements {like.placements} give "
                           f"{tuple(shard.shape)}")
    return shard
