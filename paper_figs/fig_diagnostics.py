"""``paper_figs/diagnostics/REPORT.md``: what the fit errors of ``fimkit diagnose`` say, and
whether they rank the optimizers as the reproduction's training runs do.

    python -m paper_figs.fig_diagnostics [--results paper_figs/diagnostics] [--preset nano]

Reads ``fit_errors.csv`` (written by ``fimkit diagnose``) and the finished runs at paper
settings of the reproduction (``paper_figs/runs/<preset>/<run id>/summary.json``, through the
reproduction's plan), and writes the report beside the CSV. Re-run it as more runs finish: it
trains nothing.
"""

from __future__ import annotations

import argparse
import math
from collections import defaultdict
from pathlib import Path

from scipy import stats

from fimkit.optimizer_fisher import paper_proportions
from paper_figs.common import Runs, read_csv, write_markdown

#: the structure family each replayed optimizer declares (its Frobenius optimum on the block);
#: low-rank optimizers use the block's rank (``fimkit.optimizer_fisher.paper_proportions``)
FAMILY = {"adam": "Diagonal", "racs": "RowColumn", "shampoo": "Kronecker(Full, Full)",
          "soap": "EigenvalueCorrected(Full, Full)", "eigen_adam": "EigenvalueCorrected(Full, Identity)",
          "alice": "LowRankPlusDiagonal", "alice0": "LowRankPlusDiagonal", "galore": "LowRankPlusDiagonal",
          "fira": "LowRankPlusDiagonal"}
DEMO = Path("paper_figs/cpu_demo/results.md")
#: the optimizers the reproduction trains at paper settings
PAPER_RUNS = ("adam", "racs", "alice", "alice0", "galore", "fira")


def load(results: Path) -> tuple[list[dict], str]:
    path = results / "fit_errors.csv"
    rows = read_csv(path)
    for r in rows:
        for key in ("error", "rescaled_error", "scale", "half_error", "extrapolated_error"):
            r[key] = float(r[key])
        r["step"], r["numel"] = int(r["step"]), int(r["numel"])
    made_by = path.read_text().splitlines()[0].lstrip("# ").strip()
    return rows, made_by


def mean_error(rows: list[dict], kind: str, step: int | None = None, key: str = "rescaled_error") -> dict[str, float]:
    """label -> mean of ``key`` over blocks (and over steps when ``step`` is None)."""
    values = defaultdict(list)
    for r in rows:
        if r["kind"] == kind and (step is None or r["step"] == step):
            values[r["label"]].append(r[key])
    return {label: sum(v) / len(v) for label, v in values.items()}


def block_shape(block: str) -> tuple[int, int]:
    """(rows, cols) of a block labelled ``module[r0:r1, c0:c1]``."""
    rows, cols = (int(b) - int(a) for a, b in (span.split(":") for span in block.split("[")[1].rstrip("]").split(",")))
    return rows, cols


def numel(rows: list[dict], label: str) -> int:
    return next(r["numel"] for r in rows if r["label"] == label)


def best_per_block(rows: list[dict], blocks: list[str], steps: list[int]) -> list[str]:
    lines = ["| block | " + " | ".join(f"step {s}" for s in steps) + " |", "|---|" + "---|" * len(steps)]
    for block in blocks:
        cells = []
        for step in steps:
            mine = [r for r in rows if r["block"] == block and r["step"] == step and r["kind"] == "structure"]
            top = sorted(mine, key=lambda r: r["rescaled_error"])[:2]
            cells.append(f"{top[0]['label']} {top[0]['rescaled_error']:.2f} (then {top[1]['label']} "
                         f"{top[1]['rescaled_error']:.2f})")
        lines.append(f"| `{block}` | " + " | ".join(cells) + " |")
    return lines


