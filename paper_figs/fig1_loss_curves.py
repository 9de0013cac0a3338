"""[P] Fig 1 / Fig 2: eval loss and eval perplexity against training tokens.

Left: every optimizer at the paper's settings (lm_head as the paper trains it; dashed: the
head on Adam, the paper's ``*``). Right: the tuned comparison, Adam, RACS and Alice at their
best learning rate and the per-role Adam, mean over seeds with the min-max band.
"""

from __future__ import annotations

from pathlib import Path

from paper_figs.common import Runs, figure_cli, ppl, pyplot, save_figure, write_csv
from paper_figs.headline import HEADLINE, NAMES, best_spec, seed_curves

PAPER_CURVES = ("adam", "galore", "fira", "racs", "alice0", "alice")
COLORS = {"adam": "C0", "galore": "C1", "fira": "C2", "racs": "C3", "alice0": "C4", "alice": "C5", "per_role_adam": "C7"}


def curve_rows(runs: Runs) -> list[tuple]:
    """(panel, label, optimizer key, seed, tokens, eval loss) for every plotted point."""
    rows = []
    paper = runs.role("paper")
    for name in PAPER_CURVES:
        if name in paper:
            rows += [("paper", NAMES[name], name, 0, t, loss) for t, loss in runs.curve(paper[name])]
    for label, spec in runs.role("lm_head").items():
        if "head on Adam" in label:
            rows += [("paper", f"{NAMES[spec.optimizer]}*", spec.optimizer, 0, t, loss) for t, loss in runs.curve(spec)]
    for name in HEADLINE + ("per_role_adam",):
        role = "per_role_adam" if name == "per_role_adam" else f"sweep:{name}"
        best = best_spec(runs, role)
        if best is None:
            continue
        curves = seed_curves(runs, f"seeds:{name}") or {best.seed: runs.curve(best)}
        for seed, curve in curves.items():
            rows += [("tuned", NAMES[name], name, seed, t, loss) for t, loss in curve]
    return rows


def _plot(ax, rows, panel: str, transform) -> None:
    by_label: dict[str, dict[int, list]] = {}
    keys = {}
    for p, label, key, seed, tokens, loss in rows:
        if p == panel:
            by_label.setdefault(label, {}).setdefault(seed, []).append((tokens / 1e6, transform(loss)))
            keys[label] = key
    for label, seeds in by_label.items():
        style = "--" if label.endswith("*") else "-"
        curves = list(seeds.values())
        x = [t for t, _ in curves[0]]
        if len(curves) > 1 and all(len(c) == len(x) for c in curves):
            ys = list(zip(*[[v for _, v in c] for c in curves]))
            ax.fill_between(x, [min(y) for y in ys], [max(y) for y in ys], color=COLORS[keys[label]], alpha=0.2)
            mean = [sum(y) / len(y) for y in ys]
            ax.plot(x, mean, style, color=COLORS[keys[label]], label=f"{label} (mean of {len(curves)})", lw=1.4)
        else:
            ax.plot(x, [v for _, v in curves[0]], style, color=COLORS[keys[label]], label=label, lw=1.4)


def draw(runs: Runs, out: Path) -> list[Path]:
    rows = curve_rows(runs)
    if not rows:
        return []
    plt = pyplot()
    written = [write_csv(out / "fig1_fig2_curves.csv", ["panel", "label", "seed", "tokens", "eval_loss", "eval_ppl"],
                         [(p, label, seed, t, loss, ppl(loss)) for p, label, _, seed, t, loss in rows])]
    finals = [loss for *_, loss in rows]
    for number, (name, transform) in enumerate((("eval loss (nats)", float), ("eval perplexity", ppl)), start=1):
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), sharey=True)
        for ax, panel, title in zip(axes, ("paper", "tuned"),
                                    ("paper settings (* = lm_head on Adam)", "tuned lr, seeds (band: min-max)")):
            _plot(ax, rows, panel, transform)
            ax.set(title=title, xlabel="training tokens (M)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        low = min(finals)
        axes[0].set_ylim(transform(low - 0.1), transform(low + 1.6))
        axes[0].set_ylabel(name)
        fig.suptitle(f"[P] Fig {number} at CPU scale: {runs.protocol.description}", fontsize=9)
        fig.tight_layout()
        written += save_figure(fig, out / f"fig{number}_{'loss' if number == 1 else 'perplexity'}")
    return written


if __name__ == "__main__":
    raise SystemExit(figure_cli(draw, __doc__))
