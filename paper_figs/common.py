"""What every figure script shares: the finished runs of a reproduction, and how outputs are written.

:class:`Runs` reads a reproduction's run folders (``metrics.jsonl``, ``summary.json``,
``switches.jsonl``) through the same plan that trained them, so a figure asks for "the runs of
Fig 5a" by role and label, never by folder name. Every output names the command and the code
revision that produced it (:func:`provenance`): figures in their metadata and footer, CSV files
in a first ``#`` line, markdown in a last line.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from experiments.atomic import write_text_atomic
from experiments.figures import provenance, save_figure  # noqa: F401 (re-exported for the figure scripts)
from experiments.reproduce.plan import Plan, RunSpec
from experiments.reproduce.protocol import Protocol
from experiments.reproduce.runner import current_plan

Curve = list[tuple[float, float]]  # (tokens, eval loss)


@dataclass
class Runs:
    protocol: Protocol
    runs_dir: Path
    plan: Plan
    results: dict[str, float]  # run id -> final eval loss (inf: diverged)

    @classmethod
    def load(cls, protocol: Protocol, runs_dir: str | Path) -> Runs:
        current, results = current_plan(protocol, Path(runs_dir))
        return cls(protocol, Path(runs_dir), current, results)

    @property
    def probes_dir(self) -> Path:
        """Memory and throughput measurements (``experiments.reproduce.probes``)."""
        return self.runs_dir.parent / f"{self.protocol.name}-probes"

    def role(self, name: str) -> dict[str, RunSpec]:
        """label -> spec of the runs of ``name`` that have finished (in the plan's order)."""
        return {label: s for label, s in self.plan.roles.get(name, {}).items() if s.id in self.results}

    def done(self, spec: RunSpec | None) -> bool:
        return spec is not None and spec.id in self.results

    def records(self, spec: RunSpec, name: str = "metrics.jsonl") -> list[dict[str, Any]]:
        path = self.runs_dir / spec.id / name
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def curve(self, spec: RunSpec) -> Curve:
        return [(r["tokens"], r["eval_loss"]) for r in self.records(spec) if "eval_loss" in r]

    def final(self, spec: RunSpec) -> float:
        return self.results[spec.id]

    def summary(self, spec: RunSpec) -> dict[str, Any]:
        return json.loads((self.runs_dir / spec.id / "summary.json").read_text())

    def revisions(self) -> list[str]:
        """The code revisions the finished runs were trained with."""
        found = set()
        for run_id in self.results:
            try:
                config = json.loads((self.runs_dir / run_id / "config.json").read_text())
            except (OSError, json.JSONDecodeError):
                continue
            found.add(config.get("versions", {}).get("revision", "unknown"))
        return sorted(found)


def ppl(loss: float) -> float:
    return math.exp(loss) if math.isfinite(loss) and loss < 700 else math.inf


def write_csv(path: str | Path, header: list[str], rows: Iterable[Iterable[Any]]) -> Path:
    buffer = io.StringIO()
    buffer.write(f"# {provenance()}\n")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([f"{v:.6g}" if isinstance(v, float) else v for v in row])
    write_text_atomic(Path(path), buffer.getvalue())
    return Path(path)


def read_csv(path: str | Path) -> list[dict[str, str]]:
    """The rows of a CSV written by :func:`write_csv` (its ``#`` line skipped)."""
    lines = [line for line in Path(path).read_text().splitlines() if not line.startswith("#")]
    return list(csv.DictReader(lines))


def write_markdown(path: str | Path, text: str) -> Path:
    write_text_atomic(Path(path), text.rstrip() + f"\n\n<sub>{provenance()}</sub>\n")
    return Path(path)


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: works without a display
    import matplotlib.pyplot as plt

    return plt


def figure_cli(draw, description: str) -> int:
    """``python -m paper_figs.<script> --preset nano [--runs DIR] [--out DIR]``: one figure alone."""
    import argparse

    from experiments.reproduce.protocol import get_protocol

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--preset", default="nano")
    parser.add_argument("--runs", default=None, help="default: paper_figs/runs/<preset>")
    parser.add_argument("--out", default=None, help="default: paper_figs/<preset>")
    args = parser.parse_args()
    protocol = get_protocol(args.preset)
    runs = Runs.load(protocol, args.runs or f"paper_figs/runs/{protocol.name}")
    for path in draw(runs, Path(args.out or f"paper_figs/{protocol.name}")):
        print(path)
    return 0
