"""[P] Table 5 at CPU scale: Alice's components added one at a time (final eval perplexity).

none = GaLore-like eigenbasis of the current gradient (no tracking, no switching, no
compensation); +tracking; +tracking +switching; +compensation = Alice. [P] at 130M:
26.96 / 27.35 / 25.11 / 21.95.
"""

from __future__ import annotations

from pathlib import Path

from paper_figs.common import Runs, figure_cli, ppl, write_csv, write_markdown

PAPER_130M = {"none": 26.96, "+tracking": 27.35, "+tracking +switching": 25.11, "+compensation (Alice)": 21.95}


def draw(runs: Runs, out: Path) -> list[Path]:
    specs = runs.role("table5")
    if not specs:
        return []
    lines = ["| components | final eval loss | eval ppl | [P] 130M ppl |", "|---|---|---|---|"]
    rows = []
    for label, spec in specs.items():
        loss = runs.final(spec)
        lines.append(f"| {label} | {loss:.4f} | {ppl(loss):.2f} | {PAPER_130M[label]} |")
        rows.append((label, loss, ppl(loss), PAPER_130M[label]))
    return [write_markdown(out / "table5.md", "\n".join(lines)),
            write_csv(out / "table5.csv", ["components", "final_eval_loss", "eval_ppl", "paper_130m_ppl"], rows)]


if __name__ == "__main__":
    raise SystemExit(figure_cli(draw, __doc__))