def structure_table(rows: list[dict], blocks: list[str], last: int) -> list[str]:
    final = {b: {r["label"]: r for r in rows if r["block"] == b and r["step"] == last and r["kind"] == "structure"}
             for b in blocks}
    labels = sorted(final[blocks[0]], key=lambda label: mean_error(rows, "structure", last)[label])
    short = [b.split("[")[0].removeprefix("layers.") for b in blocks]
    lines = ["| structure | numbers | " + " | ".join(short) + " | mean | k→∞ (mean) |",
             "|---|---|" + "---|" * (len(blocks) + 2)]
    for label in labels:
        errs = [final[b][label]["rescaled_error"] for b in blocks]
        extrapolated = sum(final[b][label]["extrapolated_error"] for b in blocks) / len(blocks)
        lines.append(f"| {label} | {numel(rows, label)} | " + " | ".join(f"{e:.3f}" for e in errs)
                     + f" | {sum(errs) / len(errs):.3f} | {extrapolated:.3f} |")
    return lines


def pareto(errors: dict[str, float], sizes: dict[str, int]) -> list[str]:
    """Labels no other label beats on both error and size, by size."""
    front = [a for a in errors if not any(errors[b] < errors[a] and sizes[b] <= sizes[a] for b in errors if b != a)]
    return sorted(front, key=lambda label: sizes[label])


def family_of(name: str, rows: list[dict]) -> str:
    """The structure label of the family optimizer ``name`` declares, at the block's scale."""
    family = FAMILY.get(name, "")
    if family == "LowRankPlusDiagonal":
        family = f"LowRankPlusDiagonal({paper_proportions(min(block_shape(rows[0]['block'])))['rank']})"
    return family


def optimizer_table(rows: list[dict], last: int) -> tuple[list[str], dict[str, float]]:
    """The table of the optimizers' own F~, and each one's excess error over its family's optimum."""
    own, own_raw = mean_error(rows, "optimizer", last), mean_error(rows, "optimizer", last, "error")
    over_time = mean_error(rows, "optimizer")
    structures = mean_error(rows, "structure", last)
    lines = ["| optimizer | own F~, rescaled | raw | mean over steps | its family's optimum | numbers stored |",
             "|---|---|---|---|---|---|"]
    gaps = {}
    for name in sorted(own, key=own.get):
        family = family_of(name, rows)
        optimum = "—"
        if family in structures:
            optimum, gaps[name] = f"{family} {structures[family]:.3f}", own[name] - structures[family]
        lines.append(f"| {name} | {own[name]:.3f} | {own_raw[name]:.3g} | {over_time[name]:.3f} | {optimum} | "
                     f"{numel(rows, name)} |")
    return lines, gaps


def ranking(rows: list[dict], runs: Runs) -> tuple[list[str], dict]:
    """Fit error (mean over blocks and steps) beside the final eval loss of each optimizer's run at
    paper settings, and the rank correlation over the optimizers that have both."""
    fit, final_fit = mean_error(rows, "optimizer"), mean_error(rows, "optimizer", max(r["step"] for r in rows))
    losses = {label: runs.final(spec) for label, spec in runs.role("paper").items()}
    both = sorted((name for name in fit if name in losses), key=lambda name: losses[name])
    lines = ["| optimizer | run | final eval loss | loss rank | own-F~ error (all steps) | fit rank | last step |",
             "|---|---|---|---|---|---|---|"]
    fit_rank = {name: i + 1 for i, name in enumerate(sorted(both, key=fit.get))}
    for i, name in enumerate(both):
        loss = "diverged" if math.isinf(losses[name]) else f"{losses[name]:.4f}"
        lines.append(f"| {name} | `{runs.role('paper')[name].id}` | {loss} | {i + 1} | {fit[name]:.3f} | "
                     f"{fit_rank[name]} | {final_fit[name]:.3f} |")
    waiting = [name for name in PAPER_RUNS if name not in losses]
    result = {"n": len(both), "waiting": waiting, "pair": [(name, fit[name], losses[name]) for name in both]}
    if len(both) >= 3:
        result["spearman"] = stats.spearmanr([fit[n] for n in both], [losses[n] for n in both]).statistic
        result["kendall"] = stats.kendalltau([fit[n] for n in both], [losses[n] for n in both]).statistic
    return lines, result


