"""Run a reproduction's plan: one training process per core, every finished run cached.

Each run trains in its own process (``fimkit train --config request.json --resume``) with one
thread, in ``RUNS/<run id>/``; a run is finished when its ``summary.json`` reports the
protocol's step count, and is then never trained again (re-running only redraws). An
interrupted run resumes from its last checkpoint (every ``ckpt_every`` steps), which is
deleted once the run has finished: what stays is small (config, metrics, summary, switches)
and is what the repository commits.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.atomic import write_text_atomic
from experiments.checkpoint import CHECKPOINT
from experiments.config import TrainConfig
from experiments.progress import log
from experiments.reproduce.plan import RunSpec, plan
from experiments.reproduce.protocol import Protocol

REQUEST, SUMMARY, LOG, DIVERGED = "request.json", "summary.json", "train.log", "diverged.json"

#: measured seconds per step of one single-threaded run while another runs beside it (2 cores)
SECONDS_PER_STEP = {"nano": 0.42, "tiny": 1.0, "quick": 0.05}


def run_config(protocol: Protocol, spec: RunSpec, runs_dir: Path, cache: str) -> TrainConfig:
    options = spec.options
    fields = {k: options.pop(k) for k in list(options) if k in TrainConfig.__dataclass_fields__}
    return TrainConfig(**{**protocol.train_fields(), **fields}, optimizer=spec.optimizer, hparams=options,
                       seed=spec.seed, data_seed=spec.seed, out=str(runs_dir / spec.id), cache=cache)


def finished_loss(run_dir: Path, steps: int) -> float | None:
    """The final eval loss of a finished run, ``inf`` for a diverged one, None otherwise."""
    if (run_dir / DIVERGED).exists():
        return math.inf
    try:
        summary = json.loads((run_dir / SUMMARY).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if summary.get("steps") != steps or summary.get("final_eval_loss") is None:
        return None
    return float(summary["final_eval_loss"])


def collect_results(protocol: Protocol, runs_dir: Path, specs) -> dict[str, float]:
    results = {}
    for spec in specs:
        loss = finished_loss(runs_dir / spec.id, protocol.steps)
        if loss is not None:
            results[spec.id] = loss
    return results


@dataclass
class Job:
    spec: RunSpec
    process: subprocess.Popen
    started: float


def _start(protocol: Protocol, spec: RunSpec, runs_dir: Path, cache: str) -> Job:
    cfg = run_config(protocol, spec, runs_dir, cache)
    run_dir = Path(cfg.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / REQUEST, json.dumps({"train": cfg.to_dict()}, indent=2) + "\n")
    command = [sys.executable, "-m", "experiments.train", "--config", str(run_dir / REQUEST), "--resume"]
    env = {**os.environ, "OMP_NUM_THREADS": str(max(protocol.threads, 1))}
    with (run_dir / LOG).open("a") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    return Job(spec, process, time.monotonic())


def _train_here(protocol: Protocol, spec: RunSpec, runs_dir: Path, cache: str) -> str:
    from experiments.train import train

    cfg = run_config(protocol, spec, runs_dir, cache)
    try:
        train(cfg, resume=True)
    except FloatingPointError as exc:
        write_text_atomic(Path(cfg.out) / DIVERGED, json.dumps({"error": str(exc)}) + "\n")
        outcome = "diverged"
    else:
        outcome = "done"
    (Path(cfg.out) / CHECKPOINT).unlink(missing_ok=True)
    return outcome


def _finish(job: Job, run_dir: Path) -> str:
    """Tidy a finished process's run folder; returns how it ended."""
    code = job.process.returncode
    if code == 0:
        (run_dir / CHECKPOINT).unlink(missing_ok=True)
        return "done"
    tail = (run_dir / LOG).read_text(errors="replace").strip().splitlines()[-1:] or [""]
    if "training loss became" in tail[0]:
        write_text_atomic(run_dir / DIVERGED, json.dumps({"error": tail[0]}) + "\n")
        (run_dir / CHECKPOINT).unlink(missing_ok=True)
        return "diverged"
    return f"failed (exit {code}): {tail[0]}"


def current_plan(protocol: Protocol, runs_dir: Path):
    """The plan given every finished run, and those runs' results (iterated, since a finished
    sweep adds runs that may have finished too)."""
    results: dict[str, float] = {}
    while True:
        current = plan(protocol, results)
        found = collect_results(protocol, runs_dir, current.runs.values())
        if found == results:
            return current, results
        results = found


