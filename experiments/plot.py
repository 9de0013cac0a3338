"""``fimkit plot RUN_DIR...``: look at finished or running runs without writing code.

    fimkit plot runs/tiny-adam runs/tiny-racs --out runs/plots/tiny

Reads each folder's ``metrics.jsonl`` (a torn last line of a run still being written is
skipped) and draws, against tokens: the training loss (raw and smoothed), the held-out loss,
the learning rate and the throughput; the losses also against steps. Writes ``PLOT.png`` and
``PLOT.svg`` (``--name``) into ``--out``, and prints one summary line per run.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from experiments.metrics import METRICS
from experiments.figures import save_figure, smooth


def read_metrics(run_dir: Path) -> list[dict]:
    """The records of ``run_dir/metrics.jsonl``; a partial last line (a run writing it) is skipped."""
    path = run_dir / METRICS
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} has no {METRICS}: is it a run folder (fimkit train --out)?")
    records, lines = [], path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                break  # the line a running job is writing
            raise ValueError(f"{path}: line {number} is not JSON") from None
    return records


def label_of(run_dir: Path) -> str:
    config = run_dir / "config.json"
    try:
        train = json.loads(config.read_text()).get("train", {})
        return f"{run_dir.name} ({train.get('optimizer', '?')}, lr {train.get('lr', '?')})"
    except (OSError, json.JSONDecodeError):
        return run_dir.name


def plot_runs(run_dirs: list[Path], out: Path, name: str = "plot") -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    (train_tok, eval_tok, lr_ax), (train_step, eval_step, tps_ax) = axes
    finals = []
    for i, run_dir in enumerate(run_dirs):
        records, color, label = read_metrics(run_dir), f"C{i % 10}", label_of(run_dir)
        if not records:
            continue
        tokens = [r["tokens"] / 1e6 for r in records]
        steps = [r["step"] for r in records]
        losses = [r["train_loss"] for r in records]
        for ax, x in ((train_tok, tokens), (train_step, steps)):
            ax.plot(x, losses, color=color, alpha=0.2, lw=0.6)
            ax.plot(x, smooth(losses), color=color, lw=1.3, label=label)
        evals = [r for r in records if "eval_loss" in r]
        for ax, key, scale in ((eval_tok, "tokens", 1e6), (eval_step, "step", 1)):
            ax.plot([r[key] / scale for r in evals], [r["eval_loss"] for r in evals], "o-", ms=3, color=color, label=label)
        lr_ax.plot(tokens, [r.get("lr", math.nan) for r in records], color=color, label=label)
        tps_ax.plot(tokens, [r.get("tokens_per_s", math.nan) for r in records], color=color, label=label)
        finals += [r["eval_loss"] for r in evals[-1:]] or losses[-1:]
        last = records[-1]
        print(f"{run_dir}: step {last['step']}, {last['tokens']:,} tokens, train loss {last['train_loss']:.4f}"
              + (f", eval loss {evals[-1]['eval_loss']:.4f}" if evals else ""))
    titles = (("training loss (EMA 0.9; faint: raw)", "tokens (M)"), ("held-out loss", "tokens (M)"),
              ("learning rate (matrix group)", "tokens (M)"), ("training loss", "step"),
              ("held-out loss", "step"), ("throughput (tokens/s)", "tokens (M)"))
    for ax, (title, xlabel) in zip(axes.flat, titles):
        ax.set(title=title, xlabel=xlabel)
        ax.grid(alpha=0.3)
    if finals:  # the first steps' losses (~ ln vocab) would squash the interesting part
        for ax in (train_tok, train_step, eval_tok, eval_step):
            ax.set_ylim(min(finals) - 0.3, min(finals) + 2.5)
    eval_tok.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, out / name)


def plot_command(argv: list[str]) -> int:
    """Plot the loss curves, learning rate and throughput of one or more runs (PNG and SVG)."""
    parser = argparse.ArgumentParser(prog="fimkit plot", description=plot_command.__doc__)
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (each with a metrics.jsonl)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: the first run folder)")
    parser.add_argument("--name", default="plot", help="file name without suffix (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        written = plot_runs(args.runs, args.out or args.runs[0], args.name)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        print(f"fimkit plot: error: {exc}", file=sys.stderr)
        return 2
    print("wrote " + ", ".join(map(str, written)))
    return 0
