"""[P] Fig 4: measured peak memory of one training step, with and without layer-wise
gradient release, for the paper's 60M and 130M models (one sequence of 256 tokens).

Measured, not estimated: each bar is a fresh process's peak memory above its empty state
(``experiments.reproduce.probes``): weights, gradients, optimizer state and activations.
On CPU the model runs in fp32 (the paper: BF16 on a GPU), so every bar is about twice the
paper's; the ratios between optimizers are what compare.
"""

from __future__ import annotations

import json
from pathlib import Path

from experiments.reproduce.probes import memory_file
from paper_figs.common import Runs, figure_cli, pyplot, save_figure, write_csv
from paper_figs.headline import NAMES

MIB = 2**20


def measurements(runs: Runs) -> list[dict]:
    found = []
    for preset in runs.protocol.memory_presets:
        for optimizer in runs.protocol.memory_optimizers:
            for release in (False, True):
                path = memory_file(runs.probes_dir, preset, optimizer, release)
                if path.exists():
                    found.append(json.loads(path.read_text()))
    return found


def draw(runs: Runs, out: Path) -> list[Path]:
    found = measurements(runs)
    if not found:
        return []
    plt = pyplot()
    presets = list(dict.fromkeys(m["preset"] for m in found))
    fig, axes = plt.subplots(1, len(presets), figsize=(6 * len(presets), 3.8), squeeze=False)
    for ax, preset in zip(axes[0], presets):
        names = [o for o in runs.protocol.memory_optimizers if any(m["preset"] == preset and m["optimizer"] == o for m in found)]
        for offset, release in ((-0.2, False), (0.2, True)):
            values = [next((m["peak_bytes"] / MIB for m in found if m["preset"] == preset and m["optimizer"] == o
                            and m["gradient_release"] == release), 0.0) for o in names]
            ax.bar([i + offset for i in range(len(names))], values, width=0.4,
                   label="layer-wise gradient release" if release else "standard", color="C1" if release else "C0")
        ax.set_xticks(range(len(names)), [NAMES.get(n, n) for n in names], fontsize=8)
        ax.set(title=f"{preset}: peak memory of a training step (MiB, fp32)")
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7)
    fig.tight_layout()
    rows = [(m["preset"], m["optimizer"], m["gradient_release"], m["peak_bytes"] / MIB, m["weights_bytes"] / MIB,
             m["optimizer_state_bytes"] / MIB, m["device"], m["dtype"]) for m in found]
    return [write_csv(out / "fig4_memory.csv", ["preset", "optimizer", "gradient_release", "peak_mib", "weights_mib",
                                                "optimizer_state_mib", "device", "dtype"], rows),
            *save_figure(fig, out / "fig4_memory")]


if __name__ == "__main__":
    raise SystemExit(figure_cli(draw, __doc__))
