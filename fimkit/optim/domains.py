"""The valid values of each hyperparameter (its *domain*), declared once next to its default.

Every block of an update chain lists ``domains`` beside ``hyperparameters``; the chain checks a
param group against them when the optimizer is built, when a group is added and when a state
dict is loaded, and a bad value is a ``ValueError`` naming the optimizer, the param group, the
value and the valid range: ``RACS: param group 0: alpha=-1 is not a finite number >= 0``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Domain:
    """A set of valid values: ``contains(value)`` and how to say it (``description``)."""

    description: str
    contains: Callable[[Any], bool]

    def __repr__(self) -> str:
        return f"Domain({self.description!r})"


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def real(low: float | None = None, high: float | None = None, *, low_open: bool = False,
         high_open: bool = False) -> Domain:
    """Finite real numbers in ``[low, high]`` (``(`` / ``)`` for open ends)."""
    def contains(value):
        if not _is_real(value) or not math.isfinite(value):
            return False
        if low is not None and (value <= low if low_open else value < low):
            return False
        return high is None or (value < high if high_open else value <= high)

    if low is not None and high is not None:
        text = f"a finite number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        text = f"a finite number {'>' if low_open else '>='} {low:g}"
    elif high is not None:
        text = f"a finite number {'<' if high_open else '<='} {high:g}"
    else:
        text = "a finite number"
    return Domain(text, contains)


def integer(low: int | None = 0) -> Domain:
    """Integers ``>= low`` (any integer for ``None``); not booleans, not floats."""
    def contains(value):
        return isinstance(value, numbers.Integral) and not isinstance(value, bool) and (low is None or value >= low)

    return Domain("an integer" if low is None else f"an integer >= {low}", contains)


def choice(*values: Any) -> Domain:
    return Domain(f"one of {', '.join(map(repr, values))}", lambda value: any(value == v for v in values))


BOOLEAN = Domain("True or False", lambda value: isinstance(value, bool))


def optional(domain: Domain) -> Domain:
    return Domain(f"None or {domain.description}", lambda value: value is None or domain.contains(value))


def pair(first: Domain, second: Domain, names: str = "(beta1, beta2)") -> Domain:
    """A pair (a tuple or list of two values)."""
    def contains(value):
        return (isinstance(value, (tuple, list)) and len(value) == 2
                and first.contains(value[0]) and second.contains(value[1]))

    return Domain(f"a pair {names} of {first.description} and {second.description}", contains)


#: the moments' decay rates (beta1 = 0 turns the momentum off; beta2 = 1 is Shampoo's sum)
BETAS = pair(real(0.0, 1.0, high_open=True), real(0.0, 1.0))
NON_NEGATIVE = real(0.0)
POSITIVE = real(0.0, low_open=True)
DECAY = real(0.0, 1.0, high_open=True)  # an EMA weight beta in [0, 1)
STATE_DTYPE = Domain("None or a floating torch.dtype",
                     lambda value: value is None or (isinstance(value, torch.dtype) and value.is_floating_point))


def check_group(owner: str, index: int, group: dict[str, Any], domains: dict[str, Domain]) -> None:
    """Raise ``ValueError`` for the first hyperparameter of ``group`` outside its domain."""
    for key, domain in domains.items():
        if key in group and not domain.contains(group[key]):
            raise ValueError(f"{owner}: param group {index}: {key}={group[key]!r} is not {domain.description}")
