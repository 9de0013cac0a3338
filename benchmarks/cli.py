"""``fimkit bench``: step time and memory of fimkit's optimizers against torch's Adam."""

from __future__ import annotations

import difflib
import shlex
import sys
from pathlib import Path

import torch

from experiments.cli import command_parser
from experiments.runtime import keep_freed_memory
from fimkit.optim import registered

from .machine import describe_machine
from .paper_tables import PAPER_MODELS, print_table3
from .step_time import fimkit_candidate, format_results, measure, model_matrix_shapes, torch_adam

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


def bench_command(argv: list[str]) -> int:
    """Benchmark optimizer step time and memory against torch.optim.Adam (foreach and fused)."""
    parser = command_parser("fimkit bench", bench_command.__doc__)
    parser.add_argument("--optimizers", default=",".join(DEFAULT_OPTIMIZERS), metavar="NAMES",
                        help="comma-separated registered names (`fimkit optimizers`), or 'all'")
    parser.add_argument("--model", default="60M", choices=list(PAPER_MODELS),
                        help="paper model whose attention and MLP matrices are stepped")
    parser.add_argument("--repeats", type=int, default=15, help="interleaved timing rounds")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per optimizer")
    parser.add_argument("--amortise-over", type=int, default=200, metavar="K",
                        help="switch interval K over which a switch step is amortised")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"also write the Markdown table here, e.g. {RESULTS / 'cpu_step_time.md'} (default: print only)")
    parser.add_argument("--return-freed-memory", action="store_true",
                        help="leave glibc's default of unmapping large freed blocks (every step then pays "
                             "page faults for its temporaries; fimkit train keeps freed memory, as the "
                             "default here does)")
    parser.add_argument("--table3", action="store_true",
                        help="print [P] Table 3 (memory, ours / paper) instead of timing")
    args = parser.parse_args(argv)
    try:
        names = optimizer_names(args.optimizers)
    except ValueError as exc:
        print(f"fimkit bench: error: {exc}", file=sys.stderr)
        return 2

    if args.table3:
        print_table3()
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.return_freed_memory:
        keep_freed_memory()
    candidates = [torch_adam("foreach"), torch_adam("fused")]
    candidates += [fimkit_candidate(name, amortise_over=args.amortise_over) for name in names]
    shapes = model_matrix_shapes(args.model)
    results = measure(candidates, shapes, repeats=args.repeats, warmup=args.warmup, device=args.device)
    command = "fimkit bench " + " ".join(shlex.quote(a) for a in argv)
    machine = describe_machine(torch.device(args.device))
    machine["freed memory (glibc)"] = "returned to the OS" if args.return_freed_memory else "kept, as in fimkit train"
    table = format_results(results, machine, command.strip(),
                           f"the {args.model} model's {len(shapes)} attention and MLP matrices "
                           f"({sum(s[0] * s[1] for s in shapes) / 1e6:.1f}M parameters, random gradients)")
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n")
    return 0
