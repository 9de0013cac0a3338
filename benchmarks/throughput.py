"""End-to-end training throughput (tokens/s) of Adam, RACS and Alice on a CPU preset, measured
by the reproduction's probe (``experiments.reproduce.probes.measure_throughput``): one model per
optimizer from the same weights, stepped round-robin in this process on the same batches, so the
machine's noise hits all alike; the mean over whole switching periods includes Alice's switches.
The optimizers run with the preset's paper hyperparameters (rescaled for CPU, as training does).
"""

from __future__ import annotations

import dataclasses

from experiments.reproduce.probes import measure_throughput
from experiments.reproduce.protocol import get_protocol

E2E_OPTIMIZERS = ("adam", "racs", "alice")


def e2e_throughput(protocol: str = "nano", threads: int = 1, rounds: int | None = None,
                   optimizers: tuple[str, ...] = E2E_OPTIMIZERS, **overrides) -> dict:
    """Tokens/s per optimizer and the ratio to Adam's. ``protocol``: a reproduction protocol
    (``nano``: width 128, batch 8 x 256; ``quick``: the test tier); ``rounds`` at least two
    switching periods (the probe's own rule); ``overrides``: further Protocol fields."""
    base = get_protocol(protocol)
    fields = dict(throughput_optimizers=tuple(optimizers), threads=threads, **overrides)
    if rounds is not None:
        fields["throughput_rounds"] = rounds
    result = measure_throughput(dataclasses.replace(base, **fields))
    tps = result["tokens_per_s"]
    result["preset"] = base.preset
    result["vs_adam"] = {name: value / tps["adam"] for name, value in tps.items()} if "adam" in tps else {}
    return result
