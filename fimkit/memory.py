"""Optimizer memory: measured from live state, predicted from shapes, and a whole model's budget.

- :func:`state_numel`, :func:`state_bytes`: what a live optimizer holds (measured).
- :func:`predicted_state`: the state an optimizer *would* allocate for a parameter shape, from
  its own public ``state_shapes(m, n)`` (read from its state initialisation on the ``meta``
  device: nothing is allocated), so it works for every ``ChainOptimizer``, including ones
  written later.
- :func:`optimizer_state_numel`: the elements [P] counts (floating state; step counters and
  random-generator seeds are bookkeeping and left out).
- :func:`model_memory`: weights + Adam's states of the parameters routed to Adam + the
  optimizer's states of the matrices, for a list of ``(name, shape, role)``. [P]'s Table 3 and
  its model configs live with the benchmark that reproduces it (``benchmarks/paper_tables.py``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

GIB = 2**30

#: per-parameter state elements by component (``shape -> {component: elements}``)
StateCounts = Callable[[tuple[int, ...]], dict[str, int]]


# --------------------------------------------------------------------------- measured
def state_numel(optimizer: torch.optim.Optimizer, param: torch.Tensor | None = None) -> int:
    """Elements held in optimizer state tensors (of one parameter, or of all), the step counter
    included; generator states and other non-floating bookkeeping tensors are included too."""
    states = [optimizer.state[param]] if param is not None else list(optimizer.state.values())
    return sum(v.numel() for s in states for v in s.values() if isinstance(v, torch.Tensor))


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes held in the optimizer's state tensors (measured, not estimated), however nested
    (other packages keep dicts or lists of tensors inside a parameter's state: heavyball)."""
    return _held_bytes(list(optimizer.state.values()))


def _held_bytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(_held_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_held_bytes(v) for v in value)
    return 0


# ------------------------------------------------------------------------- predicted
def _optimizer_class(optimizer: str | type) -> type:
    from .optim import get_optimizer  # local: fimkit.optim imports this package's modules

    return get_optimizer(optimizer) if isinstance(optimizer, str) else optimizer


def predicted_state(optimizer: str | type, shape: tuple[int, ...],
                    **hyperparameters: Any) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """``{state key: (shape, dtype)}`` that ``optimizer`` (a registered name or a
    ``ChainOptimizer`` class) allocates for a float32 parameter of ``shape``: its own
    ``param_state_shapes``, so the answer follows the code (the matrix view, the transpose of
    tall matrices to the short side, ``state_dtype``, and a matrix-only optimizer's built-in Adam
    for a tensor that is not a matrix; ``non_matrix="raise"`` makes that a ``ValueError``)."""
    from .optim.chain import ChainOptimizer

    cls = _optimizer_class(optimizer)
    if not (isinstance(cls, type) and issubclass(cls, ChainOptimizer)):
        raise TypeError(f"predicted_state needs a fimkit ChainOptimizer (or its registered name), got {cls!r}")
    return {key: (spec.shape, spec.dtype) for key, spec in cls.param_state_shapes(tuple(shape), **hyperparameters).items()}


def counted_state(state: dict[str, tuple[tuple[int, ...], torch.dtype]]) -> dict[str, int]:
    """Elements of each state tensor that [P] counts: floating, not the step counter."""
    return {key: math.prod(shape) for key, (shape, dtype) in state.items()
            if dtype.is_floating_point and key != "step"}


def optimizer_state_numel(optimizer: str | type, shape: tuple[int, ...], **hyperparameters: Any) -> int:
    """State elements per parameter of ``shape`` as [P] counts them (see :func:`counted_state`)."""
    return sum(counted_state(predicted_state(optimizer, shape, **hyperparameters)).values())


def registered_state_counts(optimizer: str | type, **hyperparameters: Any) -> StateCounts:
    """:func:`counted_state` of :func:`predicted_state` as a function of the shape (cached: a
    model repeats few shapes)."""
    cls = _optimizer_class(optimizer)
    return functools.partial(_cached_counts, cls, tuple(sorted(hyperparameters.items())))


@functools.lru_cache(maxsize=4096)
def _cached_counts(cls: type, hyperparameters: tuple, shape: tuple[int, ...]) -> dict[str, int]:
    return counted_state(predicted_state(cls, tuple(shape), **dict(hyperparameters)))


# --------------------------------------------------------------------- whole models
@dataclass(frozen=True)
class MemoryEstimate:
    """A model's training memory for one optimizer, in bytes, and where its states came from."""

    weights: int
    adam_states: int
    matrix_states: int
    source: str

    @property
    def total(self) -> int:
        return self.weights + self.adam_states + self.matrix_states

    @property
    def gib(self) -> float:
        return self.total / GIB


def model_memory(parameters: Iterable[tuple[str, tuple[int, ...], str]], state_counts: StateCounts,
                 lm_head: str = "adam", bytes_per_element: int = 2, component_bytes: dict[str, int] | None = None,
                 source: str = "registered") -> MemoryEstimate:
    """[P]'s memory estimate for ``parameters`` (``(name, shape, role)``, role "matrix",
    "embedding", "vector" or "lm_head", as fimkit's routing assigns them): weights, Adam's two
    moments for every parameter routed to Adam (embeddings, norms and, with ``lm_head="adam"``,
    the head), and ``state_counts`` for the matrices (and the head with ``lm_head="matrix"``).
    ``component_bytes`` overrides the bytes of named state components (e.g. one kept in float32
    while the rest is BF16)."""
    if lm_head not in ("adam", "matrix"):
        raise ValueError(f"lm_head must be 'adam' or 'matrix', got {lm_head!r}")
    widths = component_bytes or {}
    weights = adam = matrix = 0
    for _, shape, role in parameters:
        weights += math.prod(shape) * bytes_per_element
        if role == "matrix" or (role == "lm_head" and lm_head == "matrix"):
            matrix += sum(count * widths.get(key, bytes_per_element) for key, count in state_counts(shape).items())
        else:
            adam += 2 * math.prod(shape) * bytes_per_element
    return MemoryEstimate(weights, adam, matrix, source)

