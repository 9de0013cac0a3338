"""The step of a :class:`~fimkit.optim.chain.ChainOptimizer` as ``torch.compile`` traces it.

The eager step takes its decisions on the host: the non-finite guard reads ``max |G|`` of the
gradients (one sync per param group), the gradient unit moves when that leaves the comfortable
range, the step counter is a CPU tensor read with ``int()``, Alice refreshes its basis when
``is_refresh_step(t)``. Traced by dynamo, each of these is a graph break (a tensor read) or a
recompilation at every step (a Python int that changes; dynamo specialises on it): a compiled
training step had 19 graph breaks with RACS and 34 with Alice, against torch Adam's 1 (the
``backward()``).

The traceable step keeps every tensor operation in the graph and takes the same decisions with
the same code in two custom operators, which the graph calls on the host when it runs (dynamo
does not look inside them, so they neither break the graph nor recompile it):

- ``fimkit::host_step``, once per ``step()`` (once for all the children of a routed optimizer:
  :class:`HostRead`, :mod:`fimkit.optim.routed_traced`): one device-to-host copy of every
  guarded gradient's ``aminmax`` (the step's one host sync, as the routed optimizer's eager step
  makes), then, per parameter, what the eager step does: the ``on_nonfinite`` policy (raise, or
  count and warn), the gradient unit (moved in place on the state), the step counter. It
  returns ``(finite, step, unit)`` per parameter, on the host and on the device.
- ``fimkit::refresh_if_due``: a periodic refresh (Alice's subspace switch) at the steps it is
  due, read from the host copy of the step counter.

Blocks get the step counter as a 0-d tensor (``1 - beta ** t`` is the same expression). A
parameter whose gradient is skipped is computed like the others and masked: parameter and
state are written as ``torch.where(finite, new, old)``, so a skip leaves them bit-identical.
State is initialised by ``ChainOptimizer._init_group``, which dynamo runs eagerly at trace time
(as it does for torch's optimizers), so seeds and warnings are not traced either.

``ChainOptimizer.traceable_step``: ``None`` (default) takes this path while ``torch.compile``
traces and the eager one otherwise; ``True`` always (e.g. to run it eagerly in a test);
``False`` never (the eager step, with its graph breaks, also under ``torch.compile``).
"""

from __future__ import annotations

import itertools
import math
import weakref
from typing import Any, Callable

import torch
from torch import Tensor

from . import builtin_adam, guard
from .protocol import Group, matrix_shape, working_shape
from .units import UNIT_KEY, unit_exponent

#: the key of a param group copy under which blocks find the traceable step's context
CONTEXT = "fimkit.traced"

_HANDLES: dict[int, Callable[[], Any]] = {}
_COUNTER = itertools.count(1)


def register(obj: Any, *, weak: bool = False) -> int:
    """A handle (an int, which a custom operator can take) for ``obj``; :func:`lookup` returns it."""
    key = next(_COUNTER)
    if weak:
        _HANDLES[key] = weakref.ref(obj, lambda _, key=key: _HANDLES.pop(key, None))
    else:
        _HANDLES[key] = lambda: obj
    return key


def lookup(key: int) -> Any:
    obj = _HANDLES.get(key, lambda: None)()
    if obj is None:
        raise RuntimeError(f"fimkit.optim.traced: no live object has handle {key}")
    return obj


def wanted(optimizer) -> bool:
    """Whether ``optimizer.step()`` takes the traceable path now."""
    mode = optimizer.traceable_step
    return torch.compiler.is_compiling() if mode is None else bool(mode)


