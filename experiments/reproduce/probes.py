"""Measurements beside the training runs: peak memory of one step ([P] Fig 4) and the
training throughput of each optimizer, interleaved in one process ([P] Fig 3).

Memory: each (model, optimizer, gradient release) is measured in a fresh process, so nothing
of another measurement is counted: the peak resident memory of two training steps of one
sequence (the paper's token batch of 256) above the process's memory before the model was
built (Linux ``VmHWM`` after resetting it; ``max_memory_allocated`` on CUDA). It covers weights,
gradients, optimizer state and activations. Results are cached as JSON, one file each.

Throughput: one process builds a model per optimizer from the same initial weights and steps
them round-robin on the protocol's batch shape, so machine noise hits all alike; the mean
step time over whole switching periods (Alice's ``update_interval``) includes the amortised
cost of the switches.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from experiments.atomic import write_text_atomic
from experiments.progress import log
from experiments.reproduce.protocol import Protocol

MEMORY, THROUGHPUT = "memory", "throughput.json"


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _build_optimizer(model, name: str, preset_name: str, steps: int | None = None, release: bool = False):
    """``name`` with the preset's paper hyperparameters (rescaled for CPU presets), routed."""
    import fimkit
    from experiments.optimizers import default_hparams
    from experiments.presets import get_preset

    preset = get_preset(preset_name)
    hparams = default_hparams(name, preset, steps or preset.steps)
    lr = hparams.pop("lr", 1e-3)
    return fimkit.build_optimizer(model, name, lr=lr, gradient_release=release, **hparams)


def _warm_up(optimizer: str, device: str) -> None:
    """Two steps of the smallest model with the same optimizer (frees everything it made)."""
    import gc

    from experiments.model import LLaMA
    from experiments.presets import get_preset

    torch.manual_seed(0)
    model = LLaMA(get_preset("micro").model).to(device)
    optimizer_ = _build_optimizer(model, optimizer, "micro")
    for _ in range(2):
        model(torch.zeros(1, 8, dtype=torch.long, device=device), torch.zeros(1, 8, dtype=torch.long, device=device)).backward()
        optimizer_.step()
        optimizer_.zero_grad(set_to_none=True)
    del model, optimizer_
    gc.collect()


def measure_memory(preset_name: str, optimizer: str, release: bool, seq_len: int, device: str) -> dict:
    """Peak memory of two training steps (one sequence each) above the empty process."""
    from experiments.model import LLaMA
    from experiments.presets import get_preset

    torch.set_num_threads(1)
    cuda = device == "cuda"
    _warm_up(optimizer, device)  # torch loads kernels and libraries lazily: not the model's memory
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS (VmHWM) to the current RSS
        base = _status_kib("VmRSS") * 1024
    cfg = get_preset(preset_name).model
    torch.manual_seed(0)
    model = LLaMA(cfg).to(device)
    optimizer_ = _build_optimizer(model, optimizer, preset_name, release=release)
    tokens = torch.randint(0, cfg.vocab_size, (2, 1, seq_len + 1), device=device)
    for batch in tokens:
        loss = model(batch[:, :-1], batch[:, 1:])
        loss.backward()
        optimizer_.step()
        optimizer_.zero_grad(set_to_none=True)
    peak = torch.cuda.max_memory_allocated() if cuda else _status_kib("VmHWM") * 1024
    import fimkit

    return {
        "preset": preset_name, "optimizer": optimizer, "gradient_release": release, "seq_len": seq_len,
        "device": device, "dtype": "fp32", "peak_bytes": peak - base,
        "weights_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
        "optimizer_state_bytes": fimkit.memory.state_bytes(optimizer_),
    }


def measure_throughput(protocol: Protocol) -> dict:
    """Tokens/s of a training step per optimizer, interleaved in this process."""
    import dataclasses

    from experiments.model import LLaMA
    from experiments.presets import get_preset
    from experiments.runtime import keep_freed_memory

    keep_freed_memory()  # as training does
    torch.set_num_threads(max(protocol.threads, 1))
    preset = get_preset(protocol.preset)
    cfg = dataclasses.replace(preset.model, vocab_size=protocol.vocab_size,
                              max_seq_len=max(preset.model.max_seq_len, protocol.seq_len))
    models, optimizers = {}, {}
    for name in protocol.throughput_optimizers:
        torch.manual_seed(0)
        models[name] = LLaMA(cfg)
        optimizers[name] = _build_optimizer(models[name], name, protocol.preset, protocol.steps)
    period = max(int(g.get("update_interval", 1)) for o in optimizers.values() for g in o.param_groups)
    rounds = max(protocol.throughput_rounds, 2 * period)
    gen = torch.Generator().manual_seed(0)
    times = {name: [] for name in models}
    for r in range(rounds + 3):
        batch = torch.randint(0, cfg.vocab_size, (protocol.batch_size, protocol.seq_len + 1), generator=gen)
        for name, model in models.items():
            start = time.perf_counter()
            model(batch[:, :-1], batch[:, 1:]).backward()
            optimizers[name].step()
            optimizers[name].zero_grad(set_to_none=True)
            if r >= 3:  # the first steps allocate state and warm caches
                times[name].append(time.perf_counter() - start)
    tokens = protocol.batch_size * protocol.seq_len
    return {"protocol": protocol.name, "threads": max(protocol.threads, 1), "rounds": rounds,
            "tokens_per_step": tokens,
            "tokens_per_s": {n: tokens * len(t) / sum(t) for n, t in times.items()},
            "mean_step_s": {n: sum(t) / len(t) for n, t in times.items()}}


def memory_file(probe_dir: Path, preset: str, optimizer: str, release: bool) -> Path:
    return probe_dir / MEMORY / f"{preset}-{optimizer}-{'release' if release else 'standard'}.json"


def run_probes(protocol: Protocol, probe_dir: Path) -> None:
    """Every memory measurement not cached yet (a process each), then the throughput."""
    probe_dir = Path(probe_dir)
    for preset in protocol.memory_presets:
        for optimizer in protocol.memory_optimizers:
            for release in (False, True):
                path = memory_file(probe_dir, preset, optimizer, release)
                if path.exists():
                    continue
                log(f"  memory {preset} {optimizer} {'with' if release else 'without'} gradient release")
                command = [sys.executable, "-m", "experiments.reproduce.probes", "memory", "--preset", preset,
                           "--optimizer", optimizer, "--seq-len", str(protocol.memory_seq_len),
                           "--device", protocol.device, "--out", str(path)] + (["--release"] if release else [])
                subprocess.run(command, check=True)
    path = probe_dir / THROUGHPUT
    if not path.exists():
        log(f"  throughput of {', '.join(protocol.throughput_optimizers)} (interleaved, one process)")
        write_text_atomic(path, json.dumps(measure_throughput(protocol), indent=2) + "\n")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.reproduce.probes")
    sub = parser.add_subparsers(dest="what", required=True)
    memory = sub.add_parser("memory", help="peak memory of one training step")
    memory.add_argument("--preset", required=True)
    memory.add_argument("--optimizer", required=True)
    memory.add_argument("--release", action="store_true")
    memory.add_argument("--seq-len", type=int, default=256)
    memory.add_argument("--device", default="cpu")
    memory.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    result = measure_memory(args.preset, args.optimizer, args.release, args.seq_len, args.device)
    write_text_atomic(Path(args.out), json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
