"""``fimkit diagnose``: which Fisher structure do a LLaMA's real gradients support, over training?

    fimkit diagnose --preset nano --optimizer adam --steps 400 --at 1 100 200 400 \\
        --layers layers.1.attn.q_proj layers.1.mlp.down_proj --block 16x32 --samples 512

Trains the run with ``fimkit train``'s own loop (resumed from its checkpoint at each step of
``--at``; ``--checkpoint`` diagnoses one saved model instead), and at each of those steps collects
per-sequence gradients of small weight blocks (``fimkit.diagnostics.per_sample_gradients``) on a
fixed set of training sequences. For each block it reports, with ``fimkit.diagnostics``, the
relative error of every built-in structure's Frobenius-optimal member, of what each optimizer
uses after a replay of the same gradients (``fimkit.optimizer_fisher``), raw and rescaled, and
the sampling noise of ``F``. Outputs in ``--results`` (default ``<run>/diagnostics``):
``fit_errors.csv``, ``fit_errors.md``, ``error_vs_step.{png,svg}``, ``error_vs_state.{png,svg}``,
each naming the command and the code revision.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import math
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from experiments.atomic import write_text_atomic
from experiments.checkpoint import CHECKPOINT, load_checkpoint
from experiments.cli import USER_ERRORS
from experiments.config import TrainConfig, add_config_arguments, config_from_args
from experiments.config_files import load_config
from experiments.figures import save_figure
from experiments.metrics import CONFIG
from experiments.model import LLaMA, ModelConfig
from experiments.optimizers import default_hparams
from experiments.presets import PRESETS, get_preset
from experiments.progress import log
from experiments.provenance import code_revision, command_line
from experiments.specs import slug
from fimkit import diagnostics
from fimkit.optimizer_fisher import READERS

CSV_NAME, MARKDOWN_NAME = "fit_errors.csv", "fit_errors.md"
FIELDS = ("step", "block", "kind", "label", "error", "rescaled_error", "scale", "half_error", "extrapolated_error",
          "numel", "samples", "how")
TRAINING_HELP = {
    "optimizer": "optimizer the model is trained with, the trajectory diagnosed; a name or a structure spec as in "
                 "`fimkit train --optimizer` (default: adam)",
    "steps": "training steps, the schedule's length (default: the preset's)",
    "out": "run folder (default: runs/diagnose-PRESET-OPTIMIZER)",
}
#: hyperparameters tied to the whole weight's shape: the replay rescales them to the block
SHAPE_KEYS = ("rank", "leading")
MARKERS = "osD^"


def parse_block(text: str) -> tuple[int, int]:
    rows, sep, cols = text.lower().partition("x")
    if not sep or not rows.isdigit() or not cols.isdigit() or int(rows) < 1 or int(cols) < 1:
        raise argparse.ArgumentTypeError(f"expected ROWSxCOLS such as 16x32, got {text!r}")
    return int(rows), int(cols)


def parse_offset(text: str) -> tuple[int, int]:
    row, sep, col = text.partition(",")
    if not sep or not row.isdigit() or not col.isdigit():
        raise argparse.ArgumentTypeError(f"expected ROW,COL such as 0,0, got {text!r}")
    return int(row), int(col)


class OneLineErrors(argparse.ArgumentParser):
    """Bad input ends with one line naming the problem (and exit status 2), not the usage text."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrors(
        prog="fimkit diagnose", description=diagnose_command.__doc__,
        epilog=f"presets: {', '.join(PRESETS)}. Training options default to the preset's or the paper's value.")
    parser.add_argument("--config", help="train as this run's config.json does (repeats its trajectory)")
    parser.add_argument("--checkpoint", help="diagnose this checkpoint.pt only (its run folder's config.json "
                                             "gives the model); no training")
    parser.add_argument("--at", nargs="+", type=int, metavar="STEP",
                        help="steps at which to collect gradients (default: 1 and each quarter of --steps)")
    parser.add_argument("--layers", nargs="+", metavar="MODULE",
                        help="nn.Linear modules to sample (default: the middle layer's attn.q_proj and mlp.down_proj)")
    parser.add_argument("--block", type=parse_block, default=(16, 32), metavar="ROWSxCOLS",
                        help="size of each weight block (rows = outputs, cols = inputs); F is (rows*cols)^2")
    parser.add_argument("--offset", type=parse_offset, default=(0, 0), metavar="ROW,COL",
                        help="top-left corner of each block in its weight")
    parser.add_argument("--samples", type=int, default=512, help="sequences (one gradient each) per step")
    parser.add_argument("--sample-seed", type=int, default=1234,
                        help="seed of the training sequences sampled (the same ones at every step)")
    parser.add_argument("--ranks", nargs="+", type=int, default=list(diagnostics.DEFAULT_RANKS),
                        help="ranks of LowRankPlusDiagonal to fit (those below the block's rows)")
    parser.add_argument("--replay", nargs="*", default=list(diagnostics.DEFAULT_OPTIMIZERS), metavar="OPTIMIZER",
                        help=f"optimizers whose own F~ is measured (available: {', '.join(sorted(READERS))})")
    parser.add_argument("--results", help="output folder (default: <run folder>/diagnostics; with --checkpoint "
                                          "runs/diagnose-<its run folder's name>)")
    add_config_arguments(parser)
    for action in parser._actions:  # the shared training flags, said of the diagnosed run
        if action.dest in TRAINING_HELP:
            action.help = TRAINING_HELP[action.dest]
    return parser


