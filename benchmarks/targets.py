"""Issue 14's CPU targets, as data, and their verdicts on one run (one thread count).

A run is the JSON-shaped dict that ``benchmarks.suite`` builds: ``rows`` (one per candidate,
with ``algorithm``, ``package``, ``step_ms``, ``floor_ms``...) and, when measured, ``e2e``
(``vs_adam``: tokens/s over Adam's). A target whose subject was not measured in the run is
"n/a", never met.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

#: how a row of a default switched off for comparison ends (``benchmarks.step_time.VARIANTS``)
SERIAL_ROW = " (serial)"

#: subjects and their values in a run: ``[(subject, value or None)]``, or
#: ``[(subject, value, bound)]`` where ``bound`` (or None) says why a miss cannot be helped
Values = Callable[[dict], list[tuple]]


@dataclass(frozen=True)
class Target:
    key: str
    text: str
    values: Values
    threshold: float
    at_most: bool = True   # met when value <= threshold (else: value >= threshold)

    def verdicts(self, run: dict) -> list[dict]:
        out = []
        for subject, value, *bound in self.values(run) or [("(none measured)", None)]:
            met = None if value is None else (value <= self.threshold if self.at_most else value >= self.threshold)
            verdict = {"target": self.key, "text": self.text, "subject": subject, "value": value,
                       "threshold": self.threshold, "at_most": self.at_most,
                       "verdict": "n/a" if met is None else ("met" if met else "missed")}
            if met is False and bound and bound[0]:
                verdict["bound"] = bound[0]
            out.append(verdict)
        return out


def fimkit_row(run: dict, algorithm: str) -> dict | None:
    """fimkit's fastest row of ``algorithm`` (its eager step, or a fused one where it has one)."""
    rows = [r for r in run["rows"] if r["package"] == "fimkit" and r["algorithm"] == algorithm]
    return min(rows, key=lambda r: r["step_ms"], default=None)


def _row_by_label(run: dict, label: str) -> dict | None:
    return next((r for r in run["rows"] if r["label"] == label), None)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _over_floor(run: dict) -> list[tuple[str, float | None]]:
    # (a "(serial)" row is a default switched off for comparison, not a step anyone would choose)
    return [(r["label"], r.get("step_over_floor")) for r in run["rows"]
            if r["package"] == "fimkit" and not r["label"].endswith(SERIAL_ROW)]


def _vs_fused(algorithm: str) -> Values:
    def values(run):
        row, fused = fimkit_row(run, algorithm), _row_by_label(run, "torch Adam (fused)")
        return [(algorithm, _ratio(row and row["step_ms"], fused and fused["step_ms"]))]
    return values


def _alice_over_floor(run: dict) -> list[tuple[str, float | None]]:
    row = fimkit_row(run, "alice")
    return [(row["label"] if row else "alice", row and row.get("step_over_floor"))]


#: the speedup over a package the packages target asks for (also what makes it unreachable)
PACKAGE_SPEEDUP = 1.5


def _package_speedup(run: dict) -> list[tuple]:
    """The package's step over fimkit's: >= 1.5 means fimkit is 1.5x faster. Unreachable where
    the package's own step is under 1.5x the floor: fimkit would have to run below the floor (a
    package whose algorithm does less, e.g. in bfloat16, can even be under it)."""
    out = []
    for r in run["rows"]:
        if r["package"] in ("fimkit", "torch", "probe"):
            continue
        ours = fimkit_row(run, r["algorithm"])
        package_over_floor = r.get("step_over_floor")
        bound = (f"unreachable: the package runs at {package_over_floor:.2f}x the floor"
                 if package_over_floor is not None and package_over_floor < PACKAGE_SPEEDUP else None)
        out.append((f"{r['algorithm']} vs {r['package']}", _ratio(r["step_ms"], ours and ours["step_ms"]), bound))
    return out


def _e2e(run: dict) -> list[tuple[str, float | None]]:
    vs_adam = (run.get("e2e") or {}).get("vs_adam", {})
    return [(name, vs_adam.get(name)) for name in ("racs", "alice")]


#: issue 14, "Targets" (CPU, at every thread count)
TARGETS: tuple[Target, ...] = (
    Target("floor", "every fimkit optimizer within 1.5x of its floor (step / floor)", _over_floor, 1.5),
    Target("adam", "fimkit Adam within 1.2x of torch's fused Adam (step / fused)", _vs_fused("adam"), 1.2),
    Target("racs", "RACS at most 1.3x torch's fused Adam (step / fused)", _vs_fused("racs"), 1.3),
    Target("alice", "Alice (amortised, K = 200) within 1.3x of its floor (step / floor)", _alice_over_floor, 1.3),
    Target("packages", "every algorithm another package ships at least 1.5x faster than that package "
                       "(package step / fimkit step)", _package_speedup, PACKAGE_SPEEDUP, at_most=False),
    Target("e2e", "end-to-end tokens/s of RACS and Alice at least 0.97x Adam's", _e2e, 0.97, at_most=False),
)


def evaluate(run: dict, targets: tuple[Target, ...] = TARGETS) -> list[dict]:
    return [v for target in targets for v in target.verdicts(run)]
