"""[P] Table 3: memory (GB, BF16) of weights plus optimizer state, computed from the paper's
model configurations (``benchmarks.paper_tables`` over ``fimkit.memory``), beside the paper's numbers."""

from __future__ import annotations

from pathlib import Path

from benchmarks.paper_tables import ALICE_TRACKING_IN_FP32, format_table3, paper_table3
from paper_figs.common import Runs, figure_cli, write_csv, write_markdown


#: DECISIONS L13: [P]'s Alice cells match when its r x r tracking state is counted at 4 bytes
TRACKING_IN_FP32 = ALICE_TRACKING_IN_FP32


def cells(component_bytes: dict[str, int] | None = None) -> list[dict]:
    return paper_table3(component_bytes=component_bytes)


def draw(runs: Runs, out: Path) -> list[Path]:
    found = cells()
    rows = [(c["method"], c["size"], c["column"], c.get("paper"), c.get("ours")) for c in found]
    header = ("Cells: ours / [P]'s (GB); `Mem*`: lm_head on Adam. Computed from the model shapes, not measured. "
              f"Every state in BF16: largest difference {max_deviation():.3f} GB; with Alice's r x r tracking "
              f"state at 4 bytes (DECISIONS L13): {max_deviation(TRACKING_IN_FP32):.3f} GB.\n\n")
    return [write_markdown(out / "table3.md", header + format_table3(found)),
            write_csv(out / "table3.csv", ["method", "size", "column", "paper_gb", "ours_gb"], rows)]


def max_deviation(component_bytes: dict[str, int] | None = None) -> float:
    """Largest |ours - paper| over the cells the paper prints (GB)."""
    return max(abs(c["ours"] - c["paper"]) for c in cells(component_bytes) if c.get("paper") is not None)


if __name__ == "__main__":
    raise SystemExit(figure_cli(draw, __doc__))
