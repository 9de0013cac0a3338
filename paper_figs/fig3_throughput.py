"""[P] Fig 3 at CPU scale: (a) training throughput and (b) effective throughput, relative to Adam.

Throughput: tokens/s of a whole training step, every optimizer stepped round-robin in one
process (``experiments.reproduce.probes``), so machine noise hits all alike; switches are
amortised over whole periods. Effective throughput = throughput x token speed-up against the
best Adam (the tuned comparison for Adam, RACS and Alice; paper settings for the others), the
paper's "effective" column: how fast each optimizer makes the progress Adam makes.
"""

from __future__ import annotations

import json
from pathlib import Path

from experiments.reproduce.probes import THROUGHPUT
from paper_figs.common import Runs, figure_cli, pyplot, save_figure, write_csv
from paper_figs.headline import HEADLINE, NAMES, speedup_vs_best_adam, tuned_rows


def speedups(runs: Runs) -> dict[str, float]:
    found = {}
    for r in tuned_rows(runs):
        key = r.spec.optimizer if r.label in (NAMES[h] for h in HEADLINE) else None
        if key and r.speedup is not None:
            found[key] = r.speedup.mean
    for name, spec in runs.role("paper").items():
        if name not in found and (s := speedup_vs_best_adam(runs, spec)) is not None:
            found[name] = s
    return found


def table(runs: Runs) -> list[tuple[str, float, float, float | None, float | None]]:
    """(optimizer, tokens/s, relative throughput, speed-up, relative effective throughput)."""
    path = runs.probes_dir / THROUGHPUT
    if not path.exists():
        return []
    measured = json.loads(path.read_text())["tokens_per_s"]
    adam = measured.get("adam")
    ups = speedups(runs)
    rows = []
    for name, tps in measured.items():
        relative = tps / adam if adam else float("nan")
        up = ups.get(name)
        rows.append((name, tps, relative, up, relative * up if up is not None else None))
    return rows


def draw(runs: Runs, out: Path) -> list[Path]:
    rows = table(runs)
    if not rows:
        return []
    plt = pyplot()
    fig, (ax_a, ax_b) = plt.subplots(1, 2, figsize=(10, 3.8))
    labels = [NAMES.get(n, n) for n, *_ in rows]
    ax_a.bar(labels, [r[2] for r in rows], color="C0")
    ax_b.bar(labels, [r[4] or 0.0 for r in rows], color="C2")
    for ax, title in ((ax_a, "(a) throughput / Adam's"), (ax_b, "(b) effective throughput / Adam's")):
        ax.axhline(1.0, color="0.3", lw=0.8)
        ax.set(title=title)
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(alpha=0.3, axis="y")
    for i, r in enumerate(rows):
        ax_a.text(i, r[2], f"{r[2]:.2f}", ha="center", va="bottom", fontsize=7)
        ax_b.text(i, r[4] or 0.0, f"{r[4]:.2f}" if r[4] is not None else "n/r", ha="center", va="bottom", fontsize=7)
    fig.suptitle(f"[P] Fig 3 at CPU scale ({runs.protocol.threads} thread, interleaved): "
                 f"{runs.protocol.description}", fontsize=9)
    fig.tight_layout()
    return [write_csv(out / "fig3_throughput.csv", ["optimizer", "tokens_per_s", "relative_throughput", "token_speedup",
                                                    "relative_effective_throughput"], rows),
            *save_figure(fig, out / "fig3_throughput")]


if __name__ == "__main__":
    raise SystemExit(figure_cli(draw, __doc__))
