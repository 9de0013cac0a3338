"""A synthetic reproduction: run folders for every run a protocol's plan asks for, with eval
curves that are known in advance (so figures, tables and claims can be checked against them)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from experiments.reproduce.plan import RunSpec, plan
from experiments.reproduce.protocol import get_protocol
from experiments.reproduce.runner import collect_results

PROTOCOL = get_protocol("quick")


def synthetic_final(spec: RunSpec) -> float:
    """A deterministic final loss: Alice < Alice-0 < RACS < Adam < Fira < GaLore, lr optimum inside the grid."""
    base = {"alice": 4.0, "alice0": 4.1, "racs": 4.2, "adam": 4.5, "fira": 4.55, "galore": 4.7}[spec.optimizer]
    options = spec.options
    lr = options.get("lr", 0.01)
    grid = sorted(PROTOCOL.sweeps.get(spec.optimizer, (lr,)))
    centre = grid[len(grid) // 2] if len(grid) > 1 else lr
    penalty = 0.05 * abs(math.log2(lr / centre))
    penalty += 0.3 * (options.get("compensation") == "none") + 0.01 * ("switch_mode" in options)
    penalty += 0.02 * (options.get("ema") is False) + 0.01 * spec.seed + 0.02 * ("lm_head" in options)
    penalty -= 0.01 * ("adam_lr" in options and spec.optimizer == "adam")
    return base + penalty


def curve(final: float, steps: int, every: int, batch_tokens: int) -> list[tuple[int, float]]:
    """Eval points falling linearly in 1/step from final + 2 to final."""
    points = range(every, steps + 1, every)
    return [(s * batch_tokens, final + 2.0 * (steps / s - 1) / (steps / every - 1)) for s in points]


def write_run(runs_dir: Path, spec: RunSpec, protocol=PROTOCOL) -> None:
    out = runs_dir / spec.id
    out.mkdir(parents=True, exist_ok=True)
    tokens = protocol.batch_size * protocol.seq_len
    points = curve(synthetic_final(spec), protocol.steps, protocol.eval_every, tokens)
    with (out / "metrics.jsonl").open("w") as f:
        for t, loss in points:
            f.write(json.dumps({"step": t // tokens, "tokens": t, "train_loss": loss, "eval_loss": loss, "lr": 0.01}) + "\n")
    (out / "summary.json").write_text(json.dumps({"steps": protocol.steps, "final_eval_loss": points[-1][1]}))
    (out / "config.json").write_text(json.dumps({"versions": {"revision": "fixture"}}))
    tracking = spec.options.get("tracking_beta", 0.0 if spec.optimizer == "alice0" else 0.999)
    if spec.optimizer in ("alice", "alice0"):
        with (out / "switches.jsonl").open("w") as f:
            for step in (10, 20):
                f.write(json.dumps({"step": step, "param": "w", "cos": [0.9, 0.8] if tracking else [0.2, 0.1]}) + "\n")


def write_reproduction(runs_dir: Path, protocol=PROTOCOL) -> dict[str, float]:
    """Every run of the plan, round after round, until nothing new is planned; returns results."""
    results: dict[str, float] = {}
    while True:
        current = plan(protocol, results)
        for spec in current.runs.values():
            if spec.id not in results:
                write_run(runs_dir, spec, protocol)
        found = collect_results(protocol, runs_dir, current.runs.values())
        if found == results:
            return results
        results = found
