"""Model and run presets: the paper's four LLaMA sizes and three CPU sizes.

Paper sizes follow GaLore's ``configs/llama_{60m,130m,350m,1b}.json`` and targets.md §1.1
(sequence 256, 512 sequences a step, 10% warmup, cosine to 10%). The 1.3B row uses GaLore's
llama_1b (2048 wide, 32 heads, 24 layers) because [P] Table 10's 4096 / 24 heads is not a valid
shape (4096 / 24 is not an integer).

CPU sizes (targets.md §2) use LLaMA's own MLP rule (8/3 of the width, rounded up to 256) and an
8192-token BPE; their step counts are chosen so that ``fimkit demo`` (three optimizers on
``tiny``, corpus build included) finishes in under 20 minutes on 2 cores.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass

from experiments.model import ModelConfig

#: intervals not given scale with the run's length: about this many evaluations, checkpoints and
#: TensorBoard / wandb training points a run (each also at the last step), whatever --steps is
EVALS_PER_RUN, CHECKPOINTS_PER_RUN, LOG_POINTS_PER_RUN = 20, 10, 500


def eval_interval(steps: int) -> int:
    """Steps between evaluations: at most ``EVALS_PER_RUN`` of them, plus the final one."""
    return max(1, math.ceil(steps / EVALS_PER_RUN))


def checkpoint_interval(steps: int) -> int:
    """Steps between checkpoints: every 10% of the run (and at its end)."""
    return max(1, math.ceil(steps / CHECKPOINTS_PER_RUN))


def log_interval(steps: int) -> int:
    """Steps between training points sent to TensorBoard / wandb (``metrics.jsonl`` has every step)."""
    return max(1, math.ceil(steps / LOG_POINTS_PER_RUN))


@dataclass(frozen=True)
class Preset:
    model: ModelConfig
    steps: int
    batch_size: int  # sequences per optimizer step
    micro_batch: int  # sequences per forward/backward; batch_size / micro_batch accumulation steps
    seq_len: int
    eval_tokens: int  # size of the fixed held-out set
    paper_size: str  # which row of the paper's hyperparameter tables applies (60M for CPU presets)
    description: str
    cpu: bool = False  # hyperparameters rescaled from the 60M row (experiments.optimizers)


def _paper(size, dim, intermediate, heads, layers, steps, micro_batch) -> Preset:
    return Preset(
        ModelConfig(dim=dim, n_layers=layers, n_heads=heads, vocab_size=32000, intermediate=intermediate),
        steps=steps, batch_size=512, micro_batch=micro_batch, seq_len=256,
        # [DECISION] the paper gives no eval protocol: 10M held-out tokens, EVALS_PER_RUN times a run
        # (every 500 steps at 60M; the reproduction's protocols give their own intervals)
        eval_tokens=10_000_000, paper_size=size,
        description=f"paper LLaMA, width {dim}, {layers} layers, {heads} heads, vocab 32000",
    )


def _cpu(dim, heads, layers, steps, description) -> Preset:
    return Preset(
        ModelConfig(dim=dim, n_layers=layers, n_heads=heads, vocab_size=8192, max_seq_len=256),
        steps=steps, batch_size=16, micro_batch=16, seq_len=256,
        # 64 sequences (16K tokens) of held-out text: ~2 s on 2 cores; every run of a comparison
        # is scored on the same tokens, so differences between optimizers are paired.
        eval_tokens=64 * 256, paper_size="60M", description=description, cpu=True,
    )


PRESETS: dict[str, Preset] = {
    "60M": _paper("60M", 512, 1376, 8, 8, 10_000, micro_batch=256),
    "130M": _paper("130M", 768, 2048, 12, 12, 20_000, micro_batch=128),
    "350M": _paper("350M", 1024, 2736, 16, 24, 60_000, micro_batch=64),
    "1.3B": _paper("1.3B", 2048, 5461, 32, 24, 100_000, micro_batch=32),
    # Steps: about 5 minutes a run on the project's 2-core machine (5300 / 2500 / 1160 tokens/s).
    "nano": _cpu(128, 4, 4, 400, "CPU: width 128, 4 layers, 4 heads (3.1M parameters)"),
    "tiny": _cpu(256, 8, 4, 150, "CPU: width 256, 4 layers, 8 heads (7.6M parameters)"),
    "small": _cpu(384, 6, 6, 100, "CPU: width 384, 6 layers, 6 heads (16.9M parameters)"),
    # Seconds, not minutes: for tests and `fimkit reproduce --preset quick` on the sample corpus.
    "micro": Preset(
        ModelConfig(dim=32, n_layers=2, n_heads=2, vocab_size=512, max_seq_len=64),
        steps=8, batch_size=4, micro_batch=2, seq_len=32, eval_tokens=8 * 32,
        paper_size="60M", description="test size: width 32, 2 layers, 2 heads, vocab 512", cpu=True,
    ),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), list(PRESETS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown preset {name!r}{hint}; choose one of {', '.join(PRESETS)}") from None