def check_arguments(args: argparse.Namespace, cfg: TrainConfig) -> list[int]:
    """The collection steps; raises ValueError on any inconsistent input."""
    if args.samples < 2:
        raise ValueError(f"--samples must be at least 2, got {args.samples}")
    unknown = sorted(set(args.replay) - set(READERS))
    if unknown:
        raise ValueError(f"--replay: no Fisher reader for {unknown}; available: {', '.join(sorted(READERS))}")
    if args.checkpoint:
        if args.at or args.config:
            raise ValueError("--checkpoint diagnoses one saved model: it takes neither --at nor --config")
        return []
    steps = sorted(set(args.at or [1, *(cfg.steps * k // 4 for k in (1, 2, 3, 4))]) - {0})
    if any(s < 1 or s > cfg.steps for s in (args.at or steps)):
        raise ValueError(f"--at steps must be between 1 and --steps ({cfg.steps}), got {args.at}")
    return steps


def blocks_for(args: argparse.Namespace, model_cfg: ModelConfig) -> list[diagnostics.LinearBlock]:
    middle = model_cfg.n_layers // 2
    names = args.layers or [f"layers.{middle}.attn.q_proj", f"layers.{middle}.mlp.down_proj"]
    (rows, cols), (row0, col0) = args.block, args.offset
    return [diagnostics.LinearBlock(name, (row0, row0 + rows), (col0, col0 + cols)) for name in names]


def load_model(checkpoint: Path) -> tuple[LLaMA, TrainConfig, int]:
    """The model saved in ``checkpoint`` (shape from its run folder's ``config.json``), its
    training config and step."""
    if not checkpoint.exists():
        raise FileNotFoundError(f"no checkpoint at {checkpoint}")
    record_path = checkpoint.parent / CONFIG
    if not record_path.exists():
        raise FileNotFoundError(f"{record_path} (the run's config.json, which gives the model's shape) is missing")
    state = load_checkpoint(checkpoint)
    model = LLaMA(ModelConfig(**json.loads(record_path.read_text())["model"]))
    model.load_state_dict(state["model"])
    return model, TrainConfig.from_dict(state["config"]), int(state["loop"]["step"])


def sample_sequences(cfg: TrainConfig, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` training windows drawn with ``seed`` (independent of the training order)."""
    from experiments.data import DataSpec, prepare
    from experiments.data.location import resolve_cache
    from experiments.data.shards import TokenBatches, open_shard

    data = prepare(DataSpec(tuple(cfg.data), cfg.tokenizer, cfg.vocab_size, cfg.val_fraction), resolve_cache(cfg.cache))
    return TokenBatches(open_shard(data.train), cfg.seq_len, seed).next(count)


def collect(model: LLaMA, blocks, inputs, targets, micro_batch: int) -> dict:
    """Per-sequence gradients (samples, rows, cols) of each block: gradients of each sequence's
    mean token loss, in float64."""
    parts = {block: [] for block in blocks}
    for x, y in zip(inputs.split(micro_batch), targets.split(micro_batch)):
        def per_sequence_loss(model, x=x, y=y):
            logits = model(x).float()
            return F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(x.shape).mean(1)
        for block, grads in diagnostics.per_sample_gradients(model, blocks, per_sequence_loss).items():
            parts[block].append(grads.double())
    return {block: torch.cat(chunks) for block, chunks in parts.items()}


def replay_hparams(cfg: TrainConfig, names: list[str]) -> dict[str, tuple[str, dict]]:
    """Each replayed optimizer with the run's hyperparameters (intervals scaled to its length),
    except those tied to the weight's shape: the library sizes rank and leading to the block."""
    preset = get_preset(cfg.preset)
    return {name: (name, {k: v for k, v in default_hparams(name, preset, cfg.steps).items() if k not in SHAPE_KEYS})
            for name in names}


def diagnose_step(model, step: int, blocks, sequences, cfg: TrainConfig, args) -> list[dict]:
    start = time.perf_counter()
    grads = collect(model, blocks, *sequences, cfg.micro_batch)
    rows = []
    for block in blocks:
        structures = diagnostics.builtin_structures(*block.shape, ranks=args.ranks)
        fits = diagnostics.diagnose(grads[block], structures, replay_hparams(cfg, args.replay))
        rows += [{"step": step, "block": block.label, **dataclasses.asdict(f), "samples": len(grads[block])}
                 for f in fits]
    log(f"step {step}: {len(blocks)} blocks x {args.samples} samples diagnosed in {time.perf_counter() - start:.0f} s")
    return rows


def train_and_diagnose(cfg: TrainConfig, steps: list[int], args) -> tuple[list[dict], str]:
    """The rows of every step, and a line on the model diagnosed."""
    from experiments.train import train

    checkpoint = Path(cfg.out) / CHECKPOINT
    sequences, rows, summary = None, [], {}
    for step in steps:
        summary = train(cfg, resume=True, until_step=step)
        model, _, saved_step = load_model(checkpoint)
        if saved_step != step:
            raise ValueError(f"the run in {cfg.out} is already at step {saved_step}, past {step}; use a new --out")
        sequences = sequences or sample_sequences(cfg, args.samples, args.sample_seed)
        rows += diagnose_step(model, step, blocks_for(args, model.cfg), sequences, cfg, args)
    loss = summary.get("final_eval_loss")
    return rows, (f"Trajectory: `{cfg.out}`, {cfg.optimizer} at lr {cfg.lr:g}, eval loss "
                  f"{'none' if loss is None else f'{loss:.6f}'} at step {summary.get('steps')}.")


# ------------------------------------------------------------------------------------ outputs
def provenance(argv: list[str]) -> str:
    """Which command made an output, and at which code revision (called from the shell, the
    command line itself; called as a function, the equivalent command)."""
    command = command_line() if sys.argv[1:] == ["diagnose", *argv] else shlex.join(["fimkit", "diagnose", *argv])
    return f"made by `{command}` at revision {code_revision()}"


def write_csv(path: Path, rows: list[dict], note: str) -> None:
    buffer = io.StringIO()
    buffer.write(f"# {note}\n")
    writer = csv.DictWriter(buffer, FIELDS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})
    write_text_atomic(path, buffer.getvalue())


def markdown(rows: list[dict], cfg: TrainConfig, seconds: float, note: str, model_line: str) -> str:
    """Per block: the rescaled error of every row at every step; at the last step also the raw
    error, c* and the extrapolation to infinitely many samples; then the best fits per step."""
    steps = sorted({r["step"] for r in rows})
    out = [f"# Fit of structured Fishers to per-sequence gradients ({cfg.preset}, trained with {cfg.optimizer})", "",
           f"Rescaled error `min_c ||F - c F~|| / ||F||` at each step ({rows[0]['samples']} sequences of "
           f"{cfg.seq_len} tokens; {seconds / 60:.1f} minutes in all). At the last step also the raw error, "
           f"`c*` and the estimate for infinitely many samples (`sqrt(2 e(k)^2 - e(k/2)^2)`). Structures: their "
           f"Frobenius-optimal member. Optimizers: the F~ their state implies after a replay of the same "
           f"gradients, one a step (`fimkit.optimizer_fisher`). Numbers: what F~ needs (structures) or what "
           f"the optimizer stores (its whole state). Every value: `{CSV_NAME}`.", "", model_line]
    last = steps[-1]
    for block in dict.fromkeys(r["block"] for r in rows):
        mine = [r for r in rows if r["block"] == block]
        table: dict[tuple[str, str], dict] = {}
        for r in mine:
            table.setdefault((r["kind"], r["label"]), {})[r["step"]] = r
        out += ["", f"## `{block}`", "",
                "| kind | F~ | numbers | " + " | ".join(f"step {s}" for s in steps)
                + f" | raw ({last}) | c* | k→∞ |",
                "|---|---|---|" + "---|" * (len(steps) + 3)]
        order = sorted(table, key=lambda key: (diagnostics.KINDS.index(key[0]), table[key][last]["rescaled_error"]))
        for kind, label in order:
            row, final = table[kind, label], table[kind, label][last]
            cells = " | ".join(f"{row[s]['rescaled_error']:.3f}" if s in row else "" for s in steps)
            out.append(f"| {kind} | {label} | {final['numel']} | {cells} | {final['error']:.3f} | "
                       f"{final['scale']:.3g} | {final['extrapolated_error']:.3f} |")
        for step in steps:
            ranked = sorted((r for r in mine if r["step"] == step and r["kind"] == "structure"),
                            key=lambda r: r["rescaled_error"])
            out.append(f"\nStep {step}: best {ranked[0]['label']} ({ranked[0]['rescaled_error']:.3f}), then "
                       f"{ranked[1]['label']} ({ranked[1]['rescaled_error']:.3f}); worst {ranked[-1]['label']} "
                       f"({ranked[-1]['rescaled_error']:.3f}).")
    return "\n".join(out) + f"\n\n<sub>{note}</sub>\n"


def plot_over_steps(ax, rows: list[dict], block: str, kind: str, legend: bool) -> None:
    series: dict[tuple[str, str], list] = {}
    for r in rows:
        if r["block"] == block and r["kind"] in (kind, "noise"):
            series.setdefault((r["kind"], r["label"]), []).append((r["step"], r["rescaled_error"]))
    for index, ((k, label), points) in enumerate(series.items()):
        xs, ys = zip(*sorted(points))
        if k == "noise":
            ax.plot(xs, ys, color="0.3", linestyle=":", linewidth=1, label="sampling noise of F (not a floor)")
        else:
            ax.plot(xs, ys, marker=MARKERS[index % len(MARKERS)], markersize=3, linewidth=1.2, label=label,
                    linestyle="-" if index % 2 else "--")
    from matplotlib.ticker import NullLocator, ScalarFormatter

    ax.set_xscale("log")  # the early steps (warm-up) change fastest
    ax.set_xticks(sorted({r["step"] for r in rows}))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_title(f"{block}: {kind}s", fontsize=9)
    ax.set_xlabel("training step")
    ax.set_ylabel("rescaled ||F - F~|| / ||F||")
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=6, ncol=3, loc="lower center", bbox_to_anchor=(0.5, 1.08))


def plot_against_numel(ax, rows: list[dict], block: str, step: int) -> None:
    for r in rows:
        if r["block"] == block and r["step"] == step and r["kind"] != "noise":
            structure = r["kind"] == "structure"
            color = "tab:blue" if structure else "tab:red"
            ax.scatter(r["numel"], r["rescaled_error"], marker="o" if structure else "x", s=18, color=color)
            ax.annotate(r["label"], (r["numel"], r["rescaled_error"]), fontsize=5, xytext=(3, 2),
                        textcoords="offset points", color=color)
    ax.set_xscale("log")
    ax.set_title(f"{block}, step {step}", fontsize=9)
    ax.set_xlabel("numbers stored (o: F~'s parameters; x: an optimizer's whole state)")
    ax.set_ylabel("rescaled ||F - F~|| / ||F||")
    ax.grid(alpha=0.3)


def draw(rows: list[dict], results: Path, note: str) -> list[Path]:
    """Error vs step (a row per block: structures, optimizers) and error vs numbers stored."""
    import matplotlib

    matplotlib.use("Agg")  # files only
    import matplotlib.pyplot as plt

    blocks = list(dict.fromkeys(r["block"] for r in rows))
    with plt.rc_context({"axes.prop_cycle": plt.cycler(color=plt.get_cmap("tab20").colors)}):
        fig, axes = plt.subplots(len(blocks), 2, figsize=(13, 3.6 * len(blocks) + 1.5), squeeze=False, sharex=True)
        for row, block in enumerate(blocks):
            for col, kind in enumerate(("structure", "optimizer")):
                plot_over_steps(axes[row][col], rows, block, kind, legend=row == 0)
        paths = save_figure(fig, results / "error_vs_step", note=note, tight=True)
        columns = min(2, len(blocks))
        grid_rows = math.ceil(len(blocks) / columns)
        fig, axes = plt.subplots(grid_rows, columns, figsize=(6.5 * columns, 5 * grid_rows), squeeze=False, sharey=True)
        for index, block in enumerate(blocks):
            plot_against_numel(axes[index // columns][index % columns], rows, block, max(r["step"] for r in rows))
        for ax in axes.flat[len(blocks):]:
            ax.set_visible(False)
        return paths + save_figure(fig, results / "error_vs_state", note=note, tight=True)


def write_outputs(rows: list[dict], cfg: TrainConfig, results: Path, seconds: float, note: str,
                  model_line: str) -> list[Path]:
    results.mkdir(parents=True, exist_ok=True)
    write_csv(results / CSV_NAME, rows, note)
    write_text_atomic(results / MARKDOWN_NAME, markdown(rows, cfg, seconds, note, model_line))
    return [results / CSV_NAME, results / MARKDOWN_NAME, *draw(rows, results, note)]


def diagnose_command(argv: list[str]) -> int:
    """Fit every Fisher structure and each optimizer's own F~ to real gradients of a trained preset."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a one-line parse error
        return int(exc.code or 0)
    start, note = time.perf_counter(), provenance(argv)  # the revision of the code that runs
    try:
        if args.checkpoint:
            cfg = TrainConfig()
            check_arguments(args, cfg)
            model, cfg, step = load_model(Path(args.checkpoint))
            torch.set_num_threads(args.threads or torch.get_num_threads())
            sequences = sample_sequences(cfg, args.samples, args.sample_seed)
            rows = diagnose_step(model, step, blocks_for(args, model.cfg), sequences, cfg, args)
            model_line = f"Model: `{args.checkpoint}`, step {step} of a run with {cfg.optimizer}."
            # never write into the checkpoint's own run folder (another run's outputs)
            results = Path(args.results or f"runs/diagnose-{Path(args.checkpoint).parent.name}")
        else:
            cfg = config_from_args(args, load_config(args.config) if args.config else None)
            if args.out is None:  # never train on in another run's folder (a --config's own)
                cfg.out = f"runs/diagnose-{cfg.preset}-{slug(cfg.optimizer)}"
            cfg = cfg.resolve()
            steps = check_arguments(args, cfg)
            with torch.device("meta"):  # check the blocks before any training
                shape = dataclasses.replace(get_preset(cfg.preset).model, vocab_size=cfg.vocab_size)
                empty = LLaMA(shape)
            for block in blocks_for(args, shape):
                block.linear(empty)
            rows, model_line = train_and_diagnose(cfg, steps, args)
            results = Path(args.results or Path(cfg.out) / "diagnostics")
        for path in write_outputs(rows, cfg, results, time.perf_counter() - start, note, model_line):
            print(path)
    except USER_ERRORS as exc:
        print(f"fimkit diagnose: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # `python -m experiments.diagnose ...` = `fimkit diagnose ...`
    sys.exit(diagnose_command(sys.argv[1:]))