def ranking_verdict(result: dict) -> str:
    n, waiting = result["n"], ", ".join(result["waiting"]) or "none"
    if n == 2:
        (a, fit_a, loss_a), (b, fit_b, loss_b) = result["pair"]
        order = "the same order" if (fit_a < fit_b) == (loss_a < loss_b) else "the opposite order"
        return (f"Two optimizers have a finished run (still running: {waiting}): {a}'s F~ fits "
                f"{'better' if fit_a < fit_b else 'worse'} ({fit_a:.3f} against {fit_b:.3f}) and its run ends "
                f"{'lower' if loss_a < loss_b else 'higher'} ({loss_a:.4f} against {loss_b:.4f}): {order}. Two "
                f"points are no ranking; rerun `python -m paper_figs.fig_diagnostics` as more runs finish.")
    if n < 3:
        return (f"Only {n} of the optimizers replayed here have a finished run at paper settings (still "
                f"running: {waiting}), too few to compare rankings; rerun `python -m paper_figs.fig_diagnostics` "
                f"when they finish.")
    rho, tau = result["spearman"], result["kendall"]
    agreement = ("the same order" if rho > 0.999 else "a similar order" if rho >= 0.6 else
                 "no clear relation to it" if rho > -0.6 else "roughly the reverse order")
    return (f"Over the {n} optimizers with a finished run (still running: {waiting}), ranking by the fit "
            f"error of the F~ each uses gives {agreement} as ranking by final eval loss: Spearman "
            f"rho = {rho:.2f}, Kendall tau = {tau:.2f} (a lower error paired with a lower loss gives +1).")


LIMITS = """\
What this does show: how close each structural family's best member comes to the per-sequence
empirical Fisher of these weight blocks along one training trajectory, how the families order,
how much each optimizer's own estimator loses against its family's optimum (the estimator's bias,
the noise of its averaging window, Alice's random switching, the relative weight of a
compensation), and whether the order of those errors follows the order of the final losses.

What it does not show:
- **Causation.** A closer Frobenius fit need not make a better optimizer: the final loss also
  depends on the learning rate (paper settings: 1e-3 for Adam, 0.02 for the others), momentum,
  the limiter and scale factors, and where the output head is trained. Rank agreement over at
  most six optimizers and one seed is weak evidence either way.
- **The whole weight.** Each block is a {rows} x {cols} slice of its weight; correlations with the
  rest of the weight are not in `F`, and a Kronecker fit of a slice is not the slice of the whole
  weight's fit. The low-rank optimizers are replayed at the block's scale (rank {rank} of {short},
  as 128 of 512), not at their real rank.
- **The Fisher an optimizer tracks.** `F` averages per-sequence gradients; optimizers average
  minibatch gradients ({batch} sequences here), whose second moment is `mu mu^T + Sigma / {batch}`. The
  replay feeds one sequence a step, so short averaging windows (RACS, Alice `b2` 0.9; SOAP 0.95)
  see noisier inputs than in training, and long ones (Adam 0.999, Shampoo's sum) are favoured.
- **Other trajectories.** All gradients come from the model trained with Adam; a model trained
  by RACS or Alice may have gradients of another structure.
- **Step quality.** The Frobenius error weights large entries of `F`; a preconditioner applies
  `F~^{{-1/2}}`, whose accuracy in small-eigenvalue directions the error hardly sees.
- **Exact values.** With {samples} samples of a {dim}-dim gradient `F` is itself noisy; the `k→∞`
  column extrapolates from the two halves and is an estimate, not a measurement."""


def demo_note(rows: list[dict], demo: Path) -> list[str]:
    """``make demo``'s final losses (another preset and budget) beside the fit errors, if present."""
    import re

    if not demo.exists():
        return []
    losses = {m[1]: float(m[2]) for m in re.finditer(r"^\| (\w+) \| (\d+\.\d+) \|", demo.read_text(), re.M)}
    fit = mean_error(rows, "optimizer")
    both = sorted((name for name in losses if name in fit), key=losses.get)
    if len(both) < 2:
        return []
    by_fit = sorted(both, key=fit.get)
    rho = stats.spearmanr([fit[n] for n in both], [losses[n] for n in both]).statistic
    return ["", f"Context, not the comparison asked for: `make demo`'s runs (`{demo}`: the `tiny` preset, 150 steps, "
            f"its own batch and vocabulary) end in the order {' < '.join(f'{n} {losses[n]:.3f}' for n in both)}; "
            f"the fit errors here order them {' < '.join(f'{n} {fit[n]:.3f}' for n in by_fit)} (Spearman rho "
            f"{rho:.2f})."]


