"""Gradient units: every optimizer takes gradients of any finite scale (1e-30 to 1e30 in float32).

A second-moment statistic of a gradient with entries near 1e20 is 1e40, past float32's largest
number (3.4e38); near 1e-20 it is 1e-40, below its smallest normal one. So each parameter's
state is kept in a **unit** ``2^e`` of the gradient: the chain hands its blocks ``G / 2^e``, and a
state tensor that scales as ``G^k`` (its *degree*: 1 for a momentum, 2 for a second moment, 0 for
a basis or the norm of a scale-free direction, declared by the block that owns it) holds its
value divided by ``2^(k e)``. Powers of two only change exponents, so all of this is exact.

The unit moves only when a gradient leaves the comfortable range (``[2^-21, 2^21]`` relative to
it in float32, :func:`comfort`), which ordinary training does not: then ``e`` stays 0, no state
key is added and not one bit of any result changes. The decision is made on the host from the
gradient's extremes that the non-finite guard already reads (no extra sync). When the unit
moves, state is re-expressed in the new one and ``state["grad_unit"]`` (an int64 on the CPU)
records ``e``; it comes down again (back to 0 after a burst of huge gradients) only as fast as
the state's own magnitudes allow, which costs one sync on those steps.

- An optimizer whose update is exactly invariant to the gradient's scale (every block
  ``scale_equivariant``: RACS, SWAN, SinkGD, Muon) follows the gradient both ways: its updates are
  then the same for ``c G`` at every finite ``c``, bit for bit when ``c`` is a power of two.
- Any other optimizer has an absolute ``eps`` (Adam's, SOAP's, ...) that sets a scale of its own,
  so its unit never goes below 1 (a tiny gradient meets ``eps`` as the algorithm says) and rises
  only to keep statistics of huge gradients (beyond 2e6 in float32) finite; ``eps`` then acts
  relative to the unit, which changes the update by about ``eps / sqrt(v)``, as at an ordinary
  scale.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .sharded import extremes, max_over_shards

#: the state key of the unit's exponent (absent: 0, the ordinary case)
UNIT_KEY = "grad_unit"
#: a state tensor is rescaled in steps of at most 2^CHUNK (a float32 scalar holds 2^127 at most)
CHUNK = 60


def comfort(dtype: torch.dtype) -> int:
    """log2 of the gradient magnitudes a unit is kept for: a sixth of the dtype's exponent range
    (21 for float32 and bfloat16: gradients up to 2e6, their fourth powers, as in ``||s||^2`` of
    RACS's fixed point, still far from overflow; 170 for float64)."""
    return (math.frexp(torch.finfo(dtype).max)[1] - 1) // 6


def unit_exponent(state: dict[str, Tensor]) -> int:
    unit = state.get(UNIT_KEY)
    return 0 if unit is None else int(unit)  # an int64 CPU tensor: no device sync


def target_exponent(current: int, grad_max: float, follows_down: bool, limit: int) -> int:
    """The unit for a gradient whose largest magnitude is ``grad_max`` (a host float), with
    ``limit = comfort(dtype)``.

    ``follows_down`` (an exactly scale-invariant update): unchanged while ``grad_max / 2^current``
    lies in ``[2^-limit, 2^limit]``, else the exponent that brings ``grad_max`` to ``[0.5, 1)``.
    Otherwise the smallest unit (at least 1) that keeps ``grad_max / 2^e <= 2^limit``, with slack:
    0 for every gradient up to ``2^limit``, so eps keeps its meaning wherever it can matter.
    """
    if not grad_max > 0 or not math.isfinite(grad_max):
        return current
    top = math.frexp(grad_max)[1]  # grad_max in [2^(top - 1), 2^top)
    if follows_down:
        return current if -limit <= top - 1 - current < limit else top
    if top <= limit:
        return 0
    return current if top - limit <= current <= top else top - limit // 2


def comfortable(current: int, grad_max: float, limit: int) -> bool:
    """Whether the unit stays as it is, whatever the optimizer (the ordinary case, decided without
    walking the chain)."""
    return target_exponent(current, grad_max, True, limit) == current and (
        current == 0 or target_exponent(current, grad_max, False, limit) == current)


def descent_room(state: dict[str, Tensor], degrees: dict[str, float], limit: int) -> float:
    """How far (in powers of two) the unit may come down before a state tensor of degree ``k``
    exceeds ``2^(k (limit + 10))``, as large as a statistic of gradients somewhat beyond the
    comfortable range (so derived quantities, a bias correction, a norm, stay finite). Reads the
    state's magnitudes: one host sync, only when the unit comes down (after huge gradients)."""
    tensors = [(degree, state[key]) for key, degree in degrees.items()
               if degree > 0 and key in state and state[key].is_floating_point()]
    if not tensors:
        return math.inf
    # an empty tensor counts as 0 (no room taken); the maxima of a shard's state are taken over
    # every shard (fimkit.optim.sharded), so every rank moves the unit alike
    maxima = max_over_shards(torch.stack([t.abs().amax().double().cpu() if t.numel() else
                                          torch.zeros((), dtype=torch.float64) for _, t in tensors])).tolist()
    room = math.inf
    for (degree, _), value in zip(tensors, maxima):
        if value > 0:
            room = min(room, (degree * (limit + 10) - math.log2(value)) / degree)
    return room


def rescale(tensor: Tensor, exponent: int) -> None:
    """In place ``tensor * 2^exponent``, exact, saturating at the dtype's largest finite value."""
    while exponent:
        step = max(-CHUNK, min(CHUNK, exponent))
        tensor.mul_(2.0 ** step)
        exponent -= step
    if tensor.is_floating_point():
        finfo = torch.finfo(tensor.dtype)
        tensor.nan_to_num_(nan=0.0, posinf=finfo.max, neginf=-finfo.max)


def move_unit(state: dict[str, Tensor], degrees: dict[str, float], target: int, limit: int) -> None:
    """Re-express ``state`` (in its unit ``2^old``) in the unit ``2^target``, or as close to it as
    :func:`descent_room` allows: a tensor of degree ``k`` is multiplied by ``2^(k (old - new))``."""
    old = unit_exponent(state)
    new = target
    if target < old:
        room = descent_room(state, degrees, limit)
        new = target if room == math.inf else max(target, old - math.floor(room)) if room >= 1 else old
    if new == old:
        return
    for key, degree in degrees.items():
        if degree and key in state and state[key].is_floating_point():
            rescale(state[key], int(round(degree * (old - new))))
    state[UNIT_KEY] = torch.tensor(new, dtype=torch.int64)


def scaled(tensor: Tensor, exponent: int) -> Tensor:
    """``tensor * 2^exponent`` as a new tensor (exact)."""
    out = tensor * 2.0 ** max(-CHUNK, min(CHUNK, exponent))
    rescale(out, exponent - max(-CHUNK, min(CHUNK, exponent)))
    return out


def gradient_extremes(grads: list[Tensor]) -> list[float]:
    """``max |G|`` of every gradient (``inf`` for one with a NaN or an infinity), with one host sync
    for all of them: the non-finite guard and the units read the same numbers
    (:func:`fimkit.optim.sharded.extremes`, which also reduces a DTensor's over the ranks)."""
    return extremes(grads)