"""[P] Fig 6 at CPU scale: how much of the basis survives each subspace switch.

For every switch after the first, the optimizer's own basis just before and just after the
switch (``switches.jsonl``, logged during training by ``experiments.switch_log``): the
absolute cosine similarity of eigenvector i with its predecessor, averaged over the model's
matrices. Tracking on (Alice) against tracking off (Alice-0), same switching rule.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from paper_figs.common import Runs, figure_cli, pyplot, save_figure, write_csv

SHOWN = 6  # eigenvectors drawn per panel


def similarity(runs: Runs, spec) -> dict[int, dict[int, float]]:
    """step -> eigenvector index (0-based) -> mean |cos| over matrices."""
    sums: dict[int, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for record in runs.records(spec, "switches.jsonl"):
        for i, c in enumerate(record["cos"]):
            sums[record["step"]][i].append(c)
    return {step: {i: sum(v) / len(v) for i, v in cols.items()} for step, cols in sorted(sums.items())}


def draw(runs: Runs, out: Path) -> list[Path]:
    specs = runs.role("fig6")
    data = {label: similarity(runs, spec) for label, spec in specs.items()}
    data = {label: d for label, d in data.items() if d}
    if not data:
        return []
    plt = pyplot()
    fig, axes = plt.subplots(1, len(data) + 1, figsize=(4.4 * (len(data) + 1), 4), sharey=True)
    rows = []
    for ax, (label, by_step) in zip(axes, data.items()):
        steps = list(by_step)
        for i in range(min(SHOWN, len(next(iter(by_step.values()))))):
            ax.plot(steps, [by_step[s][i] for s in steps], "o-", ms=2.5, lw=1, label=f"eigenvector {i + 1}")
        ax.set(title=label, xlabel="step of the switch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        rows += [(label, s, i + 1, c) for s in steps for i, c in by_step[s].items()]
    for label, by_step in data.items():
        steps = list(by_step)
        axes[-1].plot(steps, [sum(v.values()) / len(v) for v in by_step.values()], "o-", ms=2.5, label=label)
    axes[-1].set(title="mean over the leading eigenvectors", xlabel="step of the switch")
    axes[-1].grid(alpha=0.3)
    axes[-1].legend(fontsize=7)
    axes[0].set_ylabel("|cos(u_i before, u_i after)|")
    fig.suptitle(f"[P] Fig 6 at CPU scale: {runs.protocol.description}", fontsize=9)
    fig.tight_layout()
    return [write_csv(out / "fig6_switch_similarity.csv", ["run", "step", "eigenvector", "mean_abs_cos"], rows),
            *save_figure(fig, out / "fig6_switch_similarity")]


def mean_similarity(runs: Runs) -> dict[str, float]:
    """label -> |cos| averaged over every switch and leading eigenvector (for the report)."""
    result = {}
    for label, spec in runs.role("fig6").items():
        values = [c for cols in similarity(runs, spec).values() for c in cols.values()]
        if values:
            result[label] = sum(values) / len(values)
    return result


if __name__ == "__main__":
    raise SystemExit(figure_cli(draw, __doc__))
