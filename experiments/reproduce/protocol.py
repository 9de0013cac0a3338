"""The reproduction protocols: which model, data, budget and tuning grid each tier runs.

One protocol per ``fimkit reproduce --preset``. The CPU tiers keep the paper's recipe (LLaMA,
sequence 256, 10% warmup then cosine to 10%, paper hyperparameters rescaled as DECISIONS X5)
and change what a 2-core machine cannot afford: the batch (8 sequences instead of 512) and the
vocabulary. A 2048-token BPE keeps the embeddings and the head at a third of the parameters
(at 8192 tokens they are two thirds of ``nano`` and would decide much of any comparison).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Protocol:
    name: str
    preset: str  # model preset (experiments.presets)
    steps: int
    batch_size: int
    micro_batch: int
    seq_len: int
    vocab_size: int
    eval_every: int
    eval_tokens: int
    ckpt_every: int
    #: learning-rate grids of the tuned headline comparison (each optimizer its own)
    sweeps: dict[str, tuple[float, ...]]
    #: a grid whose best value sits on an edge is extended by this factor, at most twice
    sweep_extension: float = 2.0
    seeds: tuple[int, ...] = (0, 1, 2)
    #: lr grid of the Adam-routed group of a per-role Adam baseline (matrices at the best Adam lr)
    adam_group_grid: tuple[float, ...] = (0.01, 0.02, 0.04)
    #: optimizers run at paper defaults beside the headline (lm_head as the paper has it)
    others: tuple[str, ...] = ("alice0", "galore", "fira")
    #: optimizers also run with the head on Adam (the paper's ``*`` columns, Fig 5d)
    lm_head_pairs: tuple[str, ...] = ("alice", "alice0", "galore", "fira")
    #: Fig 4's memory probe: model presets, optimizers and tokens of the one measured step
    memory_presets: tuple[str, ...] = ("60M", "130M")
    memory_optimizers: tuple[str, ...] = ("adam", "galore", "fira", "apollo_mini", "racs", "alice0", "alice")
    memory_seq_len: int = 256
    throughput_optimizers: tuple[str, ...] = ("adam", "galore", "fira", "racs", "alice0", "alice")
    throughput_rounds: int = 30
    data: tuple[str, ...] = ("debian",)
    device: str = "cpu"
    dtype: str = "fp32"
    threads: int = 1  # per run; runs go in parallel, one per core
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # further TrainConfig fields

    def train_fields(self) -> dict[str, Any]:
        """The TrainConfig fields every run of this protocol shares."""
        from experiments.data.sample import SAMPLE

        data = [str(SAMPLE) if d == "sample" else d for d in self.data]
        return dict(
            preset=self.preset, steps=self.steps, batch_size=self.batch_size, micro_batch=self.micro_batch,
            seq_len=self.seq_len, vocab_size=self.vocab_size, eval_every=self.eval_every,
            eval_tokens=self.eval_tokens, ckpt_every=self.ckpt_every, data=data, device=self.device,
            dtype=self.dtype, threads=self.threads, **self.extra,
        )


#: lr grids: Adam's includes the paper's 1e-3; the candidates' include their paper lr (0.02)
CPU_SWEEPS = {"adam": (1e-3, 2e-3, 4e-3, 8e-3), "racs": (0.005, 0.01, 0.02, 0.04),
              "alice": (0.005, 0.01, 0.02, 0.04)}

PROTOCOLS: dict[str, Protocol] = {
    "nano": Protocol(
        "nano", "nano", steps=1000, batch_size=8, micro_batch=8, seq_len=256, vocab_size=2048,
        eval_every=50, eval_tokens=128 * 256, ckpt_every=100, sweeps=CPU_SWEEPS,
        description="width 128, 4 layers, 4 heads, BPE 2048; 1000 steps of 8 x 256 tokens",
    ),
    "tiny": Protocol(
        "tiny", "tiny", steps=1500, batch_size=8, micro_batch=8, seq_len=256, vocab_size=2048,
        eval_every=75, eval_tokens=128 * 256, ckpt_every=100, sweeps=CPU_SWEEPS,
        description="width 256, 4 layers, 8 heads, BPE 2048; 1500 steps of 8 x 256 tokens",
    ),
    # The whole pipeline in a few minutes (tests): the micro model on the shipped sample corpus.
    "quick": Protocol(
        "quick", "micro", steps=12, batch_size=4, micro_batch=4, seq_len=32, vocab_size=512,
        eval_every=4, eval_tokens=8 * 32, ckpt_every=6, sweeps={k: v[1:3] for k, v in CPU_SWEEPS.items()},
        seeds=(0, 1), adam_group_grid=(0.01,), memory_presets=("micro",), memory_optimizers=("adam", "racs", "alice"),
        memory_seq_len=32, throughput_optimizers=("adam", "racs", "alice"), throughput_rounds=3,
        data=("sample",), description="test tier: width 32, 2 layers, sample corpus",
    ),
    # GPU tier: the paper's models and batch (512 x 256 tokens via accumulation), bf16 autocast.
    "60m": Protocol(
        "60m", "60M", steps=10_000, batch_size=512, micro_batch=128, seq_len=256, vocab_size=32000,
        eval_every=1000, eval_tokens=10_000_000, ckpt_every=500, device="cuda", dtype="bf16", threads=0,
        sweeps={"adam": (1e-3, 2e-3, 4e-3, 8e-3), "racs": (0.01, 0.02, 0.04, 0.08), "alice": (0.01, 0.02, 0.04, 0.08)},
        memory_presets=("60M", "130M"), description="paper 60M (GPU)",
    ),
    "130m": Protocol(
        "130m", "130M", steps=20_000, batch_size=512, micro_batch=128, seq_len=256, vocab_size=32000,
        eval_every=1000, eval_tokens=10_000_000, ckpt_every=500, device="cuda", dtype="bf16", threads=0,
        sweeps={"adam": (1e-3, 2e-3, 4e-3, 8e-3), "racs": (0.01, 0.02, 0.04, 0.08), "alice": (0.01, 0.02, 0.04, 0.08)},
        description="paper 130M (GPU)",
    ),
}


def get_protocol(name: str) -> Protocol:
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ValueError(f"unknown reproduction preset {name!r}; choose one of {', '.join(PROTOCOLS)}") from None
