"""``fimkit bench``: step time and memory of fimkit's optimizers against torch's Adam."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import torch

from experiments.runtime import keep_freed_memory
from fimkit.optim import registered

from .machine import describe_machine
from .paper_tables import PAPER_MODELS, print_table3
from .step_time import fimkit_candidate, format_results, measure, model_matrix_shapes, torch_adam

DEFAULT_OPTIMIZERS = ("racs", "alice", "alice0")
RESULTS = Path(__file__).parent / "results"


def bench_command(argv: list[str]) -> int:
    """Benchmark optimizer step time and memory against torch.optim.Adam (foreach and fused)."""
    parser = argparse.ArgumentParser(prog="fimkit bench", description=bench_command.__doc__)
    parser.add_argument("--optimizers", default=",".join(DEFAULT_OPTIMIZERS),
                        help="comma-separated registered names, or 'all' (default: %(default)s)")
    parser.add_argument("--model", default="60M", choices=list(PAPER_MODELS),
                        help="paper model whose attention and MLP matrices are stepped (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=15, help="interleaved timing rounds (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per optimizer (default: %(default)s)")
    parser.add_argument("--amortise-over", type=int, default=200, metavar="K",
                        help="switch interval K over which a switch step is amortised (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"also write the Markdown table here (e.g. {RESULTS / 'cpu_step_time.md'})")
    parser.add_argument("--return-freed-memory", action="store_true",
                        help="leave glibc's default of unmapping large freed blocks (every step then pays "
                             "page faults for its temporaries; fimkit train keeps freed memory, as the "
                             "default here does)")
    parser.add_argument("--table3", action="store_true",
                        help="print [P] Table 3 (memory, ours / paper) instead of timing")
    args = parser.parse_args(argv)

    if args.table3:
        print_table3()
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.return_freed_memory:
        keep_freed_memory()
    names = sorted(registered()) if args.optimizers == "all" else [n for n in args.optimizers.split(",") if n]
    candidates = [torch_adam("foreach"), torch_adam("fused")]
    for name in names:
        if name not in registered():
            print(f"fimkit bench: {name!r} is not registered (have: {', '.join(sorted(registered()))}); "
                  f"left out", file=sys.stderr)
            continue
        candidates.append(fimkit_candidate(name, amortise_over=args.amortise_over))
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
