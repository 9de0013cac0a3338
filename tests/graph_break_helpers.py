"""Measuring what ``torch.compile`` makes of a training step (issue 12 item 6).

``explain_training_step(model, optimizer, x, y)`` runs one step
``loss = mse(model(x), y); loss.backward(); optimizer.step(); optimizer.zero_grad()`` under
``torch._dynamo.explain`` and returns its graphs, graph breaks and their reasons; the same for
``optimizer.step`` alone with :func:`explain_optimizer_step`. Run as a script it prints the
table of the issue for torch Adam, RACS, Alice and the routed optimizers.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


def tiny_model(seed: int = 0) -> torch.nn.Module:
    """Two Linear weights (matrices) plus biases and a LayerNorm's gain and bias (vectors)."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.Tanh(),
                               torch.nn.Linear(16, 4))


def batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(5, 8, generator=gen), torch.randn(5, 4, generator=gen)


def training_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer):
    def step(x, y):
        loss = F.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    return step


@dataclass
class Explained:
    graphs: int
    breaks: int
    reasons: Counter = field(default_factory=Counter)  # (first line of the reason, file:line)
    graph_modules: list = field(default_factory=list)

    def ops_named(self, name: str) -> int:
        """How many nodes of the graphs call an operator whose name contains ``name``."""
        return sum(name in str(node.target) for gm in self.graph_modules for node in gm.graph.nodes)


def _explained(result) -> Explained:
    reasons = Counter()
    for b in result.break_reasons:
        where = f"{b.user_stack[-1].filename.split('/')[-1]}:{b.user_stack[-1].lineno}" if b.user_stack else ""
        reasons[(b.reason.splitlines()[0], where)] += 1
    return Explained(result.graph_count, result.graph_break_count, reasons, list(result.graphs))


def explain_training_step(model, optimizer, x, y) -> Explained:
    """One training step under ``torch._dynamo.explain`` (it traces; the step is taken)."""
    torch._dynamo.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _explained(torch._dynamo.explain(training_step(model, optimizer))(x, y))


def explain_optimizer_step(model, optimizer, x, y) -> Explained:
    """``optimizer.step`` alone under ``torch._dynamo.explain``, the gradients of (x, y) given."""
    F.mse_loss(model(x), y).backward()
    torch._dynamo.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = _explained(torch._dynamo.explain(optimizer.step)())
    optimizer.zero_grad()
    return result


def optimizers(model) -> dict:
    import fimkit
    from fimkit.optim import RACS, Alice

    alice = dict(rank=4, leading=2, update_interval=3, seed=0)
    return {
        "torch Adam": lambda: torch.optim.Adam(model.parameters(), lr=1e-3),
        "RACS": lambda: RACS(model.parameters()),
        "Alice": lambda: Alice(model.parameters(), **alice),
        "build_optimizer racs": lambda: fimkit.build_optimizer(model, "racs"),
        "build_optimizer alice": lambda: fimkit.build_optimizer(model, "alice", **alice),
    }


if __name__ == "__main__":
    for name in optimizers(tiny_model()):
        for what, explain in (("training step", explain_training_step), ("opt.step", explain_optimizer_step)):
            model = tiny_model()
            optimizer = optimizers(model)[name]()
            x, y = batch()
            for step in range(2):  # the first step (state made, Alice's first basis) and the second
                result = explain(model, optimizer, x, y)
                print(f"{name:22} {what:13} step {step + 1}: graphs {result.graphs} breaks {result.breaks}")
                for (reason, where), count in result.reasons.items():
                    print(f"{'':26}{count} x {reason[:90]} ({where})")