# ------------------------------------------------------------------------------ the host side
@torch.library.custom_op("fimkit::host_step", mutates_args=("steps", "units", "state"))
def _host_step(extremes: Tensor, steps: list[Tensor], units: list[Tensor], state: list[Tensor],
               optimizers: list[int], layout: list[int], keys: str, grad_mode: bool) -> tuple[Tensor, Tensor]:
    """Per parameter ``k`` (``layout[6k:6k+6]``: which of ``optimizers`` (handles) steps it, group
    index, index in the group, has a step counter, has a unit, how many of ``state`` are its
    tensors of non-zero degree, named by ``keys``, space-separated): the eager step's guard, unit
    and step counter. ``extremes`` is ``aminmax`` of every gradient (zeros for an unguarded one).
    An optimizer that is not a ChainOptimizer (a routed optimizer's torch child) has its guard
    only (:func:`fimkit.optim.child_guard.admit`). An exception raised here leaves the compiled
    step's ``no_grad`` without restoring the grad mode, so it is restored to ``grad_mode`` (the
    caller's) first."""
    try:
        return _host_rows_now([lookup(handle) for handle in optimizers], extremes, steps, units, state, layout,
                              keys.split())
    except BaseException:
        torch.set_grad_enabled(grad_mode)
        raise


def _host_rows_now(opts, extremes, steps, units, state, layout, keys) -> tuple[Tensor, Tensor]:
    from .child_guard import admit, count_skips  # child_guard imports chain, which imports this module

    count = extremes.shape[0]
    remote = [j for j, s in enumerate(steps) if s.device.type != "cpu"]  # read with the extremes
    remote_steps = [steps[j].reshape(1).to(device=extremes.device, dtype=extremes.dtype) for j in remote]
    host = torch.cat([extremes.reshape(-1), *remote_steps]).tolist()
    read = dict(zip(remote, host[2 * count:]))
    rows, next_step, next_unit, next_state = [], 0, 0, 0
    skipped = [0] * len(opts)
    for k in range(count):
        slot, group_index, index, has_step, has_unit, width = layout[6 * k:6 * k + 6]
        opt = opts[slot]
        group = opt.param_groups[group_index]
        low, high = host[2 * k], host[2 * k + 1]
        grad_max = max(-low, high) if math.isfinite(low) and math.isfinite(high) else math.inf
        if not hasattr(opt, "_gradient_unit"):  # a torch optimizer: the routed optimizer's guard of it
            finite = admit(opt, group, index, grad_max)
            skipped[slot] += not finite
            rows.append((float(finite), 0.0, 0.0))
            continue
        p = group["params"][index]
        view = dict(zip(keys[next_state:next_state + width], state[next_state:next_state + width]))
        next_state += width
        unit_tensor = units[next_unit] if has_unit else None
        next_unit += has_unit
        if unit_tensor is not None:
            view[UNIT_KEY] = unit_tensor
        finite, unit = True, unit_exponent(view)
        if group["on_nonfinite"] != "ignore":
            finite = guard.admit(opt, group, index, grad_max)
            if finite:
                unit = opt._gradient_unit(view, grad_max, *opt._unit_rules(p, group))
        if view.get(UNIT_KEY) is not unit_tensor:  # the unit moved: move_unit made a new tensor
            if unit_tensor is not None:
                unit_tensor.copy_(view[UNIT_KEY])
            else:
                opt.state[p][UNIT_KEY] = view[UNIT_KEY]  # a new key: the next call retraces
        t = 0.0
        if has_step:
            counter = steps[next_step]
            t = read[next_step] if next_step in read else float(counter)
            if finite:
                counter += 1
                t += 1
            next_step += 1
        rows.append((float(finite), t, float(unit)))
    for opt, skips in zip(opts, skipped):
        if not hasattr(opt, "_gradient_unit"):
            count_skips(opt, skips)
    on_host = torch.tensor(rows, dtype=torch.float64)
    return on_host, on_host.to(device=extremes.device, dtype=extremes.dtype, copy=True)


@_host_step.register_fake
def _(extremes, steps, units, state, optimizers, layout, keys, grad_mode):
    count = extremes.shape[0]
    return torch.empty(count, 3, dtype=torch.float64), extremes.new_empty(count, 3)


@torch.library.custom_op("fimkit::refresh_if_due", mutates_args=("state",))
def _refresh_if_due(row: Tensor, update: Tensor, state: list[Tensor], keys: str, block: int,
                    optimizer: int, group: int) -> None:
    """``block.refresh_if_due`` with the step counter of ``row`` (a host row of ``host_step``),
    unless the parameter's gradient was skipped."""
    finite, step = row.tolist()[:2]
    if finite:
        group_dict = lookup(optimizer).param_groups[group]
        lookup(block).refresh_if_due(update, dict(zip(keys.split(), state)), group_dict, int(step))


