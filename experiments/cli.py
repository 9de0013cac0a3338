"""``fimkit train | compare | demo | data``: argument parsing only; the work is elsewhere.

fimkit's CLI finds these through the ``fimkit.commands`` entry points; each takes ``argv`` and
returns an exit code. Bad input (unknown preset, optimizer or config key, missing files, no local
T5 tokenizer) ends with a one-line error naming what to do, not a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from experiments.config import (
    SECTIONS,
    TrainConfig,
    add_config_arguments,
    config_from_args,
)
from experiments.config_files import load_config
from experiments.metrics import CONFIG
from experiments.presets import PRESETS

#: what bad input raises (a ValueError names the setting; an OSError the file): one line and exit 2
USER_ERRORS = (ValueError, OSError, FloatingPointError)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option's help ends with its default: argparse's value when it has one, else the help
    text says it (``None`` here means "the preset's", or "not given")."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "(default" in text or not action.option_strings or action.default in (None, argparse.SUPPRESS):
            return text
        if action.default is False:
            return text + " (default: off)"
        if isinstance(action.default, (list, tuple)):
            return text + " (default: " + " ".join(map(str, action.default)).replace("%", "%%") + ")"
        return text + " (default: %(default)s)"


def command_parser(prog: str, description: str | None, **kwargs) -> argparse.ArgumentParser:
    """The parser of one ``fimkit`` command: defaults shown in the help, and ``--version``."""
    from fimkit.cli import version

    parser = argparse.ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter, **kwargs)
    parser.add_argument("--version", action="version", version=f"fimkit {version()}",
                        help="print fimkit's version and exit")
    return parser


def _run(prog: str, action) -> int:
    """``action()``'s exit code (0 when it returns none); a user error is one line and 2."""
    try:
        code = action()
    except USER_ERRORS as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__  # one line
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted (resume with --resume)", file=sys.stderr)
        return 130
    return code or 0


def _base_config(args: argparse.Namespace) -> TrainConfig | None:
    """A config file named with --config (TOML, or a run's config.json), or on --resume the run
    folder's own config.json."""
    if getattr(args, "config", None):
        return load_config(args.config)
    if getattr(args, "resume", False):
        out = Path(args.out or TrainConfig(preset=args.preset or "tiny", optimizer=args.optimizer or "adam").resolve().out)
        if (out / CONFIG).exists():
            return load_config(out / CONFIG)
    return None


CONFIG_FILES = (f"TOML (sections {', '.join(f'[{s}]' for s in SECTIONS)}; see experiments/configs/example.toml) "
                f"or a run's config.json / run.toml")


def _repeated_corpus(config: str | None) -> dict | None:
    """The corpus record of the past run a ``--config run/config.json`` repeats (None for TOML)."""
    if not config or not str(config).endswith(".json"):
        return None
    import json

    from experiments.data.provenance import recorded_corpus

    return recorded_corpus(json.loads(Path(config).read_text()))


def train_command(argv: list[str]) -> int:
    """Train a LLaMA preset with one optimizer; writes metrics, config and checkpoints."""
    parser = command_parser(
        "fimkit train", train_command.__doc__,
        epilog=(f"presets: {', '.join(PRESETS)}.\n"
                "Settings come from the preset and the paper, then --config, then --set, then the flags.\n"
                "Example: fimkit train --preset tiny --steps 100 \\\n"
                "             --optimizer 'derive(Kronecker(Full(), DiagonalFactor()), lr=1e-2)'\n"
                "Several processes: fimkit train --preset tiny --nproc 2 [--parallel fsdp2], or\n"
                "             torchrun --nproc_per_node=2 -m experiments.train --preset tiny"),
    )
    parser.add_argument("--config", metavar="FILE",
                        help=f"start from a config file: {CONFIG_FILES}, which repeats that run (default: none)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    parser.add_argument("--until-step", type=int, default=None, metavar="STEP",
                        help="stop at this step with a checkpoint; --resume continues (default: train to the end)")
    add_config_arguments(parser)
    args = parser.parse_args(argv)

    def action():
        from experiments import distributed
        from experiments.train import train

        cfg = config_from_args(args, _base_config(args))
        resolved = cfg.resolve()  # a bad setting is one line here, before any process starts
        if distributed.needs_launch(resolved.parallel):
            return distributed.launch(argv, resolved.nproc)  # each process runs this command
        train(cfg, resume=args.resume, until_step=args.until_step, expected_corpus=_repeated_corpus(args.config))

    rank = int(os.environ.get("RANK", 0))
    return _run("fimkit train" if rank == 0 else f"fimkit train (rank {rank})", action)


