"""DTensor parameters (FSDP2's ``fully_shard``): every fimkit optimizer computes what it computes
on one process (issue 13). :func:`step_dtensor` picks one of two strategies per parameter.

**On the local shard: element-wise steps and partial sums.** :func:`step_local` runs the
optimizer's unchanged step on the plain local shards of the weight, the gradient and the state,
no all-gather, when every block of the chain either maps each entry by that entry alone
(``Block.elementwise``: fimkit's Adam; and the built-in Adam of a matrix-only optimizer's vectors)
or takes its sums, means, maxima and norms over rows, columns or the whole matrix through
:func:`reduction` (``Block.partial_sums``: RACS's fixed point, its ``(q s^T)^{-1/2}`` floor and
limiter norm; Adafactor's row and column sums of ``G*G``, their trace, its update RMS and weight
RMS). During the step :func:`reduction` is a :class:`~fimkit.optim.shard_reduction.ShardReduction`:
a reduction over the sharded index (a weight's rows, a vector's entries; the columns of a tall
matrix that RACS transposes to the short side, a decision taken on the whole shape) is this
rank's partial result, completed by an all-reduce over the mesh dimensions that shard the
parameter; one over the other index is complete already. Element-wise steps give one process's
weights bit for bit; partial sums within rounding (their sums are added in another order: 1e-7
relative after 10 steps, tested). State along the sharded index (Adam's moments, RACS's ``q`` of
a wide matrix, Adafactor's row statistic) is DTensors of the parameter's mesh cut as the parameter
is, as torch's Adam keeps it, so ``torch.distributed.checkpoint`` saves it sharded and reshards it
on load; state per index of the other side (RACS's ``s``, Adafactor's column statistic), computed
from completed reductions, is the same on every rank and stays a plain tensor, as do the step
count and the unit's exponent. Which state dimension is along the sharded index is read from the
optimizer's own state initialisation (on ``meta``, once per shape). A unit that comes down reads
the state's maxima, MAX-reduced over the shards (:func:`max_over_shards`). Needs placements
``Shard(0)`` or ``Replicate`` (FSDP2, HSDP); otherwise the step is gathered.

**Everything else: gather, compute replicated, keep the local shard.** For the other optimizers
(eigendecompositions, QR, SVD, Newton-Schulz, Sinkhorn balancing, Gram matrices: Alice, Alice-0,
GaLore, Fira, APOLLO, APOLLO-Mini, SOAP, Eigen-Adam, Shampoo, Muon, SWAN, SinkGD),
:func:`step_gathered` all-gathers the whole gradient and the whole weight (``full_tensor()``),
runs the optimizer's unchanged step on these plain tensors, and copies this rank's shard of the
new weight back into the parameter's local tensor. Every rank runs the same arithmetic on the
same numbers, so:

- the result is the one-process result for the same gradient, bit for bit;
- the state is a set of plain tensors, identical on every rank (``torch.distributed.checkpoint``
  saves one copy of a replicated tensor and loads it on any number of ranks);
- randomness is identical: Alice's switch draws come from a generator seeded by ``(seed, step)``
  (:mod:`fimkit.lowrank.switching`), the seed from the global generator, which every rank seeds
  alike;
- the non-finite guard decides alike on every rank: :func:`extremes` reduces each gradient's
  ``max |G|`` (``inf`` for a NaN or an infinity) with a MAX all-reduce over the mesh, so a NaN in
  one rank's shard makes every rank skip that parameter.

**Cost** per step and parameter. On the local shard: element-wise, no communication; RACS, 12
all-reduces of at most ``max(m, n) + 1`` numbers (per fixed-point iteration a maximum and a sum
over the sharded index, then the floor's mean and the limiter's norm); Adafactor, at most 4 (the column
sums, their trace, two RMS). Gathered: an all-gather of G and of W (each the size of the
parameter). All: one all-reduce of two numbers per parameter for the guard (one collective for all
of them). Memory per rank: on the local shard, the state's shard (1/N of it; RACS's and
Adafactor's per-column vectors whole); gathered, the whole optimizer state (replicated) and,
transiently, one whole G and W. Each matrix's factorisation is computed by every rank (not owned
by one, DECISIONS DT2). ``optimizer.sharded_step = "gather"`` (an attribute, default ``"auto"``)
gathers the steps on shards too, for debugging and as their exact baseline.

``torch.compile`` of a step over DTensor parameters takes the eager step (graph breaks and all);
``traceable_step=True`` with DTensor parameters is a ``ValueError``.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import weakref
from typing import Any

import torch
from torch import Tensor

from ..reductions import COLS, LOCAL, ROWS, Reduction
from .shard_reduction import ShardReduction


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
    same on every rank. Every rank of each DTensor's mesh must call it with the same list.

    min and max are finite iff every entry is (NaN propagates): one pass, no copy and no overflow,
    where ``isfinite(x).all()`` makes four passes and ``sum(dtype=float64)`` copies x to float64
    first (each costs ~40% of a RACS step on CPU).
    """
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