def trajectory_note(trajectory: Path | None, runs: Runs) -> list[str]:
    """Whether the diagnosed run (when its folder is here) repeats the reproduction's Adam run."""
    import json

    from experiments.train import RESUMABLE_CHANGES

    adam = runs.role("paper").get("adam")
    if trajectory is None or adam is None:
        return []
    if not (trajectory / "summary.json").exists():
        return [f"\nThe diagnosed run's folder (`{trajectory}`) is not on the machine that wrote this report, so "
                f"whether it repeats the reproduction's `{adam.id}` was not checked here (rerun the `fimkit "
                f"diagnose` command above, then this script)."]
    mine, theirs = (json.loads((folder / "config.json").read_text())["train"]
                    for folder in (trajectory, runs.runs_dir / adam.id))
    # hyperparameters a version of the code records only as defaults are not differences
    for config in (mine, theirs):
        config.update({f"hparams.{k}": v for k, v in config.pop("hparams", {}).items()})
    differing = sorted(k for k in mine.keys() & theirs.keys() if k not in RESUMABLE_CHANGES and mine[k] != theirs[k])
    settings = ("the same settings" if not differing else "its settings except " + ", ".join(
        f"{k} ({mine[k]!r} here, {theirs[k]!r} there)" for k in differing))
    summary, reference = json.loads((trajectory / "summary.json").read_text()), runs.final(adam)
    if summary.get("steps") != runs.protocol.steps or summary.get("final_eval_loss") is None:
        return []  # not trained to the end (yet)
    loss = summary["final_eval_loss"]
    verdict = ("equal to that run's: the diagnosed trajectory is that run's" if loss == reference else
               f"not that run's {reference:.6f}: the trajectories differ")
    return [f"\nThe diagnosed run (`{trajectory}`) has the reproduction's `{adam.id}` with {settings}; its final "
            f"eval loss, {loss:.6f}, is {verdict}."]


def over_time(rows: list[dict], steps: list[int]) -> list[str]:
    """Per step, averaged over the blocks: the best structure, Diagonal and the noise of F."""
    lines = ["| step | best structure | its error | Diagonal | sampling noise of F |", "|---|---|---|---|---|"]
    for step in steps:
        errors, noise = mean_error(rows, "structure", step), mean_error(rows, "noise", step, "error")
        best = min(errors, key=errors.get)
        lines.append(f"| {step} | {best} | {errors[best]:.3f} | {errors.get('Diagonal', math.nan):.3f} | "
                     f"{next(iter(noise.values()), math.nan):.3f} |")
    return lines


def side_notes(rows: list[dict], blocks: list[str], last: int) -> list[str]:
    """Which side of a one-sided eigenbasis helps in each block, and how close RowColumn is to Diagonal."""
    final = {(r["block"], r["label"]): r["rescaled_error"] for r in rows if r["step"] == last}
    notes = []
    rows_side, cols_side = "EigenvalueCorrected(Full, Identity)", "EigenvalueCorrected(Identity, Full)"
    if all((b, label) in final for b in blocks for label in (rows_side, cols_side)):
        better = {b: "input (column)" if final[b, cols_side] < final[b, rows_side] else "output (row)" for b in blocks}
        notes.append("A one-sided eigenbasis helps most on the " + "; ".join(
            f"{side} side in {', '.join(f'`{b.split(chr(91))[0]}`' for b in blocks if better[b] == side)}"
            for side in dict.fromkeys(better.values())) + ".")
    if all((b, label) in final for b in blocks for label in ("Diagonal", "RowColumn")):
        gap = max(final[b, "RowColumn"] - final[b, "Diagonal"] for b in blocks)
        notes.append(f"RowColumn (RACS's structure) is at most {gap:.3f} above Diagonal (Adam's) in every block, "
                     f"with {numel(rows, 'RowColumn')} numbers instead of {numel(rows, 'Diagonal')}.")
    return notes


