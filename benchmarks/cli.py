"""``fimkit bench``: step time, floor and memory of fimkit's optimizers against torch's Adam and other
packages' versions of the same algorithms (options below; ``benchmarks/README.md``)."""

from __future__ import annotations

import difflib
import shlex
import sys
import time
from pathlib import Path

import torch

from experiments.cli import command_parser
from experiments.runtime import keep_freed_memory
from fimkit.optim import registered

from .machine import describe_machine
from .paper_tables import PAPER_MODELS, print_table3
from .report import git_revision, markdown, write
from .step_time import model_matrix_shapes
from .suite import Plan, run_at
from .sweep import DEFAULT_SIZES, plot_sweep

DEFAULT_OPTIMIZERS = ("racs", "alice", "alice0")
RESULTS = Path(__file__).parent / "results"


def optimizer_names(text: str) -> list[str]:
    """``--optimizers``: registered names (comma-separated) or ``all``; any other name is a
    ``ValueError`` that suggests the closest and lists the valid ones."""
    valid = sorted(registered())
    if text.strip().lower() == "all":
        return valid
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    if not names:
        raise ValueError(f"--optimizers {text!r} names no optimizer; valid: {', '.join(valid)}, or 'all'")
    for name in names:
        if name not in valid:
            close = difflib.get_close_matches(name, valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"--optimizers: {name!r} is not a registered optimizer{hint}; valid: "
                             f"{', '.join(valid)}, or 'all'")
    return names


def int_list(text: str) -> tuple[int, ...]:
    """``1,2`` -> (1, 2); a ``ValueError`` names what is not a positive integer."""
    values = tuple(int(v) for v in text.split(",") if v.strip())
    if not values or min(values) < 1:
        raise ValueError(f"{text!r}: expected comma-separated positive integers")
    return values


def shape_list(text: str) -> list[tuple[int, int]]:
    """``64x48,48x64`` -> [(64, 48), (48, 64)]."""
    return [tuple(int(d) for d in item.lower().split("x")) for item in text.split(",") if item.strip()]