#: how the reductions of the step under way complete: :data:`fimkit.reductions.LOCAL`, or the
#: :class:`~fimkit.optim.shard_reduction.ShardReduction` of the DTensor parameter whose local shard
#: :func:`step_local` is stepping (a module global, not a ContextVar: dynamo traces a global read
#: inside a compiled step, where ``ContextVar.get`` is a graph break)
_REDUCTION: list[Reduction] = [LOCAL]


def reduction() -> Reduction:
    """The :class:`~fimkit.reductions.Reduction` that the step under way completes its row, column
    and whole-matrix reductions with (``Block.partial_sums``): across the shards of the parameter
    being stepped on its shard, else :data:`~fimkit.reductions.LOCAL`."""
    return _REDUCTION[-1]


def max_over_shards(values: Tensor) -> Tensor:
    """``values`` (one number per state tensor) MAX-reduced over the ranks holding the other shards
    of the parameter being stepped on its shard; ``values`` itself outside such a step."""
    current = _REDUCTION[-1]
    if current.local:
        return values
    reduced = values.to(current.device, copy=True)  # NCCL reduces device tensors only
    return current.all_reduce(reduced, torch.distributed.ReduceOp.MAX).to(values.device)


# -------------------------------------------------------------------------- the step
def step_dtensor(optimizer, p, group: dict, grad_max: float | None) -> None:
    """``optimizer``'s step of the DTensor parameter ``p``: on its local shard when the step allows
    it (:func:`local_plan`), else gathered."""
    plan = local_plan(optimizer, p, group)
    if plan is None:
        step_gathered(optimizer._step_param, optimizer.state, p, group, grad_max)
    else:
        step_local(optimizer, p, group, grad_max, plan)


@dataclasses.dataclass(frozen=True)
class LocalPlan:
    """How a DTensor parameter steps on its local shard: the built-in Adam of a matrix-only
    optimizer's tensor (state shaped as ``p``, cut as ``p``), or the chain on the shard's matrix
    view, ``transposed`` as one process would (decided on the whole shape), whose ``axis`` index
    (``ROWS`` or ``COLS``) is sharded."""

    builtin: bool
    transposed: bool = False
    axis: str = ROWS


def local_plan(optimizer, p, group: dict) -> LocalPlan | None:
    """How ``optimizer`` steps the DTensor ``p`` on its local shard, None when it gathers. The shard
    path needs ``p``'s placements ``Shard(0)`` or ``Replicate`` (FSDP2's, HSDP's: a shard of the
    matrix view is then a block of rows, or of a vector's entries), and a step that is element-wise
    (the built-in Adam; a chain of ``Block.elementwise`` blocks: fimkit's Adam) or whose other
    blocks complete their reductions across shards (``Block.partial_sums``: RACS, Adafactor).
    ``optimizer.sharded_step = "gather"`` forces the gathered step (for debugging)."""
    from .protocol import matrix_shape, working_shape

    if getattr(optimizer, "sharded_step", "auto") == "gather" or p.ndim == 0:
        return None
    if not all(pl.is_replicate() or pl.is_shard(0) for pl in p.placements):
        return None
    if optimizer._takes_builtin_adam(p, group):
        return LocalPlan(builtin=True)
    if not steps_on_shards(optimizer):
        return None
    _, _, transposed = working_shape(*matrix_shape(p.shape), group["transpose_to_short_side"])
    rows_sharded = (p.ndim >= 2) != transposed  # a vector's entries are its (1, n) view's columns
    return LocalPlan(builtin=False, transposed=transposed, axis=ROWS if rows_sharded else COLS)


def steps_on_shards(optimizer) -> bool:
    """Whether every block of ``optimizer``'s chain runs on a block of rows (``elementwise`` or
    ``partial_sums``)."""
    blocks = getattr(optimizer, "blocks", ())
    return bool(blocks) and all(block.elementwise or block.partial_sums for block in blocks)


