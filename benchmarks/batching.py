"""Does batching equal-shape matrices pay for a low-rank step? Measured, side by side.

fimkit steps each matrix on its own (one Python pass over the chain per parameter). The
alternative stacks the matrices of one shape and runs the same math as batched kernels
(``bmm``), at the price of stacking the gradients (one extra pass over them) every step.
This times Alice's per-step arithmetic (``sigma = U^T G``, the tracked Gram, Adam moments in the
subspace, the compensated back-projection) both ways on a paper model's matrices:

    python -m benchmarks.batching [--model 60M] [--rank 128] [--threads 1] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict

import torch

from fimkit.lowrank.compensation import back_project, optimal_column_scale, residual_energy
from fimkit.lowrank.moments import projected_adam_direction

from .machine import describe_machine
from .step_time import model_matrix_shapes


def low_rank_step(grad, basis, gram, exp_avg, exp_avg_sq, energy_ema, betas=(0.9, 0.9), b3=0.999):
    """Alice's arithmetic between switches, for one matrix or a stack (leading batch dims),
    from the library's own pieces."""
    sigma = basis.mT @ grad
    gram.mul_(b3).add_(sigma @ sigma.mT, alpha=1 - b3)  # track_projected_gram, batched (addmm_ is 2-D)
    omega = projected_adam_direction(exp_avg, exp_avg_sq, sigma, betas, 1e-8)
    energy = energy_ema.lerp_(residual_energy(grad, sigma), 1 - betas[0])
    scale = optimal_column_scale(energy, basis.shape[-2] - basis.shape[-1], 1e-8)
    return back_project(basis, omega, grad, sigma, scale)


def _state(shape, rank, batch=()):
    m, n = sorted(shape)
    return (torch.linalg.qr(torch.randn(*batch, m, rank))[0], torch.zeros(*batch, rank, rank),
            torch.zeros(*batch, rank, n), torch.zeros(*batch, rank, n), torch.zeros(*batch, n))


def measure(shapes: list[tuple[int, int]], rank: int = 128, repeats: int = 7) -> dict[str, float]:
    """Median ms of one step over all ``shapes``, per matrix and batched by shape."""
    shapes = [tuple(sorted(s)) for s in shapes]
    grads = [torch.randn(s) * 1e-3 for s in shapes]
    params = [torch.zeros(s) for s in shapes]
    single = [_state(s, rank) for s in shapes]
    by_shape = defaultdict(list)
    for index, shape in enumerate(shapes):
        by_shape[shape].append(index)
    stacked = {shape: _state(shape, rank, (len(ix),)) for shape, ix in by_shape.items()}

    def per_matrix():
        for p, g, s in zip(params, grads, single):
            p.add_(low_rank_step(g, *s), alpha=-1e-3)

    def batched():
        for shape, ix in by_shape.items():
            update = low_rank_step(torch.stack([grads[i] for i in ix]), *stacked[shape])
            torch._foreach_add_([params[i] for i in ix], list(update.unbind(0)), alpha=-1e-3)

    times = {"per matrix": [], "batched by shape": []}
    runs = {"per matrix": per_matrix, "batched by shape": batched}
    for run in runs.values():
        run()  # warm-up
    for _ in range(repeats):
        for label, run in runs.items():
            start = time.perf_counter()
            run()
            times[label].append(time.perf_counter() - start)
    return {label: statistics.median(t) * 1e3 for label, t in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.batching", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="60M")
    parser.add_argument("--rank", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = measure(model_matrix_shapes(args.model), args.rank, args.repeats)
    machine = describe_machine(torch.device("cpu"))
    print(f"Alice's per-step arithmetic on the {args.model} matrices, rank {args.rank}, "
          f"{machine['torch threads']} thread(s), {machine['cpu']}, load {machine.get('load average (1/5/15 min)')}")
    base = result["per matrix"]
    for label, ms in result.items():
        print(f"  {label:17s} {ms:8.1f} ms  ({ms / base:.2f}x)")


if __name__ == "__main__":
    main()
