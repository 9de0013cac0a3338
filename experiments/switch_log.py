"""Subspace switches as the optimizer makes them ([P] Fig 6): ``switches.jsonl`` in the run folder.

At every basis refresh after the first (``t % update_interval == 0``), each low-rank matrix's
basis ``U`` (``state["basis"]``, ``m x r``) is read just before and just after the optimizer
step, and the absolute cosine similarity of every column with its old self,
``|<u_i before, u_i after>|``, is written for the leading columns. With tracking on, the
leading eigenvectors of the tracked statistic survive a switch (cosines near 1); without it
the new basis comes from the current gradient alone. Nothing is recomputed afterwards: the
numbers are the bases the optimizer actually used.
"""

from __future__ import annotations

from pathlib import Path

import torch

from experiments.metrics import MetricsLog

SWITCHES = "switches.jsonl"
MAX_COLUMNS = 16  # columns recorded per matrix and switch (the leading ones)


def column_cosines(before: torch.Tensor, after: torch.Tensor, columns: int) -> list[float]:
    """``|cos|`` between column i of ``before`` and column i of ``after``, for the first ``columns``."""
    k = min(columns, before.shape[1], after.shape[1])
    a, b = before[:, :k].double(), after[:, :k].double()
    cos = (a * b).sum(0) / (a.norm(dim=0) * b.norm(dim=0)).clamp_min(1e-300)
    return [round(float(c), 5) for c in cos.abs()]


class SwitchLog:
    """Records the switches of every param group that keeps a basis and an ``update_interval``."""

    def __init__(self, optimizer: torch.optim.Optimizer, out: str | Path, resume_step: int | None):
        self.groups = [g for g in optimizer.param_groups if "update_interval" in g and "rank" in g]
        self.optimizer = optimizer
        self.log = MetricsLog(Path(out) / SWITCHES, resume_step=resume_step) if self.groups else None
        self.before: dict[str, torch.Tensor] = {}
        self.step = 0

    def before_step(self, step: int) -> None:
        """Call before the forward/backward of 1-based step ``step`` (gradient release steps
        the parameters inside ``backward``)."""
        self.step, self.before = step, {}
        for group in self.groups:
            if step > 1 and step % int(group["update_interval"]) == 0:
                for name, p in zip(group["param_names"], group["params"]):
                    basis = self.optimizer.state.get(p, {}).get("basis")
                    if basis is not None:
                        self.before[name] = basis.detach().clone()

    def after_step(self) -> None:
        if not self.before:
            return
        names = {name: p for g in self.groups for name, p in zip(g["param_names"], g["params"])}
        for name, old in self.before.items():
            group = next(g for g in self.groups if name in g["param_names"])
            columns = min(MAX_COLUMNS, int(group.get("leading") or MAX_COLUMNS) or MAX_COLUMNS)
            new = self.optimizer.state[names[name]]["basis"]
            self.log.append({"step": self.step, "param": name, "cos": column_cosines(old, new, columns)})
        self.before = {}