def compare_command(argv: list[str]) -> int:
    """Train several optimizers on the same batches and budget; write a table and loss plots."""
    parser = command_parser("fimkit compare", compare_command.__doc__)
    parser.add_argument("--optimizers", nargs="+", default=["adam", "racs", "alice"], metavar="SPEC",
                        help="specs NAME[:KEY=VALUE,...], e.g. adam adam:lr=3e-3 alice:lm_head=matrix; NAME may be "
                             "a structure spec as in `fimkit train --optimizer`, e.g. "
                             "'derive(RowColumn(), lr=1e-2):lm_head=adam' or my_package.module:MyStructure")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], metavar="SEED",
                        help="one run per spec and seed")
    parser.add_argument("--config", metavar="FILE", help=f"start every run from a config file: {CONFIG_FILES}; "
                                                         f"each spec replaces its optimizer (default: none)")
    parser.add_argument("--resume", action="store_true", help="continue interrupted runs")
    # a comparison trains its runs one after the other in this process (fimkit train --nproc for more)
    add_config_arguments(parser, skip=("optimizer", "seed", "data_seed", "nproc", "parallel"))
    args = parser.parse_args(argv)

    def action():
        from experiments.compare import run_comparison, write_report

        base = config_from_args(args, load_config(args.config) if args.config else None)
        out = args.out or f"runs/compare-{base.preset}"
        summaries = run_comparison(base, args.optimizers, args.seeds, out, resume=args.resume)
        table, plots = write_report(summaries, out)
        print(table.read_text())
        print(f"table: {table}\nplots: {', '.join(map(str, plots))}")

    return _run("fimkit compare", action)


def demo_command(argv: list[str]) -> int:
    """Build the corpus, train tiny with Adam, RACS and Alice, and plot them (~20 min on 2 cores)."""
    from experiments.demo import DEMO_OPTIMIZERS

    parser = command_parser("fimkit demo", demo_command.__doc__)
    parser.add_argument("--out", default="runs/demo", help="folder of the runs, table and plots")
    parser.add_argument("--preset", default="tiny", metavar="{" + ",".join(PRESETS) + "}",
                        help="model and run preset")
    parser.add_argument("--steps", type=int, default=None, help="steps per optimizer (default: the preset's)")
    parser.add_argument("--optimizers", nargs="+", default=list(DEMO_OPTIMIZERS), metavar="SPEC",
                        help="optimizer specs, as in `fimkit compare`")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted demo")
    args = parser.parse_args(argv)

    def action():
        from experiments.demo import run_demo

        base = TrainConfig(preset=args.preset, steps=args.steps)
        base.resolve()  # an unknown preset or a bad --steps: one line, before the corpus is built
        run_demo(args.out, base, args.optimizers, args.resume)

    return _run("fimkit demo", action)


def data_command(argv: list[str]) -> int:
    """Build (or show) the cached corpus, tokenizer and token shards."""
    parser = command_parser("fimkit data", data_command.__doc__)
    parser.add_argument("--data", nargs="+", default=["debian"], metavar="SOURCE",
                        help="'debian' (Debian documentation via apt), 'installed', or .txt/.jsonl files or folders")
    parser.add_argument("--tokenizer", default="bpe", help="'bpe', 't5', 't5:PATH' or a tokenizer.json")
    parser.add_argument("--vocab-size", type=int, default=8192, help="of the BPE")
    parser.add_argument("--val-fraction", type=float, default=0.01, help="fraction of documents held out")
    parser.add_argument("--cache", default=None, metavar="DIR",
                        help="data cache folder (default: $FIMKIT_CACHE, else the platform's cache directory)")
    parser.add_argument("--where", action="store_true", help="print the cache folder (and what it holds); build nothing")
    args = parser.parse_args(argv)

    def action():
        from experiments.data import location

        cache = location.resolve_cache(args.cache)
        if args.where:
            print(cache)
            print(location.describe_cache(cache))
            return
        from experiments.data import DataSpec, prepare

        TrainConfig(vocab_size=args.vocab_size, val_fraction=args.val_fraction).validate()
        data = prepare(DataSpec(tuple(args.data), args.tokenizer, args.vocab_size, args.val_fraction), cache)
        from experiments.data.provenance import corpus_record, short

        print(f"tokenizer: {data.tokenizer}\ntrain: {data.train} ({data.meta['train_tokens']:,} tokens)\n"
              f"val:   {data.val} ({data.meta['val_tokens']:,} tokens)\ncorpus: {short(corpus_record(data))}")

    return _run("fimkit data", action)
