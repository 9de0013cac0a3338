"""``fimkit train | compare | demo | data``: argument parsing only; the work is elsewhere.

fimkit's CLI finds these through the ``fimkit.commands`` entry points; each takes ``argv`` and
returns an exit code. Bad input (unknown preset or optimizer, missing files, no local T5
tokenizer) ends with a one-line error naming what to do, not a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from experiments.config import (
    TrainConfig,
    add_config_arguments,
    config_from_args,
    load_config,
)
from experiments.metrics import CONFIG
from experiments.presets import PRESETS

#: what bad input raises (a ValueError names the setting; an OSError the file): one line and exit 2
USER_ERRORS = (ValueError, OSError, FloatingPointError)


def _run(prog: str, action) -> int:
    try:
        action()
    except USER_ERRORS as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__  # one line
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted (resume with --resume)", file=sys.stderr)
        return 130
    return 0


def _base_config(args: argparse.Namespace) -> TrainConfig | None:
    """A config.json named with --config, or on --resume the run folder's own."""
    if getattr(args, "config", None):
        return load_config(args.config)
    if getattr(args, "resume", False):
        out = Path(args.out or TrainConfig(preset=args.preset or "tiny", optimizer=args.optimizer or "adam").resolve().out)
        if (out / CONFIG).exists():
            return load_config(out / CONFIG)
    return None


def train_command(argv: list[str]) -> int:
    """Train a LLaMA preset with one optimizer; writes metrics, config and checkpoints."""
    parser = argparse.ArgumentParser(
        prog="fimkit train", description=train_command.__doc__,
        epilog=f"presets: {', '.join(PRESETS)}. Every option defaults to the preset's or the paper's value.",
    )
    parser.add_argument("--config", help="start from a run's config.json (repeats that run)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    parser.add_argument("--until-step", type=int, default=None, help="stop (with a checkpoint) at this step")
    add_config_arguments(parser)
    args = parser.parse_args(argv)

    def action():
        from experiments.train import train

        train(config_from_args(args, _base_config(args)), resume=args.resume, until_step=args.until_step)

    return _run("fimkit train", action)


def compare_command(argv: list[str]) -> int:
    """Train several optimizers on the same batches and budget; write a table and loss plots."""
    parser = argparse.ArgumentParser(prog="fimkit compare", description=compare_command.__doc__)
    parser.add_argument("--optimizers", nargs="+", default=["adam", "racs", "alice"],
                        help="specs NAME[:KEY=VALUE,...], e.g. adam adam:lr=3e-3 alice:lm_head=matrix")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="one run per spec and seed")
    parser.add_argument("--resume", action="store_true", help="continue interrupted runs")
    add_config_arguments(parser, skip=("optimizer", "seed", "data_seed"))
    args = parser.parse_args(argv)

    def action():
        from experiments.compare import run_comparison, write_report

        base = config_from_args(args)
        out = args.out or f"runs/compare-{base.preset}"
        summaries = run_comparison(base, args.optimizers, args.seeds, out, resume=args.resume)
        table, plots = write_report(summaries, out)
        print(table.read_text())
        print(f"table: {table}\nplots: {', '.join(map(str, plots))}")

    return _run("fimkit compare", action)


def demo_command(argv: list[str]) -> int:
    """Build the corpus, train tiny with Adam, RACS and Alice, and plot them (~20 min on 2 cores)."""
    parser = argparse.ArgumentParser(prog="fimkit demo", description=demo_command.__doc__)
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--preset", default="tiny", choices=list(PRESETS))
    parser.add_argument("--steps", type=int, default=None, help="per optimizer (default: the preset's)")
    parser.add_argument("--optimizers", nargs="+", default=None, help="default: adam racs alice")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted demo")
    args = parser.parse_args(argv)

    def action():
        from experiments.demo import DEMO_OPTIMIZERS, run_demo

        base = TrainConfig(preset=args.preset, steps=args.steps)
        run_demo(args.out, base, args.optimizers or DEMO_OPTIMIZERS, args.resume)

    return _run("fimkit demo", action)


def data_command(argv: list[str]) -> int:
    """Build (or show) the cached corpus, tokenizer and token shards."""
    parser = argparse.ArgumentParser(prog="fimkit data", description=data_command.__doc__)
    parser.add_argument("--data", nargs="+", default=["debian"],
                        help="'debian' (Debian documentation via apt), 'installed', or .txt/.jsonl files or folders")
    parser.add_argument("--tokenizer", default="bpe", help="'bpe', 't5', 't5:PATH' or a tokenizer.json")
    parser.add_argument("--vocab-size", type=int, default=8192, help="of the BPE")
    parser.add_argument("--val-fraction", type=float, default=0.01, help="fraction of documents held out")
    parser.add_argument("--cache", default=".cache")
    args = parser.parse_args(argv)

    def action():
        from experiments.data import DataSpec, prepare

        TrainConfig(vocab_size=args.vocab_size, val_fraction=args.val_fraction).validate()
        data = prepare(DataSpec(tuple(args.data), args.tokenizer, args.vocab_size, args.val_fraction), args.cache)
        print(f"tokenizer: {data.tokenizer}\ntrain: {data.train} ({data.meta['train_tokens']:,} tokens)\n"
              f"val:   {data.val} ({data.meta['val_tokens']:,} tokens)")

    return _run("fimkit data", action)
