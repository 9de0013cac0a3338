"""What every plot of the experiment layer shares: saving with provenance, and smoothing.

``fimkit compare``, ``fimkit plot`` and the ``paper_figs`` scripts all save through
:func:`save_figure`, so every figure carries the command and code revision that made it.
"""

from __future__ import annotations

from pathlib import Path

from experiments.atomic import atomic_path
from experiments.provenance import code_revision, command_line


def provenance() -> str:
    return f"made by `{command_line()}` at revision {code_revision()}"


def smooth(values: list[float], weight: float = 0.9) -> list[float]:
    """Exponential moving average (TensorBoard's smoothing) of a training-loss curve."""
    smoothed, average = [], None
    for v in values:
        average = v if average is None else weight * average + (1 - weight) * v
        smoothed.append(average)
    return smoothed


def save_figure(fig, stem: str | Path, dpi: int = 130, note: str | None = None, tight: bool = False) -> list[Path]:
    """``stem.png`` and ``stem.svg``, written atomically, with ``note`` (default: the provenance)
    in a footer; closes the figure. ``tight``: crop to the drawn content (the footer then wraps to
    the figure's width, so a long command cannot widen the saved figure)."""
    import matplotlib.pyplot as plt

    note = note or provenance()
    if tight:
        fig.text(0.01, 0.002, note, ha="left", va="bottom", fontsize=6, color="0.45", wrap=True)
    else:
        fig.text(0.995, 0.005, note, ha="right", va="bottom", fontsize=6, color="0.45")
    written = []
    for suffix in (".png", ".svg"):
        path = Path(str(stem) + suffix)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=suffix[1:], dpi=dpi, bbox_inches="tight" if tight else None)
        written.append(path)
    plt.close(fig)
    return written
