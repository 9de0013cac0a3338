"""Which training runs a reproduction needs, given the runs that have finished.

A run is a :class:`RunSpec`: an optimizer, the settings that differ from the protocol's shared
ones, and a seed. Its id is a pure function of those, so two figures that need the same run
share it (Alice at its paper lr is a sweep point, a Fig 1 curve and the reference of every
Fig 5 panel), and a finished run is found again after an interruption.

The plan is computed in rounds: the sweeps and every paper-default run are known at once; the
seeds of each sweep's best, the per-role Adam baseline and the candidates with the baseline's
Adam lr appear when the sweeps they depend on have finished (``plan`` is called again).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import fimkit
from experiments.reproduce.protocol import Protocol
from fimkit.routing import paper_lm_head, resolve_lm_head

#: Table 11's defaults that Fig 5 / Table 5 switch off one at a time
ABLATION_BASE = "alice"


@dataclass(frozen=True)
class RunSpec:
    optimizer: str
    settings: tuple[tuple[str, Any], ...] = ()  # sorted (key, value): TrainConfig fields and hparams
    seed: int = 0

    @staticmethod
    def make(optimizer: str, seed: int = 0, **settings: Any) -> RunSpec:
        """A spec with the settings that equal the defaults dropped (except ``lr``, always
        explicit), so one configuration has one id however it was asked for."""
        defaults = fimkit.optim.get_optimizer(optimizer).default_hyperparameters()
        kept = {k: v for k, v in settings.items()
                if k == "lr" or not (k in defaults and defaults[k] == v)
                and not (k == "lm_head" and resolve_lm_head(v, optimizer) == paper_lm_head(optimizer))}
        return RunSpec(optimizer, tuple(sorted(kept.items())), seed)

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.settings)

    @property
    def id(self) -> str:
        parts = [self.optimizer] + [f"{k.replace('_', '')}{_short(v)}" for k, v in self.settings]
        return "-".join(parts + [f"s{self.seed}"])

    def with_seed(self, seed: int) -> RunSpec:
        return RunSpec(self.optimizer, self.settings, seed)


def _short(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def paper_lr(optimizer: str, protocol: Protocol) -> float:
    return float(fimkit.optim.paper_hparams(optimizer, "60M").get("lr", 1e-3))


def default_run(optimizer: str, protocol: Protocol, seed: int = 0, **settings: Any) -> RunSpec:
    """``optimizer`` at its paper lr (and the paper's lm_head), with ``settings`` on top."""
    return RunSpec.make(optimizer, seed, **{"lr": paper_lr(optimizer, protocol), **settings})


@dataclass
class Plan:
    """Every run known so far, grouped by what uses it (``roles``: figure -> label -> spec)."""

    runs: dict[str, RunSpec] = field(default_factory=dict)
    roles: dict[str, dict[str, RunSpec]] = field(default_factory=dict)
    waiting: list[str] = field(default_factory=list)  # what is not planned yet, and why

    def add(self, role: str, label: str, spec: RunSpec) -> RunSpec:
        self.runs.setdefault(spec.id, spec)
        self.roles.setdefault(role, {})[label] = spec
        return spec


def sweep_grid(protocol: Protocol, optimizer: str, losses: dict[float, float | None]) -> list[float]:
    """The sweep's lrs: the protocol's grid, extended past an edge that holds the best loss
    (by ``sweep_extension``, at most twice) once the points it has are finished."""
    grid = sorted(protocol.sweeps[optimizer])
    for _ in range(2):
        done = {lr: losses.get(lr) for lr in grid}
        if any(loss is None for loss in done.values()):
            break
        best = min(grid, key=lambda lr: done[lr])
        if best == grid[-1]:
            grid.append(grid[-1] * protocol.sweep_extension)
        elif best == grid[0]:
            grid.insert(0, grid[0] / protocol.sweep_extension)
        else:
            break
    return grid


def best_of(specs: dict[str, RunSpec], results: dict[str, float]) -> RunSpec | None:
    """The spec with the lowest final eval loss, once all of ``specs`` have finished."""
    if not specs or any(s.id not in results for s in specs.values()):
        return None
    return min(specs.values(), key=lambda s: results[s.id])


def plan(protocol: Protocol, results: dict[str, float]) -> Plan:
    """``results``: run id -> final eval loss of every finished run (a diverged run: ``inf``)."""
    p = Plan()
    best: dict[str, RunSpec | None] = {}
    for optimizer in protocol.sweeps:
        specs = {}
        for lr in sweep_grid(protocol, optimizer, {}):
            specs[lr] = RunSpec.make(optimizer, lr=lr)
        losses = {lr: results.get(s.id) for lr, s in specs.items()}
        for lr in sweep_grid(protocol, optimizer, losses):
            specs[lr] = RunSpec.make(optimizer, lr=lr)
        for lr, spec in sorted(specs.items()):
            p.add(f"sweep:{optimizer}", f"lr={lr:g}", spec)
        best[optimizer] = best_of(p.roles[f"sweep:{optimizer}"], results)
        if best[optimizer] is None:
            p.waiting.append(f"seeds of the best {optimizer} (its sweep is running)")
            continue
        for seed in protocol.seeds:
            p.add(f"seeds:{optimizer}", f"seed {seed}", best[optimizer].with_seed(seed))

    # Insertion order is training order: what the most claims need first.
    _paper_defaults(p, protocol)
    _ablations(p, protocol, ("table5", "fig5e", "fig6"))
    _confounds(p, protocol, best, results)
    _ablations(p, protocol, ("fig5b", "fig5c"))
    _lm_head_pairs(p, protocol)
    return p


def _paper_defaults(p: Plan, protocol: Protocol) -> None:
    """Fig 1/2 curves and Table 2 columns at the paper's settings (lm_head as the paper has it)."""
    for optimizer in ("adam", "racs", "alice", *protocol.others):
        p.add("paper", optimizer, default_run(optimizer, protocol))


def _lm_head_pairs(p: Plan, protocol: Protocol) -> None:
    """Fig 5d and the ``*`` columns of Table 2: the head on the optimizer and on Adam."""
    for optimizer in protocol.lm_head_pairs:
        p.add("lm_head", f"{optimizer} (head on {optimizer})", default_run(optimizer, protocol, lm_head="matrix"))
        p.add("lm_head", f"{optimizer}* (head on Adam)", default_run(optimizer, protocol, lm_head="adam"))


def _ablations(p: Plan, protocol: Protocol, figures: tuple[str, ...]) -> None:
    """Table 5 / Fig 5a, Fig 5b, c, e and Fig 6: one seed each, everything else at Alice's
    paper defaults."""
    alice = lambda **kw: default_run(ABLATION_BASE, protocol, **kw)  # noqa: E731
    if "table5" in figures:
        for tracking in (0.0, 0.999):
            for switching in (False, True):
                label = f"tracking {'on' if tracking else 'off'}, switching {'on' if switching else 'off'}"
                p.add("fig5a", label, alice(tracking_beta=tracking, switching=switching, compensation="none"))
        fig5a = p.roles["fig5a"]
        p.add("table5", "none", fig5a["tracking off, switching off"])
        p.add("table5", "+tracking", fig5a["tracking on, switching off"])
        p.add("table5", "+tracking +switching", fig5a["tracking on, switching on"])
        p.add("table5", "+compensation (Alice)", alice())
    if "fig5b" in figures:
        for mode in ("complement", "gaussian_mix", "gaussian"):
            p.add("fig5b", mode, alice() if mode == "complement" else alice(switch_mode=mode))
    if "fig5c" in figures:
        for mode in ("optimal", "none", "fira", "fira_plus"):
            p.add("fig5c", mode, alice() if mode == "optimal" else alice(compensation=mode))
    if "fig5e" in figures:
        p.add("fig5e", "RACS (EMA)", default_run("racs", protocol))
        p.add("fig5e", "RACS without EMA", default_run("racs", protocol, ema=False))
    if "fig6" in figures:
        p.add("fig6", "tracking on (Alice)", alice())
        p.add("fig6", "tracking off (Alice-0)", default_run("alice0", protocol))


def _confounds(p: Plan, protocol: Protocol, best: dict[str, RunSpec | None], results: dict[str, float]) -> None:
    """The Adam-group learning rate, separated: a per-role Adam baseline, and the candidates
    with their Adam group at the baseline's lr."""
    adam = best.get("adam")
    if adam is None:
        p.waiting.append("the per-role Adam baseline and the candidates at Adam's lr (Adam's sweep is running)")
        return
    adam_lr = adam.options["lr"]
    for group_lr in protocol.adam_group_grid:
        p.add("per_role_adam", f"adam_lr={group_lr:g}", RunSpec.make("adam", lr=adam_lr, adam_lr=group_lr))
    per_role = best_of(p.roles["per_role_adam"], results)
    if per_role is None:
        p.waiting.append("seeds of the best per-role Adam (its sweep is running)")
    else:
        for seed in protocol.seeds:
            p.add("seeds:per_role_adam", f"seed {seed}", per_role.with_seed(seed))
    for optimizer in ("racs", "alice"):
        if best.get(optimizer) is not None:
            spec = RunSpec.make(optimizer, **{**best[optimizer].options, "adam_lr": adam_lr})
            p.add("candidates_at_adam_lr", optimizer, spec)
