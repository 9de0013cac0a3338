"""``fimkit reproduce``: train what the paper's figures need at a chosen scale, then draw them.

    fimkit reproduce --preset nano            # the CPU tier (hours; resumable, cached)
    fimkit reproduce --preset nano --draw-only  # redraw figures and REPORT.md from cached runs
    fimkit reproduce --quick --out /tmp/r     # the whole pipeline in a few minutes

Runs go to ``OUT/runs/<preset>/<run id>/``, figures (PNG, SVG and the CSV behind each) to
``OUT/<preset>/``, and the report to ``OUT/REPORT.md`` (``OUT`` defaults to ``paper_figs``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from experiments.cli import _run
from experiments.reproduce.protocol import PROTOCOLS, get_protocol


def reproduce_command(argv: list[str]) -> int:
    """Run the paper's experiments at a chosen scale and draw every figure, table and REPORT.md."""
    parser = argparse.ArgumentParser(prog="fimkit reproduce", description=reproduce_command.__doc__)
    parser.add_argument("--preset", default="nano", choices=[p for p in PROTOCOLS if p != "quick"],
                        help="reproduction tier (default: %(default)s); 60m/130m need CUDA")
    parser.add_argument("--quick", action="store_true", help="the whole pipeline in a few minutes (test tier)")
    parser.add_argument("--out", default=None, help="output folder (default: paper_figs; --quick: runs/reproduce-quick)")
    parser.add_argument("--jobs", type=int, default=None, help="runs trained at once (default: one per CPU core)")
    parser.add_argument("--cache", default=None, help="corpus, tokenizer and token shards (default: "
                        "$FIMKIT_CACHE, else the platform cache directory; see `fimkit data --where`)")
    parser.add_argument("--draw-only", action="store_true", help="train nothing; draw from the cached runs")
    parser.add_argument("--max-runs", type=int, default=None, help="start at most this many runs, then draw")
    parser.add_argument("--skip-probes", action="store_true", help="no memory / throughput measurements")
    args = parser.parse_args(argv)

    def action():
        from experiments.reproduce.runner import run_plan
        from paper_figs.draw import draw_all
        from experiments.reproduce.probes import run_probes

        protocol = get_protocol("quick" if args.quick else args.preset)
        out = Path(args.out or ("runs/reproduce-quick" if args.quick else "paper_figs"))
        runs_dir = out / "runs" / protocol.name
        if args.jobs is not None and args.jobs < 1:
            raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
        jobs = args.jobs or max(1, min(os.cpu_count() or 1, 8))
        if protocol.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise ValueError(f"preset {protocol.name!r} is the GPU tier and needs CUDA; use --preset nano or tiny")
            jobs = args.jobs or 1
        if not args.draw_only:
            run_plan(protocol, runs_dir, jobs=jobs, cache=args.cache, max_runs=args.max_runs)
            if not args.skip_probes:
                run_probes(protocol, out / "runs" / f"{protocol.name}-probes")
        written = draw_all(protocol, runs_dir, out / protocol.name, report=out / "REPORT.md")
        print(f"wrote {len(written)} files; report: {out / 'REPORT.md'}")

    return _run("fimkit reproduce", action)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(reproduce_command(sys.argv[1:]))
