"""Where an optimizer's step goes: its ATen kernels on a paper model's matrices, grouped into
matrix products, factorisations, passes over whole matrices, small kernels (vectors, scalars),
and what is left of the step (Python and dispatch). The evidence behind "what bounds the misses"
in ``benchmarks/README.md``:

    python -m benchmarks.profile [--model 60M] [--optimizers adam,racs,adafactor,alice] [--threads 1,2]
                                 [--steps 3] [--out benchmarks/results/cpu_profile.md]

The profiler adds about a microsecond to every kernel, so a step with thousands of small
kernels reads slower profiled than timed: the table gives both, and the split is of the
profiled step.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field

import torch
from torch.profiler import ProfilerActivity, profile

from experiments.runtime import keep_freed_memory

from .machine import describe_machine
from .report import git_revision
from .step_time import Candidate, _make_params, _timed_step, fimkit_candidate, model_matrix_shapes, torch_adam

DEFAULT = ("adam", "racs", "adafactor", "sinkgd", "alice")
PRODUCTS = frozenset(f"aten::{op}" for op in (
    "mm", "addmm", "addmm_", "bmm", "baddbmm", "mv", "addmv", "addmv_", "dot", "vdot", "matmul", "linear",
    "einsum", "tensordot"))
FACTORISATIONS = frozenset(f"aten::{op}" for op in (
    "linalg_eigh", "_linalg_eigh", "linalg_eig", "linalg_qr", "qr", "geqrf", "orgqr", "ormqr",
    "linalg_householder_product", "linalg_svd", "_linalg_svd", "svd", "linalg_cholesky", "linalg_cholesky_ex",
    "cholesky", "linalg_solve", "_linalg_solve_ex", "linalg_solve_triangular", "triangular_solve", "linalg_inv",
    "linalg_inv_ex", "linalg_lu_factor_ex", "linalg_lstsq"))
CATEGORIES = ("products", "factorisations", "passes over matrices", "small kernels", "Python and dispatch")


def kernel_category(name: str, input_shapes, large: int) -> str:
    """The category of one ATen kernel: a product, a factorisation, an elementwise or reducing
    pass over a whole matrix (an input of at least ``large`` entries), or a small kernel."""
    if name in PRODUCTS:
        return "products"
    if name in FACTORISATIONS:
        return "factorisations"
    sizes = [math.prod(shape) for shape in (input_shapes or []) if isinstance(shape, (list, tuple)) and shape]
    return "passes over matrices" if sizes and max(sizes) >= large else "small kernels"


@dataclass
class StepProfile:
    label: str
    timed_ms: float                      # median unprofiled step
    profiled_ms: float                   # mean profiled step
    split_ms: dict[str, float]           # per category, per step
    calls: dict[str, int]                # ATen calls from Python per category, per step
    top: list[tuple[str, float, int]] = field(default_factory=list)  # (kernel, ms per step, calls per step)


def profile_candidate(candidate: Candidate, shapes, steps: int = 3, large: int | None = None,
                      seed: int = 0) -> StepProfile:
    """Profile ``steps`` steady steps of ``candidate`` (after two untimed ones) on ``shapes``."""
    gen = torch.Generator().manual_seed(seed)
    grads = [1e-3 * torch.randn(s, generator=gen) for s in shapes]   # as fimkit bench steps them
    cpu = torch.device("cpu")
    large = large if large is not None else min(math.prod(s) for s in shapes)
    optimizer = candidate.build(_make_params(shapes, grads, cpu, seed + 1))
    # the serial loop: torch's profiler records the calling thread's kernels only, and the threaded
    # step (fimkit.optim.threaded_steps) makes the same kernels, half of them on another thread
    optimizer.threaded_step = False
    for _ in range(2):
        optimizer.step()
    timed = statistics.median(_timed_step(optimizer, cpu) for _ in range(max(steps, 5))) * 1e3
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            optimizer.step()
        wall_ms = (time.perf_counter() - start) * 1e3 / steps
    split, calls = defaultdict(float), defaultdict(int)
    per_kernel: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for event in prof.events():
        if not event.name.startswith("aten::") or event.self_cpu_time_total <= 0:
            continue
        category = kernel_category(event.name, event.input_shapes, large)
        ms = event.self_cpu_time_total / 1e3 / steps
        split[category] += ms
        # calls are counted where Python makes them (mv's time is in the addmv it calls)
        parent = event.cpu_parent
        calls[category] += parent is None or not parent.name.startswith("aten::")
        per_kernel[event.name][0] += ms
        per_kernel[event.name][1] += 1
    split["Python and dispatch"] = max(0.0, wall_ms - sum(split.values()))
    top = sorted(((k, ms, count // steps) for k, (ms, count) in per_kernel.items()), key=lambda t: -t[1])[:6]
    return StepProfile(candidate.label, timed, wall_ms, {c: split.get(c, 0.0) for c in CATEGORIES},
                       {c: calls.get(c, 0) // steps for c in CATEGORIES[:-1]}, top)


def format_profiles(profiles: list[StepProfile], header: str) -> str:
    """A Markdown table: each step's split by category (ms and share of the profiled step)."""
    lines = [header, "", "| optimizer | step (ms, timed) | step (ms, profiled) | "
             + " | ".join(CATEGORIES) + " | largest kernels (ms, calls a step) |",
             "|---|---|---|" + "---|" * len(CATEGORIES) + "---|"]
    for p in profiles:
        cells = []
        for category in CATEGORIES:
            ms = p.split_ms[category]
            count = f", {p.calls[category]} calls" if p.calls.get(category) else ""
            cells.append(f"{ms:.1f} ({100 * ms / p.profiled_ms:.0f}%{count})")
        top = "; ".join(f"{name.removeprefix('aten::')} {ms:.1f} ({calls})" for name, ms, calls in p.top)
        lines.append(f"| {p.label} | {p.timed_ms:.1f} | {p.profiled_ms:.1f} | " + " | ".join(cells) + f" | {top} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="60M")
    parser.add_argument("--optimizers", default=",".join(DEFAULT))
    parser.add_argument("--threads", default="1", help="thread counts, e.g. 1,2 (one table each)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--out", help="write the Markdown here as well as printing it")
    args = parser.parse_args(argv)
    keep_freed_memory()
    shapes = model_matrix_shapes(args.model)
    machine = describe_machine(torch.device("cpu"))
    command = "python -m benchmarks.profile " + " ".join(sys.argv[1:] if argv is None else argv)
    sections = [f"# Where the step goes ({args.model} matrices)\n\n"
                f"Command: `{command.strip()}`  \nRevision: `{git_revision()}`  \n"
                f"Machine: {machine.get('cpu', '?')}, {machine.get('logical cores', '?')} logical cores, "
                f"torch {machine.get('torch', '?')}\n\n"
                f"Steady steps (a subspace switch or basis refresh is not in them). A pass over matrices is a "
                f"kernel with an input of at least the smallest matrix's size; products are GEMMs, matrix-vector "
                f"products and dots; a call is an ATen operation called from Python (with the kernels it calls); "
                f"\"Python and dispatch\" is the profiled step less its kernels' own time. "
                f"RACS and SinkGD are profiled in the serial loop (`threaded_step = False`: the profiler sees "
                f"one thread's kernels; `benchmarks/results/cpu_threaded_steps.md` times the threaded step). "
                f"The profiler adds about a microsecond a kernel.\n"]
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        candidates = [torch_adam("foreach"), torch_adam("fused")] + [
            fimkit_candidate(n) for n in args.optimizers.split(",")]
        profiles = []
        for candidate in candidates:
            print(f"profiling {candidate.label} at {threads} thread(s) ...", file=sys.stderr, flush=True)
            profiles.append(profile_candidate(candidate, shapes, args.steps))
        sections.append(format_profiles(profiles, f"## {threads} thread(s)"))
    text = "\n".join(sections)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
