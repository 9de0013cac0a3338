"""``fimkit demo`` (``make demo``): the whole story on a laptop CPU in under 20 minutes.

Builds the Debian corpus and the BPE tokenizer (first run only), trains the ``tiny`` preset with
Adam, RACS and Alice on identical batches and token budgets, and writes the loss curves and the
results table to ``runs/demo/``.
"""

from __future__ import annotations

import time
from pathlib import Path

from experiments.compare import run_comparison, write_report
from experiments.config import TrainConfig
from experiments.data import DataSpec, prepare
from experiments.data.location import resolve_cache
from experiments.progress import log

DEMO_OPTIMIZERS = ("adam", "racs", "alice")


def run_demo(out: str | Path = "runs/demo", base: TrainConfig | None = None, optimizers=DEMO_OPTIMIZERS,
             resume: bool = False) -> str:
    """Runs the comparison of ``optimizers`` on ``base`` (default: the tiny preset on the Debian
    corpus); returns the results table."""
    start = time.monotonic()
    base = base or TrainConfig(preset="tiny")
    data = base.resolve()  # the corpus first, so its (first-run) cost is reported on its own
    prepare(DataSpec(tuple(data.data), data.tokenizer, data.vocab_size, data.val_fraction), resolve_cache(data.cache))
    data_seconds = time.monotonic() - start
    summaries = run_comparison(base, list(optimizers), [0], out, resume=resume)
    table, plots = write_report(summaries, out)
    total = time.monotonic() - start
    text = table.read_text()
    log("\n" + text)
    log(f"data ready in {data_seconds:.0f}s; whole demo {total / 60:.1f} min")
    log(f"table: {table}\nplots: {', '.join(map(str, plots))}\nruns:  {', '.join(s['out'] for s in summaries)}")
    return text