@_refresh_if_due.register_fake
def _(row, update, state, keys, block, optimizer, group):
    return None


def refresh_if_due(block, update: Tensor, state: dict[str, Tensor], group: Group) -> None:
    """Called by a block with periodic refreshes (``block.refresh_if_due(update, state, group,
    step)``, ``block.trace_handle``) when its step counter is a tensor: the decision and the
    refresh run on the host, in place on ``state``."""
    handle, group_index, row = group[CONTEXT]
    keys = [key for key in state if key != "step"]
    torch.ops.fimkit.refresh_if_due(row, update, [state[key] for key in keys], " ".join(keys),
                                    block.trace_handle, handle, group_index)


# ------------------------------------------------------------------------------ the graph side
def step(optimizer, grad_mode: bool = True) -> None:
    """``optimizer.step()`` without graph breaks (see the module's docstring), under ``no_grad``;
    ``grad_mode`` is the caller's."""
    params = live(optimizer)
    if params:
        read = HostRead()
        start = read.add(optimizer, params)
        apply(optimizer, params, *read.rows(grad_mode), start)


def live(optimizer) -> list[tuple[int, Group, int, Tensor]]:
    """``(group index, group, index, param)`` of every parameter the step takes, its state made."""
    params = []
    for group_index, group in enumerate(optimizer.param_groups):
        taken = guard.live_params(optimizer, group)
        if taken:
            optimizer._init_group(group)
        params += [(group_index, group, index, p) for index, p in taken]
    return params


def apply(optimizer, params, on_host: Tensor, on_device: Tensor, start: int = 0) -> None:
    """The updates of ``params`` (from :func:`live`), their host rows from ``start`` on."""
    for k, (group_index, group, index, p) in enumerate(params, start):
        context = {**group, CONTEXT: (optimizer._trace_handle, group_index, on_host[k])}
        _step_param(optimizer, p, optimizer.state[p], context, on_device[k], group["on_nonfinite"] != "ignore")


class HostRead:
    """The inputs of one ``fimkit::host_step`` for the parameters of one or more optimizers (a
    routed optimizer's children: one host read for the whole step)."""

    def __init__(self):
        self.pairs, self.steps, self.units, self.tensors, self.layout, self.keys = [], [], [], [], [], []
        self.handles: list[int] = []

    def __len__(self) -> int:
        return len(self.pairs)

    def add(self, optimizer, params, guard_handle: int | None = None) -> int:
        """Add ``params`` (``(group index, group, index, param)``) of ``optimizer``; returns the row
        of the first. With ``guard_handle`` (the optimizer's handle, from :func:`register`: a torch
        optimizer's parameters, every one guarded) the non-finite guard only, no unit or step
        counter."""
        guard_only = guard_handle is not None
        start, slot = len(self.pairs), len(self.handles)
        self.handles.append(guard_handle if guard_only else optimizer._trace_handle)
        device = (self.pairs[0] if self.pairs else params[0][3].grad).device
        wide = torch.float32 if device.type == "mps" else torch.float64  # no float64 on mps
        for group_index, group, index, p in params:
            grad = p.grad
            guarded = guard_only or group["on_nonfinite"] != "ignore"
            self.pairs.append(torch.stack(torch.aminmax(grad)).to(device=device, dtype=wide)
                              if guarded and grad.numel() else torch.zeros(2, dtype=wide, device=device))
            if guard_only:  # (its state is not read: the torch optimizer makes it while traced)
                self.layout += [slot, group_index, index, 0, 0, 0]
                continue
            state = optimizer.state[p]
            degrees = optimizer._unit_rules(p, group)[1]()[0] if guarded else {}
            moved = [key for key, degree in degrees.items()
                     if degree and key in state and state[key].is_floating_point()]
            self.layout += [slot, group_index, index, int("step" in state), int(UNIT_KEY in state), len(moved)]
            self.steps += [state["step"]] if "step" in state else []
            self.units += [state[UNIT_KEY]] if UNIT_KEY in state else []
            self.tensors += [state[key] for key in moved]
            self.keys += moved
        return start

    def rows(self, grad_mode: bool) -> tuple[Tensor, Tensor]:
        """Run the host operator: ``(finite, step, unit)`` per parameter, on the host and on the device."""
        return torch.ops.fimkit.host_step(torch.stack(self.pairs), self.steps, self.units, self.tensors,
                                          self.handles, self.layout, " ".join(self.keys), grad_mode)