def bench_command(argv: list[str]) -> int:
    """Benchmark optimizer steps against torch.optim.Adam (foreach and fused), the machine's floor
    and other packages' versions; optionally a size sweep and end-to-end training throughput."""
    parser = command_parser("fimkit bench", bench_command.__doc__)
    parser.add_argument("--optimizers", default=",".join(DEFAULT_OPTIMIZERS), metavar="NAMES",
                        help="comma-separated registered names (`fimkit optimizers`), or 'all'")
    parser.add_argument("--model", default="60M", choices=list(PAPER_MODELS),
                        help="paper model whose attention and MLP matrices are stepped")
    parser.add_argument("--shapes", type=shape_list, default=None, metavar="MxN,...",
                        help="step these matrices instead of --model's, e.g. 64x48,48x64 (default: --model's)")
    parser.add_argument("--repeats", type=int, default=15, help="interleaved timing rounds")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per optimizer")
    parser.add_argument("--amortise-over", type=int, default=200, metavar="K",
                        help="switch interval K over which a switch step is amortised")
    parser.add_argument("--threads", default=None, metavar="N[,N...]",
                        help="torch.set_num_threads; several (1,2) run one after the other in this process "
                             "(default: torch's)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--no-packages", dest="packages", action="store_false",
                        help="leave out pytorch-optimizer, galore-torch, apollo-torch and heavyball (the "
                             "`bench` extra; each one not installed is skipped anyway)")
    parser.add_argument("--sweep-sizes", default=None, metavar="N[,N...]",
                        help="run the size sweep over square N x N matrices (default: no sweep; --full: 256,...,4096)")
    parser.add_argument("--sweep-repeats", type=int, default=3, help="timing rounds per sweep size")
    parser.add_argument("--sweep-max-step-ms", type=float, default=2000.0,
                        help="a candidate slower than this at one size is not run at larger ones")
    parser.add_argument("--e2e", default=None, metavar="PROTOCOL",
                        help="also measure training tokens/s of Adam, RACS and Alice on this reproduction protocol, "
                             "e.g. nano (default: not measured; --full: nano)")
    parser.add_argument("--e2e-rounds", type=int, default=None, help="interleaved training rounds (default: "
                        "the protocol's, at least two switching periods)")
    parser.add_argument("--full", action="store_true",
                        help="everything issue 14 asks for: the sweep (256..4096) and --e2e nano too")
    parser.add_argument("--out", type=Path, default=None,
                        help="also write the Markdown report to this file (default: print only)")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help=f"write <device>_bench.json, <device>_bench.md and the sweep plot here, e.g. {RESULTS} "
                             "(default: print only)")
    parser.add_argument("--return-freed-memory", action="store_true",
                        help="leave glibc's default of unmapping large freed blocks (every step then pays "
                             "page faults for its temporaries; fimkit train keeps freed memory, as the "
                             "default here does)")
    parser.add_argument("--table3", action="store_true",
                        help="print [P] Table 3 (memory, ours / paper) instead of timing")
    args = parser.parse_args(argv)
    try:
        names = optimizer_names(args.optimizers)
        threads = int_list(args.threads) if args.threads else (torch.get_num_threads(),)
        sizes = int_list(args.sweep_sizes) if args.sweep_sizes else (DEFAULT_SIZES if args.full else ())
    except ValueError as exc:
        print(f"fimkit bench: error: {exc}", file=sys.stderr)
        return 2

    if args.table3:
        print_table3()
        return 0
    if not args.return_freed_memory:
        keep_freed_memory()
    shapes = args.shapes or model_matrix_shapes(args.model)
    plan = Plan(names, shapes, repeats=args.repeats, warmup=args.warmup, amortise_over=args.amortise_over,
                device=args.device, packages=args.packages, sweep_sizes=sizes,
                sweep_repeats=args.sweep_repeats, sweep_max_step_ms=args.sweep_max_step_ms,
                e2e_protocol=args.e2e or ("nano" if args.full else None), e2e_rounds=args.e2e_rounds,
                progress=_progress)
    machine = describe_machine(torch.device(args.device))
    machine.pop("torch threads", None)   # per run below
    machine.pop("load average (1/5/15 min)", None)
    machine["freed memory (glibc)"] = "returned to the OS" if args.return_freed_memory else "kept, as in fimkit train"
    label = (f"{len(shapes)} matrices ({', '.join(sorted({f'{s[0]}x{s[1]}' for s in shapes}))})" if args.shapes else
             f"the {args.model} model's {len(shapes)} attention and MLP matrices "
             f"({sum(s[0] * s[1] for s in shapes) / 1e6:.1f}M parameters, random gradients)")
    document = {"command": ("fimkit bench " + " ".join(shlex.quote(a) for a in argv)).strip(),
                "revision": git_revision(),   # of the code that runs, before anyone commits during the run
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "device": torch.device(args.device).type, "machine": machine, "shapes": shapes,
                "shapes_label": label, "runs": []}
    for count in threads:
        load = _load()
        run = run_at(plan, count)
        run["load"] = f"{load} at the start, {_load()} at the end"
        document["runs"].append(run)
        if len(document["runs"]) < len(threads):   # what is done so far survives a run cut short
            _save(document, args, partial=f"partial: {len(document['runs'])} of {len(threads)} thread counts")
    print(markdown(document))
    _save(document, args)
    return 0


def _save(document: dict, args, partial: str | None = None) -> None:
    document = {**document, "partial": partial} if partial else document
    text = markdown(document)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    if args.out_dir:
        written = write(document, args.out_dir, f"{document['device']}_bench")
        sweeps = {run["threads"]: run["sweep"] for run in document["runs"] if "sweep" in run}
        if sweeps:
            written += plot_sweep(sweeps, args.out_dir / f"{document['device']}_size_sweep")
        if not partial:
            print("wrote " + ", ".join(str(p) for p in written))


def _progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _load() -> str:
    path = Path("/proc/loadavg")
    return " ".join(path.read_text().split()[:3]) if path.exists() else "n/a"
