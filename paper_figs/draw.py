"""Draw every figure and table of a reproduction from its cached runs, then write REPORT.md.

Each figure module has ``draw(runs, out) -> written paths`` and can also run alone
(``python -m paper_figs.fig5_ablations --preset nano``). A figure whose runs have not finished
is skipped (and the report says which runs are missing).
"""

from __future__ import annotations

from pathlib import Path

from experiments.progress import log
from experiments.reproduce.protocol import Protocol
from paper_figs import (
    fig1_loss_curves, fig3_throughput, fig4_memory, fig5_ablations, fig6_switch_similarity, table2, table3, table5,
)
from paper_figs.common import Runs

FIGURES = (fig1_loss_curves, table2, fig3_throughput, fig4_memory, fig5_ablations, fig6_switch_similarity, table3,
           table5)


def draw_all(protocol: Protocol, runs_dir: str | Path, out: str | Path, report: str | Path | None = None) -> list[Path]:
    from paper_figs.report import write_report

    runs = Runs.load(protocol, runs_dir)
    out = Path(out)
    written: list[Path] = []
    for module in FIGURES:
        paths = module.draw(runs, out)
        if not paths:
            log(f"  {module.__name__.rpartition('.')[2]}: its runs have not finished; skipped")
        written += paths
    if report is not None:
        written.append(write_report(runs, out, Path(report)))
    return written
