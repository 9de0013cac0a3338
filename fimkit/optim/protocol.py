"""The protocol of an update chain's stages (optax's ``init``/``update`` contract, fimkit style).

A :class:`Block` declares the hyperparameters it reads from the param group (with their
domains), the state tensors it owns and how they scale with the gradient, and maps the running
update to a new one; a :class:`ScalarBlock` multiplies it by one number. The shape helpers say
which matrix a tensor is viewed as and when periodic refreshes happen. :mod:`fimkit.optim.chain`
runs the blocks; nothing here knows about ``torch.optim``.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor

from .domains import Domain

State = dict[str, Tensor]
Group = dict[str, Any]


class Block:
    """One stage of an update chain. Subclasses are small and stateless themselves; their
    ``repr`` is the expression that builds them (``fimkit optimizers`` prints recipes with it)."""

    #: hyperparameters (name -> default) this block reads from the param group
    hyperparameters: ClassVar[dict[str, Any]] = {}
    #: the valid values of each of them (``fimkit.optim.domains``), checked for every param group
    domains: ClassVar[dict[str, Domain]] = {}
    #: whether the block maps each entry of its input to an entry of its output using only that
    #: entry's own state and numbers the same everywhere (hyperparameters, the step count): then a
    #: chain of such blocks steps a shard of a parameter on its own, with state sharded like it
    #: (``fimkit.optim.sharded``). False (the default) for anything reading a row, a column, a norm
    #: or the whole matrix; a block opts in.
    elementwise: ClassVar[bool] = False
    #: whether every sum, mean, maximum or norm the block takes over rows, columns or the whole
    #: matrix goes through ``fimkit.optim.sharded.reduction()`` (a :class:`fimkit.reductions.
    #: Reduction`), and its state is per row, per column, per entry or one number: then a chain of
    #: such blocks (and element-wise ones) steps a block of rows of a sharded parameter, completing
    #: those reductions across the ranks (RACS's and Adafactor's row and column statistics). A
    #: block opts in.
    partial_sums: ClassVar[bool] = False
    #: whether the block reads the per-parameter step counter
    needs_step: ClassVar[bool] = False

    def validate(self, group: Group) -> None:
        """Raise ``ValueError`` for a combination of values that the domains alone cannot refuse."""

    def init_state(self, m: int, n: int, like: Tensor, group: Group) -> State:
        """State tensors this block owns for an m x n (matrix view of a) parameter."""
        return {}

    def __call__(self, update: Tensor, grad: Tensor, param: Tensor, state: State, group: Group,
                 step: int) -> Tensor:
        raise NotImplementedError

    # The three methods below tell the chain how the block scales with the gradient, so that
    # state can be kept in a power-of-two unit of it (``fimkit.optim.units``). ``degree`` is the
    # degree of the block's input: the running update scales as ``c^degree`` when every gradient
    # is ``c`` times larger (1 for the gradient itself).
    def state_degrees(self, group: Group, degree: float) -> dict[str, float]:
        """``{state key: k}``: the block's state tensors scale as ``c^k`` (a momentum of its input:
        ``degree``; a second moment of the gradient: 2; a basis: 0)."""
        return {}

    def output_degree(self, group: Group, degree: float) -> float:
        """The degree of the block's output (default: that of its input)."""
        return degree

    def scale_equivariant(self, group: Group) -> bool:
        """True when no absolute constant (an ``eps``, a clipping threshold) enters: the output
        for ``c`` times the input and state is exactly ``c^output_degree`` times the output."""
        return False

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ScalarBlock(Block):
    """A block that multiplies the update by one number: a host float (learning rate, a fixed
    scale, a bias correction) or a 0-d tensor computed on the device (a norm-growth limiter).
    Trailing scalar blocks of a chain are folded into the parameter update
    (``W.add_(X, alpha=c)`` or ``W.addcmul_(X, c)``): one pass over ``X`` and no ``m x n``
    temporary, where a block per factor would make a pass and a temporary each."""

    #: whether the factor depends on the update it scales (a norm); such a block must see the
    #: update with every earlier factor applied, so a folded tail can only start with it
    reads_update: ClassVar[bool] = False

    def factor(self, update: Tensor, state: State, group: Group, step: int | None) -> float | Tensor:
        raise NotImplementedError

    def scale_equivariant(self, group: Group) -> bool:
        return True  # a factor that does not depend on the update's scale

    def __call__(self, update, grad, param, state, group, step):
        factor = self.factor(update, state, group, step)
        return update if isinstance(factor, float) and factor == 1.0 else update * factor


def matrix_shape(shape: torch.Size) -> tuple[int, int]:
    """The matrix a tensor is viewed as: (1, n) for vectors, (d0, rest) for N-d tensors."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return 1, shape[0]
    return shape[0], math.prod(shape[1:])


def is_refresh_step(step: int, interval: int, offset: int = 0) -> bool:
    """The one rule for every periodic refresh (eigenbasis, projection, fitted preconditioner):
    at ``t == 1`` and whenever ``t % K == 0`` ([P] Alg 2 and 6-8). ``offset=1`` moves the periodic
    refreshes one step later, to ``t = K + 1, 2K + 1, ...`` (official GaLore and APOLLO count
    steps from 0); see DECISIONS.md."""
    return step == 1 or (step > offset and (step - offset) % int(interval) == 0)


def working_shape(m: int, n: int, transpose_to_short_side: bool) -> tuple[int, int, bool]:
    """``(m, n, transposed)`` of the matrix an optimizer works on for an ``m x n`` weight: its
    transpose when ``transpose_to_short_side`` and ``m > n`` (algorithms.md §1: the m side gets
    the Gram)."""
    transposed = bool(transpose_to_short_side) and m > n
    return (n, m, True) if transposed else (m, n, False)


class StateShape(NamedTuple):
    """Shape and dtype of one optimizer state tensor."""

    shape: tuple[int, ...]
    dtype: torch.dtype


def init_with_signature(cls: type, base_init):
    """An ``__init__`` (calling ``base_init``) whose signature lists ``cls``'s hyperparameters
    (``cls.default_hyperparameters()``, ``cls.hyperparameters`` first) with their defaults, for
    ``help()``, ``inspect`` and tools that build optimizers from keyword arguments."""

    def __init__(self, params, **hyperparameters):
        base_init(self, params, **hyperparameters)

    defaults = cls.default_hyperparameters()
    order = (["lr"] + [k for k in cls.hyperparameters if k != "lr"]
             + [k for k in defaults if k not in cls.hyperparameters])
    __init__.__signature__ = inspect.Signature(
        [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
         inspect.Parameter("params", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        + [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=defaults[k]) for k in dict.fromkeys(order)])
    __init__.__qualname__ = f"{cls.__qualname__}.__init__"
    __init__.__doc__ = f"{cls.__name__} over ``params`` (tensors or param groups); every hyperparameter " \
                       f"can be overridden per param group."
    return __init__