def _times_power_of_two(x: Tensor, exponent: Tensor) -> Tensor:
    """``x * 2^exponent`` (a 0-d tensor), exact, in two factors that the dtype can hold."""
    chunk = math.frexp(torch.finfo(x.dtype).max)[1] - 2
    first = exponent.clamp(-chunk, chunk)
    return x * torch.exp2(first).to(x.dtype) * torch.exp2(exponent - first).to(x.dtype)


def _gradient(grad: Tensor, unit: Tensor, finite: Tensor | None) -> Tensor:
    """The gradient in its unit; 0 where it is skipped, so that the masked computation meets no
    NaN (an eigendecomposition of one raises)."""
    grad = _times_power_of_two(grad, -unit)
    return grad if finite is None else torch.where(finite, grad, 0.0)


def _write(target: Tensor, value: Tensor, finite: Tensor | None) -> None:
    target.copy_(value if finite is None else torch.where(finite, value, target))


def _step_param(optimizer, p: Tensor, state: dict[str, Tensor], group: Group, row: Tensor, guarded: bool) -> None:
    """The eager ``_step_param`` on copies, written back through :func:`_write`. (``state`` is
    ``optimizer.state[p]``, passed in: should a block break the graph and this run as a frame of
    its own, dynamo would otherwise identify ``p`` with a key of ``optimizer.state`` by position,
    not guard it, and step every parameter of the same shape with the first one's graph.)"""
    finite = row[0] > 0 if guarded else None
    step, unit = row[1], row[2]
    compute_dtype = torch.promote_types(p.dtype, torch.float32)
    if optimizer._takes_builtin_adam(p, group):
        grad = _gradient(p.grad.to(compute_dtype), unit, finite)
        moments = {key: state[key].to(compute_dtype, copy=True) for key in builtin_adam.STATE_DEGREES}
        weights = p.detach().to(compute_dtype, copy=True)
        builtin_adam.adam_step(weights, grad, moments["exp_avg"], moments["exp_avg_sq"], step,
                               lr=builtin_adam.learning_rate(group), betas=tuple(group["adam_betas"]),
                               eps=group["adam_eps"], weight_decay=group["adam_weight_decay"])
        for key, value in moments.items():
            _write(state[key], value, finite)
        _write(p, weights, finite)
        return

    m, n = matrix_shape(p.shape)
    grad = _gradient(p.grad.reshape(m, n).to(compute_dtype), unit, finite)
    weights = p.detach().reshape(m, n).to(compute_dtype, copy=True)
    param = weights
    m, n, transposed = working_shape(m, n, group["transpose_to_short_side"])
    if transposed:
        grad, param = grad.mT, param.mT
    working = {key: value if key == "step" or not value.is_floating_point() else value.to(compute_dtype, copy=True)
               for key, value in state.items()}
    update, coefficient = optimizer._run_chain(grad, param, working, group, step if "step" in state else None)
    degree = optimizer._units(group)[1]
    if degree:  # an update that is not scale-free: back to true units
        coefficient = coefficient * torch.exp2(unit * degree)
    for key, value in working.items():
        if value is not state[key]:
            _write(state[key], value, finite)
    if group["weight_decay"]:
        param.mul_(1 - group["lr"] * group["weight_decay"])
    if isinstance(coefficient, Tensor):
        param.addcmul_(update, coefficient.to(param.dtype))
    else:
        param.add_(update, alpha=coefficient)
    _write(p, weights.reshape(p.shape), finite)