def structures_section(rows: list[dict], blocks: list[str], steps: list[int]) -> list[str]:
    last = steps[-1]
    structures = mean_error(rows, "structure", last)
    sizes = {label: numel(rows, label) for label in structures}
    ordered = sorted(structures, key=structures.get)
    front = ", ".join(f"{label} ({sizes[label]} numbers, {structures[label]:.3f})"
                      for label in pareto(structures, sizes))
    return ["", f"## Which structure fits best where (step {last})", "", *structure_table(rows, blocks, last), "",
            f"Best, averaged over the blocks: **{ordered[0]}** ({structures[ordered[0]]:.3f}), then {ordered[1]} "
            f"({structures[ordered[1]]:.3f}) and {ordered[2]} ({structures[ordered[2]]:.3f}); worst "
            f"{ordered[-1]} ({structures[ordered[-1]]:.3f}). " + " ".join(side_notes(rows, blocks, last)),
            "", f"Accuracy against memory (no other structure is both smaller and closer): {front}.",
            "", "Over training (means over the blocks):", "", *over_time(rows, steps),
            "", "The two best structures per block and step:", "", *best_per_block(rows, blocks, steps)]


def optimizers_section(rows: list[dict], last: int) -> list[str]:
    table, gaps = optimizer_table(rows, last)
    ordered = sorted(gaps, key=gaps.get)
    return ["", "## What the optimizers actually use", "",
            "Each optimizer's own code replayed on the same gradients, one per step; `F~` read from its state "
            f"(`fimkit.optimizer_fisher`). Mean over the blocks at step {last}; raw errors carry the estimator's "
            "scale (Shampoo's sums are far off, hence the rescaling).", "", *table, "",
            "Excess over the family's optimum, smallest first: " + ", ".join(f"{n} +{gaps[n]:.3f}" for n in ordered)
            + "."]


def write_report(results: Path, runs: Runs, trajectory: Path | None, demo: Path = DEMO) -> Path:
    rows, made_by = load(results)
    blocks = list(dict.fromkeys(r["block"] for r in rows))
    steps = sorted({r["step"] for r in rows})
    rank_lines, result = ranking(rows, runs)
    samples = rows[0]["samples"]
    rows_, cols_ = block_shape(blocks[0])
    out = ["# Diagnostics: which Fisher structure do the gradients support?", "",
           f"Outputs of `fimkit diagnose` in this folder ({made_by}): `fit_errors.csv` / `fit_errors.md` (every "
           f"number), `error_vs_step.png`, `error_vs_state.png`. {len(blocks)} blocks, {samples} per-sequence "
           f"gradients per step, steps {', '.join(map(str, steps))}. Errors are `min_c ||F - c F~|| / ||F||` "
           f"(the learning rate absorbs a preconditioner's scale; raw errors are in the CSV)."]
    out += trajectory_note(trajectory, runs)
    out += structures_section(rows, blocks, steps) + optimizers_section(rows, steps[-1])
    out += ["", "## Do the fit errors rank the optimizers as their training runs do?", "", *rank_lines, "",
            ranking_verdict(result), *demo_note(rows, demo), "", "## What this shows and what it does not", "",
            LIMITS.format(rows=rows_, cols=cols_, rank=paper_proportions(min(rows_, cols_))["rank"],
                          short=min(rows_, cols_), batch=runs.protocol.batch_size, samples=samples,
                          dim=rows_ * cols_)]
    return write_markdown(results / "REPORT.md", "\n".join(out))


def main(argv: list[str] | None = None) -> int:
    from experiments.reproduce.protocol import get_protocol

    parser = argparse.ArgumentParser(prog="python -m paper_figs.fig_diagnostics", description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="paper_figs/diagnostics", help="folder of fimkit diagnose's outputs")
    parser.add_argument("--preset", default="nano", help="reproduction protocol whose runs to compare with")
    parser.add_argument("--runs", default=None, help="its run folders (default: paper_figs/runs/<preset>)")
    parser.add_argument("--trajectory", default="runs/diagnose-nano-adam",
                        help="the diagnosed run's folder, to check it repeats the reproduction's (if present)")
    args = parser.parse_args(argv)
    protocol = get_protocol(args.preset)
    runs = Runs.load(protocol, args.runs or f"paper_figs/runs/{protocol.name}")
    print(write_report(Path(args.results), runs, Path(args.trajectory) if args.trajectory else None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
