"""One ``fimkit bench`` run at one thread count, as a JSON-shaped dict: the step table (every
candidate with its ratios to both torch Adams, its floor and step / floor, its memory), the
package versions beside fimkit's, and optionally the size sweep and the end-to-end throughput;
then the targets' verdicts on it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from .floors import Rates, floor_seconds, step_cost
from .packages import third_party_candidates
from .rates import matmul_candidates, rates_from
from .step_time import Progress, Result, fimkit_candidate, measure, torch_adam, variant_candidates
from .sweep import sweep
from .targets import evaluate
from .throughput import e2e_throughput


@dataclass
class Plan:
    """What one run measures (the CLI's options)."""

    optimizers: list[str]
    shapes: list[tuple[int, ...]]
    repeats: int = 15
    warmup: int = 2
    amortise_over: int = 200
    device: str = "cpu"
    packages: bool = True
    sweep_sizes: tuple[int, ...] = ()
    sweep_repeats: int = 3
    sweep_max_step_ms: float = 2000.0
    e2e_protocol: str | None = None
    e2e_rounds: int | None = None
    #: told what the run is doing (the CLI prints it to stderr); None: silent
    progress: Progress | None = None

    def say(self, message: str) -> None:
        if self.progress:
            self.progress(message)


def candidates(plan: Plan, with_packages: bool):
    fimkit = [fimkit_candidate(name, amortise_over=plan.amortise_over) for name in plan.optimizers]
    fimkit += variant_candidates(plan.optimizers)
    others, notes = third_party_candidates(plan.optimizers, plan.amortise_over) if with_packages else ([], [])
    return [torch_adam("foreach"), torch_adam("fused")] + fimkit, others, notes


def row(result: Result, shapes, rates: Rates, foreach: Result, fused: Result) -> dict:
    """One table row: the result, its ratios, and its floor (bytes or flops, whichever binds)."""
    cost = step_cost(result.algorithm, shapes, result.hyperparameters) if result.algorithm else None
    out = {k: v for k, v in asdict(result).items() if k != "hyperparameters"}
    out.update(vs_foreach=result.step_ms / foreach.step_ms, vs_fused=result.step_ms / fused.step_ms,
               floor_ms=None, floor_bound=None, step_over_floor=None, floor_bytes=None, floor_flops=None)
    if cost is not None:
        floor = floor_seconds(cost, rates) * 1e3
        out.update(floor_ms=floor, step_over_floor=result.step_ms / floor, floor_bytes=cost.bytes,
                   floor_flops=cost.flops,
                   floor_bound="bytes" if cost.bytes / rates.bandwidth >= cost.flops / rates.matmul else "flops")
    return out


def run_at(plan: Plan, threads: int) -> dict:
    """Every measurement of ``plan`` with ``torch.set_num_threads(threads)``."""
    torch.set_num_threads(threads)
    ours, others, notes = candidates(plan, plan.packages)
    timed = ours + others + matmul_candidates(plan.shapes)
    plan.say(f"{threads} thread(s): step times of {len(timed)} candidates, {plan.repeats} interleaved rounds")
    results = measure(timed, plan.shapes, repeats=plan.repeats, warmup=plan.warmup, device=plan.device,
                      progress=plan.progress)
    rates = rates_from(results, plan.shapes)
    by_label = {r.label: r for r in results}
    foreach, fused = by_label["torch Adam (foreach)"], by_label["torch Adam (fused)"]
    run = {"threads": threads, "notes": notes,
           "rates": {"bandwidth_GBps": rates.bandwidth / 1e9, "matmul_GFLOPs": rates.matmul / 1e9},
           "rows": [row(r, plan.shapes, rates, foreach, fused) for r in results if r.package != "probe"],
           "probes": [{"label": r.label, "step_ms": r.step_ms} for r in results if r.package == "probe"]}
    if plan.sweep_sizes:
        plan.say(f"{threads} thread(s): size sweep over {', '.join(map(str, plan.sweep_sizes))}")
        sweep_candidates, _, _ = candidates(plan, with_packages=False)
        run["sweep"] = sweep(sweep_candidates, plan.sweep_sizes, repeats=plan.sweep_repeats,
                             max_step_ms=plan.sweep_max_step_ms, device=plan.device)
    if plan.e2e_protocol:
        plan.say(f"{threads} thread(s): end-to-end throughput on {plan.e2e_protocol!r}")
        run["e2e"] = e2e_throughput(plan.e2e_protocol, threads=threads, rounds=plan.e2e_rounds)
    run["targets"] = evaluate(run)
    return run
