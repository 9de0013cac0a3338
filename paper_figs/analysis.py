"""The numbers the report states, as pure functions of eval curves and final losses.

Speed-up ([P] Table 2's "step speed-up", measured in tokens as the issue asks): against a
reference run (the best Adam found), ``tokens the reference needs to reach its final eval loss /
tokens X needs to reach it``, each read off the eval curve by linear interpolation between
evaluations. A run that never reaches the reference's final loss has a speed-up below 1 that
the curve cannot measure: it is reported as ``None`` ("not reached").
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

Curve = list[tuple[float, float]]  # (tokens, eval loss), in training order


def tokens_to_reach(curve: Curve, target: float) -> float | None:
    """Tokens at which the eval loss first falls to ``target`` (interpolated); None if never."""
    previous = None
    for tokens, loss in curve:
        if loss <= target:
            if previous is None:
                return float(tokens)
            t0, l0 = previous
            return t0 + (tokens - t0) * (l0 - target) / (l0 - loss)  # l0 > target >= loss
        previous = (tokens, loss)
    return None


def speedup(reference: Curve, candidate: Curve) -> float | None:
    """``tokens_to_reach(reference, its final loss) / tokens_to_reach(candidate, same)``."""
    if not reference or not candidate:
        return None
    target = reference[-1][1]
    needed = tokens_to_reach(reference, target)
    reached = tokens_to_reach(candidate, target)
    if needed is None or reached is None or reached <= 0:
        return None
    return needed / reached


@dataclass(frozen=True)
class Spread:
    """Mean, standard deviation (0 for one value), min and max over seeds."""

    mean: float
    std: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Spread | None:
        values = [v for v in values if v is not None and math.isfinite(v)]
        if not values:
            return None
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return cls(statistics.mean(values), std, min(values), max(values), len(values))

    def __str__(self) -> str:
        if self.n == 1:
            return f"{self.mean:.3f}"
        return f"{self.mean:.3f} ± {self.std:.3f}"

    def fmt(self, digits: int = 3, suffix: str = "") -> str:
        if self.n == 1:
            return f"{self.mean:.{digits}f}{suffix}"
        return f"{self.mean:.{digits}f}{suffix} ± {self.std:.{digits}f} (n={self.n})"


def paired_speedups(reference: dict[int, Curve], candidate: dict[int, Curve]) -> list[float | None]:
    """Speed-ups seed by seed (same seed = same initial weights and batches)."""
    return [speedup(reference[s], candidate[s]) for s in sorted(set(reference) & set(candidate))]


def ordering(values: dict[str, float]) -> list[str]:
    """Labels from lowest to highest value."""
    return sorted(values, key=lambda k: values[k])


def holds_ordering(values: dict[str, float], expected: list[str]) -> bool:
    """Whether the labels of ``expected`` (all present) come in that order, lowest first."""
    present = [label for label in expected if label in values]
    return len(present) == len(expected) and all(values[a] < values[b] for a, b in zip(present, present[1:]))
