"""[P] Table 2 at CPU scale: final eval perplexity and the speed-up to the best Adam's final loss.

Two blocks: the tuned comparison (best lr of each sweep, every seed; speed-ups paired by seed)
and every optimizer at the paper's settings (one seed), with and without the head on Adam.
"""

from __future__ import annotations

from pathlib import Path

from paper_figs.common import Runs, figure_cli, ppl, write_csv, write_markdown
from paper_figs.headline import NAMES, Row, describe, single_rows, tuned_rows


def _speedup_text(r: Row) -> str:
    if r.speedup is None:
        return "not reached" if r.not_reached else "—"
    text = r.speedup.fmt(2, "x")
    return text + (f", {r.not_reached} seed(s) not reached" if r.not_reached else "")


def rows(runs: Runs) -> list[tuple[str, Row]]:
    tuned = [("tuned", r) for r in tuned_rows(runs)]
    paper = [("paper", r) for r in single_rows(runs, "paper")]
    starred = [("paper", r) for r in single_rows(runs, "lm_head") if "head on Adam" in r.label]
    for _, r in paper:
        r.label = NAMES.get(r.label, r.label)
    for _, r in starred:
        r.label = f"{NAMES[r.spec.optimizer]}*"
    return tuned + paper + starred


def draw(runs: Runs, out: Path) -> list[Path]:
    table = rows(runs)
    if not table:
        return []
    lines = ["| block | optimizer | settings | final eval loss | eval ppl | speed-up vs best Adam | seeds |",
             "|---|---|---|---|---|---|---|"]
    csv_rows = []
    for block, r in table:
        loss = r.finals.mean if r.finals else float("inf")
        lines.append(f"| {block} | {r.label} | {describe(r.spec)} | {r.finals.fmt(3) if r.finals else 'diverged'} | "
                     f"{ppl(loss):.2f} | {_speedup_text(r)} | {r.seeds} |")
        csv_rows.append((block, r.label, describe(r.spec), loss, r.finals.std if r.finals else "", ppl(loss),
                         r.speedup.mean if r.speedup else "", r.speedup.std if r.speedup else "", r.not_reached, r.seeds))
    header = (f"Final eval loss on the same {runs.protocol.eval_tokens:,} held-out tokens; speed-up = tokens the "
              f"best Adam needs to reach its final eval loss / tokens the optimizer needs (paired by seed). "
              f"`*`: lm_head on Adam.\n\n")
    return [write_markdown(out / "table2.md", header + "\n".join(lines)),
            write_csv(out / "table2.csv", ["block", "optimizer", "settings", "final_eval_loss", "std", "eval_ppl",
                                           "speedup", "speedup_std", "seeds_not_reached", "seeds"], csv_rows)]


if __name__ == "__main__":
    raise SystemExit(figure_cli(draw, __doc__))
