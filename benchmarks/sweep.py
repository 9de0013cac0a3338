"""How each step's cost grows with the matrix: one square ``n x n`` matrix per size (256..4096),
every candidate interleaved at each size, with the floor from that size's own fused Adam and
GEMM probe. A candidate whose step (steady or switch) passed ``max_step_ms`` at one size is not
run at the larger ones (noted), so Shampoo's and SOAP's cubic costs do not eat the run.
"""

from __future__ import annotations

from pathlib import Path

from .floors import floor_seconds, step_cost
from .rates import matmul_candidates, rates_from
from .step_time import Candidate, measure

DEFAULT_SIZES = (256, 512, 1024, 2048, 4096)


def sweep(candidates: list[Candidate], sizes=DEFAULT_SIZES, repeats: int = 3, warmup: int = 1,
          max_step_ms: float = 2000.0, device: str = "cpu") -> dict:
    """``{"sizes", "step_ms": {label: [ms or None per size]}, "floor_ms": {...}, "skipped": {...}}``;
    the torch Adams must be among ``candidates`` (the fused one gives the bandwidth)."""
    labels = [c.label for c in candidates]
    out = {"sizes": list(sizes), "step_ms": {k: [] for k in labels}, "floor_ms": {k: [] for k in labels},
           "skipped": {}, "rates": []}
    active = list(candidates)
    for size in sizes:
        shapes = [(size, size)]
        results = measure(active + matmul_candidates(shapes), shapes, repeats=repeats, warmup=warmup, device=device)
        rates = rates_from(results, shapes)
        out["rates"].append({"size": size, "bandwidth_GBps": rates.bandwidth / 1e9,
                             "matmul_GFLOPs": rates.matmul / 1e9})
        by_label = {r.label: r for r in results}
        for label in labels:
            r = by_label.get(label)
            cost = r and step_cost(r.algorithm, shapes, r.hyperparameters)
            out["step_ms"][label].append(r.step_ms if r else None)
            out["floor_ms"][label].append(floor_seconds(cost, rates) * 1e3 if cost else None)
        slow = [c for c in active if c.package != "torch"   # the references (bandwidth) always run
                and max(by_label[c.label].step_ms, by_label[c.label].switch_ms or 0) > max_step_ms]
        for c in slow if size != sizes[-1] else ():
            out["skipped"][c.label] = f"step over {max_step_ms:.0f} ms at {size}: larger sizes not run"
        active = [c for c in active if c not in slow]
    return out


def format_sweep(result: dict) -> str:
    """Markdown: step ms per size, and step / floor in parentheses."""
    sizes = result["sizes"]
    lines = ["| optimizer | " + " | ".join(f"{s}x{s}" for s in sizes) + " |", "|---" * (len(sizes) + 1) + "|"]
    for label, steps in result["step_ms"].items():
        floors = result["floor_ms"][label]
        cells = ["-" if ms is None else (f"{ms:.2f} ({ms / fl:.1f}x)" if fl else f"{ms:.2f}")
                 for ms, fl in zip(steps, floors)]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    rates = " ".join(f"{r['size']}: {r['bandwidth_GBps']:.1f} GB/s, {r['matmul_GFLOPs']:.0f} GFLOP/s;"
                     for r in result["rates"])
    lines += ["", f"Step ms per size (step / floor). Rates measured at each size: {rates}"]
    lines += [f"- {label}: {why}" for label, why in result["skipped"].items()]
    return "\n".join(lines)


def plot_sweep(sweeps: dict[int, dict], stem: Path) -> list[Path]:
    """One panel per thread count: step time against size, log-log (a slope of 2 is a cost that
    grows with the matrix's elements, 3 a cubic one). Writes ``stem``.png and ``stem``.svg."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(sweeps), figsize=(7 * len(sweeps), 5.5), squeeze=False, sharey=True)
    for ax, (threads, result) in zip(axes[0], sorted(sweeps.items())):
        sizes = result["sizes"]
        for index, (label, steps) in enumerate(result["step_ms"].items()):
            color = plt.cm.tab20(index % 20)
            points = [(s, ms) for s, ms in zip(sizes, steps) if ms is not None]
            if points:
                style = "s--" if label.startswith("torch") else "o-"   # the references dashed
                ax.plot(*zip(*points), style, color=color, label=label, lw=1.4, ms=3)
        ax.set(xscale="log", yscale="log", xlabel="matrix size n (one n x n matrix)",
               title=f"{threads} thread{'s' if threads > 1 else ''}")
        ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())   # no 3x10^2 labels between sizes
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("step time (ms)")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    stem.parent.mkdir(parents=True, exist_ok=True)
    for path in paths:
        fig.savefig(path, dpi=120)
    plt.close(fig)
    return paths