def step_local(optimizer, p, group: dict, grad_max: float | None, plan: LocalPlan) -> None:
    """One step of the DTensor parameter ``p`` on its local shard alone: ``optimizer._step_param``
    of the plain local tensor (written in place; its transposed matrix view when ``plan`` says so),
    with ``p``'s gradient's local shard and the local shards of its state, while :func:`reduction`
    completes the chain's reductions across the shards. State tensors along the sharded index come
    back as DTensors of the whole shape cut as ``p`` is (what ``torch.distributed.checkpoint`` saves
    sharded and reshards on load); the others (one number, or per index of the unsharded side:
    computed from completed reductions, the same on every rank) stay plain. ``grad_max`` is the
    whole gradient's (:func:`extremes`), so the guard and the unit decide alike on every rank."""
    local = p.detach().to_local()  # shares p's storage: the step writes the new weights into it
    grad = _reduced(p.grad)
    if tuple(grad.placements) != tuple(p.placements):
        grad = grad.redistribute(p.device_mesh, p.placements)
    local_grad = grad.to_local()
    if plan.transposed:  # the chain must not decide on the shard's shape: one process's transpose
        local, local_grad = local.reshape(local.shape[0], -1).mT, local_grad.reshape(local.shape[0], -1).mT
    if group["transpose_to_short_side"]:
        group = {**group, "transpose_to_short_side": False}
    local.grad = local_grad
    own = optimizer.state[p]
    optimizer.state[local] = {key: value.to_local() if is_dtensor(value) else value for key, value in own.items()}
    groups = [p.device_mesh.get_group(d) for d, pl in enumerate(p.placements) if not pl.is_replicate()]
    _REDUCTION.append(ShardReduction(groups, plan.axis, device=p.device_mesh.device_type))
    try:
        optimizer._step_param(local, group, grad_max)
    finally:
        _REDUCTION.pop()
        views = optimizer.state.pop(local)
    sharded_dims = _sharded_state_dims(optimizer, p, group, plan, views)
    for key, value in views.items():
        if key in sharded_dims:
            own[key] = _as_sharded(value, p, sharded_dims[key])
        else:
            own[key] = value


def _as_sharded(local: Tensor, p, dim: int):
    """The DTensor of ``p``'s mesh whose local shard is ``local``, sharded on its dimension ``dim``
    (of whole length ``p.shape[0]``, the length of ``p``'s sharded dimension) where ``p`` is."""
    from torch.distributed.tensor import DTensor, Shard

    shape = list(local.shape)
    shape[dim] = p.shape[0]
    stride = tuple(math.prod(shape[i + 1:]) for i in range(len(shape)))
    placements = [pl if pl.is_replicate() else Shard(dim) for pl in p.placements]
    return DTensor.from_local(local, p.device_mesh, placements, run_check=False, shape=tuple(shape), stride=stride)


#: per optimizer: the sharded dimension of each state key, per (working shape, sharded index, keys)
_STATE_DIMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _sharded_state_dims(optimizer, p, group: dict, plan: LocalPlan, state: dict) -> dict[str, int]:
    """``{state key: its dimension along the sharded index}`` for the state tensors of ``p``'s
    shard that are cut as ``p`` is. The built-in Adam's state is shaped as ``p``. A chain's is found
    from its own state initialisation (on the ``meta`` device: nothing allocated), once per shape:
    a dimension that grows with the sharded index is along it; a tensor none of whose dimensions
    grows is one number or per index of the other side (whole on every rank)."""
    from .protocol import matrix_shape, working_shape

    if plan.builtin:
        return {key: 0 for key, value in state.items() if isinstance(value, Tensor) and value.ndim}
    m, n, _ = working_shape(*matrix_shape(p.shape), plan.transposed)
    key = (m, n, plan.axis, tuple(sorted(state)))
    cache = _STATE_DIMS.setdefault(optimizer, {})
    if key not in cache:
        dtype = torch.promote_types(p.dtype, torch.float32)
        grown = (m + 1, n) if plan.axis == ROWS else (m, n + 1)
        with torch.random.fork_rng(devices=[]):
            base = optimizer._init_state(m, n, torch.empty(m, n, device="meta"), group, dtype)
            bigger = optimizer._init_state(*grown, torch.empty(*grown, device="meta"), group, dtype)
        dims = {}
        for name, value in base.items():
            changed = [d for d, (a, b) in enumerate(zip(value.shape, bigger[name].shape)) if a != b]
            if len(changed) > 1:
                raise RuntimeError(f"{type(optimizer).__name__}'s state {name!r} of shape {tuple(value.shape)} "
                                   f"grows in {len(changed)} dimensions with the sharded index; it cannot be "
                                   f"stepped on a shard (Block.partial_sums promises state per row, column or entry)")
            if changed:
                dims[name] = changed[0]
        cache[key] = dims
    return cache[key]


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
