"""The tuned comparison: each optimizer's best sweep point over seeds, against the best Adam.

Every headline optimizer gets the same tuning budget (its lr grid, extended past an edge that
holds the best); its best point is rerun with every seed, and each seed is compared with the
best Adam of the same seed (same initial weights and batches).
"""

from __future__ import annotations

from dataclasses import dataclass

from experiments.reproduce.plan import RunSpec
from paper_figs.analysis import Curve, Spread, paired_speedups, speedup
from paper_figs.common import Runs

HEADLINE = ("adam", "racs", "alice")
NAMES = {"adam": "Adam", "racs": "RACS", "alice": "Alice", "alice0": "Alice-0", "galore": "GaLore", "fira": "Fira",
         "per_role_adam": "Adam, per-role lr"}


@dataclass
class Row:
    label: str
    spec: RunSpec  # seed 0
    finals: Spread | None  # final eval loss over seeds
    speedup: Spread | None  # tokens-to-Adam's-final-loss ratio over seeds
    not_reached: int  # seeds that never reached the reference's final loss
    seeds: int


def best_spec(runs: Runs, role: str) -> RunSpec | None:
    specs = runs.role(role)
    if not specs or len(specs) < len(runs.plan.roles.get(role, {})):
        return None  # the sweep is not finished
    return min(specs.values(), key=runs.final)


def seed_curves(runs: Runs, role: str) -> dict[int, Curve]:
    return {s.seed: runs.curve(s) for s in runs.role(role).values()}


def reference_curves(runs: Runs) -> dict[int, Curve]:
    """The best Adam's eval curve per seed (the reference of every speed-up)."""
    curves = seed_curves(runs, "seeds:adam")
    if not curves and (adam := best_spec(runs, "sweep:adam")) is not None:
        curves = {adam.seed: runs.curve(adam)}
    return curves


def row(runs: Runs, label: str, curves: dict[int, Curve], spec: RunSpec) -> Row:
    reference = reference_curves(runs)
    ups = paired_speedups(reference, curves) if reference else []
    finals = [c[-1][1] for c in curves.values() if c]
    return Row(label, spec, Spread.of(finals), Spread.of([u for u in ups if u is not None]),
               sum(u is None for u in ups), len(curves))


def tuned_rows(runs: Runs) -> list[Row]:
    """Adam, RACS, Alice at their best lr (and the per-role Adam), over seeds."""
    rows = []
    for name in HEADLINE + ("per_role_adam",):
        best = best_spec(runs, "per_role_adam" if name == "per_role_adam" else f"sweep:{name}")
        if best is None:
            continue
        curves = seed_curves(runs, f"seeds:{name}") or {best.seed: runs.curve(best)}
        rows.append(row(runs, NAMES[name], curves, best))
    return rows


def single_rows(runs: Runs, role: str) -> list[Row]:
    """One-seed runs of ``role`` against the best Adam of seed 0."""
    return [row(runs, label, {spec.seed: runs.curve(spec)}, spec) for label, spec in runs.role(role).items()]


def speedup_vs_best_adam(runs: Runs, spec: RunSpec) -> float | None:
    reference = reference_curves(runs)
    return speedup(reference[spec.seed], runs.curve(spec)) if spec.seed in reference else None


def describe(spec: RunSpec) -> str:
    """The settings of a run, for tables: ``lr 0.02, adam_lr 0.004``."""
    return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in spec.settings)
