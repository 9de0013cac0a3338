"""[P] Fig 5 at CPU scale: Alice's ablations (a-d) and RACS with and without EMA (e).

(a) tracking x switching with compensation off; (b) switch modes; (c) compensation modes;
(d) lm_head trained by the optimizer or by Adam, for Alice, Alice-0, GaLore and Fira;
(e) RACS with and without the EMA of its row/column factors. One seed each, everything else
at the paper's settings (Alice lr 0.02, Table 11 rescaled); eval loss against tokens.
"""

from __future__ import annotations

from pathlib import Path

from paper_figs.common import Runs, figure_cli, pyplot, save_figure, write_csv

PANELS = (("fig5a", "(a) tracking x switching, no compensation"), ("fig5b", "(b) switch modes"),
          ("fig5c", "(c) compensation modes"), ("lm_head", "(d) lm_head on the optimizer / on Adam"),
          ("fig5e", "(e) RACS: EMA of the factors"))


def draw(runs: Runs, out: Path) -> list[Path]:
    panels = [(role, title, runs.role(role)) for role, title in PANELS]
    if not any(specs for _, _, specs in panels):
        return []
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2))
    rows, finals = [], []
    for ax, (role, title, specs) in zip(axes, panels):
        for i, (label, spec) in enumerate(specs.items()):
            curve = runs.curve(spec)
            rows += [(role, label, t, loss) for t, loss in curve]
            finals.append(curve[-1][1])
            style = "--" if "Adam" in label or "without" in label else "-"
            color = f"C{i // 2}" if role == "lm_head" else f"C{i}"
            ax.plot([t / 1e6 for t, _ in curve], [loss for _, loss in curve], style, color=color,
                    label=f"{label}: {curve[-1][1]:.3f}", lw=1.3)
        ax.set(title=title, xlabel="training tokens (M)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6.5)
    if finals:
        for ax in axes:
            ax.set_ylim(min(finals) - 0.1, min(finals) + 1.2)
    axes[0].set_ylabel("eval loss (nats)")
    fig.suptitle(f"[P] Fig 5 at CPU scale (legend: final eval loss): {runs.protocol.description}", fontsize=9)
    fig.tight_layout()
    return [write_csv(out / "fig5_ablations.csv", ["panel", "label", "tokens", "eval_loss"], rows),
            *save_figure(fig, out / "fig5_ablations")]


if __name__ == "__main__":
    raise SystemExit(figure_cli(draw, __doc__))