def planned_size(protocol: Protocol) -> int:
    """How many runs the whole plan has once every sweep has finished (its best assumed inside
    the grid, so no extension)."""
    results: dict[str, float] = {}
    while True:
        current = plan(protocol, results)
        fake = {s.id: 1.0 for s in current.runs.values()}
        for role, specs in current.roles.items():
            if role.startswith("sweep:") or role == "per_role_adam":
                for i, spec in enumerate(specs.values()):
                    fake[spec.id] = 1.0 + abs(i - 1)  # the second grid point is best
        if fake.keys() == results.keys():
            return len(current.runs)
        results = fake


def estimate_seconds(protocol: Protocol, n_runs: int, jobs: int) -> float:
    per_step = SECONDS_PER_STEP.get(protocol.name, 1.0)
    return n_runs * protocol.steps * per_step * 1.1 / max(jobs, 1)  # +10% for evaluation


def corpus_changes(protocol: Protocol, runs_dir: Path, run_ids, cache: str | None) -> list[str]:
    """One line per cached run whose recorded corpus differs from the one in ``cache`` now (a
    rebuilt cache, other Debian package versions): their results were not trained on it."""
    from experiments.data import DataSpec, prepare
    from experiments.data.provenance import check_corpus, corpus_record, recorded_corpus

    if not run_ids:
        return []
    cfg = TrainConfig(**protocol.train_fields())
    current = corpus_record(prepare(DataSpec(tuple(cfg.data), cfg.tokenizer, cfg.vocab_size, cfg.val_fraction), cache))
    changes = []
    for run_id in sorted(run_ids):
        try:
            recorded = recorded_corpus(json.loads((runs_dir / run_id / "config.json").read_text()))
        except (OSError, json.JSONDecodeError):
            continue
        if message := check_corpus(recorded, current, what=f"cached run {run_id}"):
            changes.append(message)
    return changes


def run_plan(protocol: Protocol, runs_dir: Path, *, jobs: int, cache: str | None = None,
             max_runs: int | None = None) -> dict[str, Any]:
    """Train every run the plan needs (new ones appear as sweeps finish); returns counts."""
    runs_dir = Path(runs_dir)
    running: dict[str, Job] = {}
    failed: dict[str, str] = {}
    started = 0
    announced = False
    while True:
        current, results = current_plan(protocol, runs_dir)
        pending = [s for i, s in current.runs.items() if i not in results and i not in running and i not in failed]
        if not announced:
            total_left = planned_size(protocol) - len(results)
            log(f"reproduce {protocol.name}: {len(results)} runs cached, about {total_left} to train "
                f"({jobs} at a time); expected {estimate_seconds(protocol, total_left, jobs) / 3600:.1f} h")
            changes = corpus_changes(protocol, runs_dir, results, cache)
            if changes:
                log(f"  warning: {len(changes)} cached run(s) were trained on another corpus; {changes[0]}")
            announced = True
        if jobs == 1 and pending and (max_runs is None or started < max_runs):
            # one at a time: train in this process (no interpreter start-up per run)
            spec = pending[0]
            started += 1
            log(f"  start  {spec.id}  ({len(results)} done, {len(pending) - 1} queued)")
            outcome = _train_here(protocol, spec, runs_dir, cache)
            log(f"  {outcome:<6} {spec.id}")
            if outcome.startswith("failed"):
                failed[spec.id] = outcome
            continue
        while pending and len(running) < jobs and (max_runs is None or started < max_runs):
            spec = pending.pop(0)
            running[spec.id] = _start(protocol, spec, runs_dir, cache)
            started += 1
            log(f"  start  {spec.id}  ({len(results)} done, {len(running)} running, {len(pending)} queued)")
        if not running:
            break
        time.sleep(2.0)
        for run_id, job in list(running.items()):
            if job.process.poll() is None:
                continue
            del running[run_id]
            outcome = _finish(job, runs_dir / run_id)
            minutes = (time.monotonic() - job.started) / 60
            loss = finished_loss(runs_dir / run_id, protocol.steps)
            shown = f", eval loss {loss:.4f}" if loss is not None and math.isfinite(loss) else ""
            log(f"  {outcome:<6} {run_id}  ({minutes:.1f} min{shown})")
            if outcome.startswith("failed"):
                failed[run_id] = outcome
    return {"finished": len(results), "failed": failed, "waiting": current.waiting}
