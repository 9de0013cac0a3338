"""``REPORT.md``: what the reproduction measured, claim by claim, with its protocol and status.

Everything here is computed from the cached runs; the only hand-written part is the
discussion (``paper_figs/discussion_<preset>.md``, included verbatim when present), which says
what the numbers do and do not show.
"""

from __future__ import annotations

import datetime
import platform
from pathlib import Path

from experiments.reproduce.runner import planned_size
from paper_figs import claims, table3
from paper_figs.analysis import Spread, speedup
from paper_figs.common import Runs, ppl, provenance, write_markdown
from paper_figs.fig3_throughput import table as throughput_table
from paper_figs.fig4_memory import MIB, measurements
from paper_figs.fig6_switch_similarity import mean_similarity
from paper_figs.headline import NAMES, best_spec, describe, reference_curves, seed_curves, tuned_rows

FIGURES = ["fig1_loss.png", "fig2_perplexity.png", "fig3_throughput.png", "fig4_memory.png", "fig5_ablations.png",
           "fig6_switch_similarity.png"]


def _protocol(runs: Runs) -> str:
    p = runs.protocol
    grids = "; ".join(f"{NAMES[k]} {', '.join(f'{v:g}' for v in g)}" for k, g in p.sweeps.items())
    return "\n".join([
        "## Protocol", "",
        f"- Model and data: `{p.preset}` LLaMA ({p.description}), the Debian-documentation corpus, "
        f"sequence {p.seq_len}, batch {p.batch_size} sequences, {p.steps} steps "
        f"({p.steps * p.batch_size * p.seq_len / 1e6:.1f}M tokens per run); warmup 10% then cosine to 10%.",
        f"- Evaluation: mean loss over the same {p.eval_tokens:,} held-out tokens every {p.eval_every} steps; "
        f"every run of one seed sees the same initial weights and batches.",
        f"- Tuning budget, the same for each headline optimizer: a learning-rate sweep ({grids}; a grid whose "
        f"best point sits on an edge is extended by x{p.sweep_extension:g}, at most twice), then the best point "
        f"with seeds {', '.join(map(str, p.seeds))}. Everything else at paper defaults (Tables 7, 9, 11, "
        f"rank/interval rescaled as DECISIONS X5), one seed.",
        "- Routing as in the paper: attention/MLP matrices to the candidate; embeddings, norms and (for Adam, "
        "RACS, APOLLO) the head to Adam with the candidate's lr; the head on the candidate for Alice, Alice-0, "
        "GaLore and Fira (`*` = on Adam).",
        f"- {p.device.upper()}, {p.dtype}, {p.threads} thread per run, runs in parallel one per core.",
    ])


def _status(runs: Runs) -> str:
    total = planned_size(runs.protocol)
    done = len(runs.results)
    lines = [f"**Status: {done} of about {total} runs finished.**"]
    if done < total:
        lines.append(f"Still to run: {', '.join(runs.plan.waiting) or 'the queued runs'}; "
                     f"`fimkit reproduce --preset {runs.protocol.name}` continues where it stopped. "
                     "Claims marked *pending* are not decided yet.")
    return " ".join(lines)


def _headline(runs: Runs) -> str:
    rows = tuned_rows(runs)
    if not rows:
        return "## Tuned comparison\n\nThe sweeps have not finished."
    lines = ["## Tuned comparison: does RACS / Alice beat a tuned Adam at equal tokens?", "",
             "| optimizer | best settings | final eval loss (seeds) | eval ppl | token speed-up vs best Adam |",
             "|---|---|---|---|---|"]
    for r in rows:
        up = r.speedup.fmt(2, "x") if r.speedup else ("not reached" if r.not_reached else "—")
        lines.append(f"| {r.label} | {describe(r.spec)} | {r.finals.fmt(4) if r.finals else 'diverged'} | "
                     f"{ppl(r.finals.mean) if r.finals else float('inf'):.2f} | {up} |")
    sweeps = []
    for name in ("adam", "racs", "alice"):
        specs = runs.role(f"sweep:{name}")
        if specs:
            sweeps.append(f"{NAMES[name]}: " + ", ".join(f"{label} → {runs.final(s):.3f}" for label, s in specs.items()))
    return "\n".join(lines + ["", "Sweeps (seed 0, final eval loss): " + "; ".join(sweeps) + "."])


def _confounds(runs: Runs) -> str:
    """How much of the gap to Adam comes from the Adam-routed group's learning rate."""
    adam, per_role = best_spec(runs, "sweep:adam"), best_spec(runs, "per_role_adam")
    if adam is None or per_role is None:
        return "## The Adam-group learning rate\n\nWaiting for the Adam sweep and the per-role baseline."
    reference = reference_curves(runs)
    per_role_curves = seed_curves(runs, "seeds:per_role_adam") or {per_role.seed: runs.curve(per_role)}
    adam_final = Spread.of([c[-1][1] for c in reference.values()])
    role_final = Spread.of([c[-1][1] for c in per_role_curves.values()])
    lines = ["## The Adam-group learning rate (a confound, separated)", "",
             f"The embeddings, norms and head are {_adam_share(runs):.0%} of this model's parameters. By default a "
             "RACS or Alice run trains them with the candidate's lr; the baseline Adam uses one lr for everything. "
             f"Best single-lr Adam: {describe(adam)}, final {adam_final.fmt(4)}. Per-role Adam (matrices at that "
             f"lr, the rest swept over {', '.join(f'{v:g}' for v in runs.protocol.adam_group_grid)}): best "
             f"{describe(per_role)}, final {role_final.fmt(4)}.", "",
             "| run | final eval loss | speed-up vs single-lr Adam | vs per-role Adam | gap kept vs per-role |",
             "|---|---|---|---|---|"]
    candidates = [(f"{NAMES[n]} (Adam group at its own lr)", seed_curves(runs, f"seeds:{n}")) for n in ("racs", "alice")]
    candidates += [(f"{NAMES[s.optimizer]} (Adam group at Adam's lr {s.options['adam_lr']:g})", {s.seed: runs.curve(s)})
                   for s in runs.role("candidates_at_adam_lr").values()]
    for label, curves in candidates:
        if not curves:
            continue
        final = Spread.of([c[-1][1] for c in curves.values()])
        vs_adam = Spread.of([speedup(reference[s], c) for s, c in curves.items() if s in reference])
        vs_role = Spread.of([speedup(per_role_curves[s], c) for s, c in curves.items() if s in per_role_curves])
        gap_adam, gap_role = adam_final.mean - final.mean, role_final.mean - final.mean
        kept = f"{gap_role / gap_adam:.0%}" if gap_adam > 0 else "—"
        lines.append(f"| {label} | {final.fmt(4)} | {vs_adam.fmt(2, 'x') if vs_adam else 'not reached'} | "
                     f"{vs_role.fmt(2, 'x') if vs_role else 'not reached'} | {kept} |")
    return "\n".join(lines)


def _adam_share(runs: Runs) -> float:
    import dataclasses

    from experiments.model import LLaMA
    from experiments.presets import get_preset

    cfg = dataclasses.replace(get_preset(runs.protocol.preset).model, vocab_size=runs.protocol.vocab_size)
    model = LLaMA(cfg)
    total = sum(p.numel() for p in model.parameters())
    matrices = sum(p.numel() for n, p in model.named_parameters() if p.ndim == 2 and "embed" not in n and "lm_head" not in n)
    return 1 - matrices / total


def _claims(runs: Runs) -> list[claims.Claim]:
    paper = {k: runs.final(s) for k, s in runs.role("paper").items()}
    table5 = {k: runs.final(s) for k, s in runs.role("table5").items()}
    fig5e = runs.role("fig5e")
    # a tuned row counts once all its seeds have finished (one seed cannot decide a claim)
    tuned = {r.spec.optimizer if r.label != NAMES["per_role_adam"] else "per_role": r for r in tuned_rows(runs)
             if r.seeds == len(runs.protocol.seeds)}
    alice = tuned.get("alice")
    # one run's seed-to-seed spread: the largest std of the finished tuned rows
    noise = max((r.finals.std for r in tuned.values() if r.finals), default=None) or None
    found = [
        claims.beats_adam_claim("Alice", alice.finals if alice else None, tuned["adam"].finals if "adam" in tuned else None),
        claims.beats_adam_claim("RACS", tuned["racs"].finals if "racs" in tuned else None,
                                tuned["adam"].finals if "adam" in tuned else None),
        claims.ordering_claim(paper),
        claims.table5_claim(table5, noise),
        claims.speedup_claim(alice.speedup if alice else None, alice.not_reached if alice else 0),
        claims.ema_claim(*(runs.final(fig5e[k]) if k in fig5e else None for k in ("RACS (EMA)", "RACS without EMA")), noise),
        claims.memory_claim(table3.max_deviation(), reading_gb=table3.max_deviation(table3.TRACKING_IN_FP32)),
        claims.fig6_claim(mean_similarity(runs)),
        claims.throughput_claim({n: rel for n, _, rel, _, _ in throughput_table(runs)}),
    ]
    return found


def _measurements(runs: Runs) -> str:
    lines = ["## Memory and throughput", ""]
    found = measurements(runs)
    if found:
        lines.append("Measured peak memory of one training step (fp32 on CPU, MiB; standard / with layer-wise "
                     "gradient release): " + "; ".join(
                         f"{m['preset']} {NAMES.get(m['optimizer'], m['optimizer'])} {m['peak_bytes'] / MIB:.0f}"
                         f"{' (release)' if m['gradient_release'] else ''}" for m in found) + ".")
    speed = throughput_table(runs)
    if speed:
        lines.append("")
        lines.append("Throughput relative to Adam (interleaved, one process): " + ", ".join(
            f"{NAMES.get(n, n)} {rel:.2f}" + (f" (effective {eff:.2f})" if eff is not None else "")
            for n, _, rel, _, eff in speed) + ".")
    return "\n".join(lines)


def write_report(runs: Runs, figures_dir: Path, path: Path) -> Path:
    name = runs.protocol.name
    found = _claims(runs)
    rel = Path(figures_dir).relative_to(path.parent) if path.parent in Path(figures_dir).parents else figures_dir
    parts = [
        f"# Reproducing [P] at CPU scale: preset `{name}`", "",
        f"{_status(runs)}", "",
        f"Generated {datetime.date.today().isoformat()} on {platform.machine()} ({platform.processor() or 'cpu'}); "
        f"{provenance()}; runs trained at revision(s) {', '.join(runs.revisions()) or 'none yet'}. Regenerate "
        f"with `fimkit reproduce --preset {name}` (cached runs are not retrained).", "",
        "## The paper's claims at this scale", "",
        "| # | claim | [P] | ours | verdict |", "|---|---|---|---|---|",
        *[c.row() for c in found], "",
        _headline(runs), "",
        _confounds(runs), "",
        "## Every optimizer (Table 2)", "", f"See [`table2.md`]({rel}/table2.md); curves: "
        f"![Fig 1]({rel}/fig1_loss.png)", "",
        "## Ablations (Table 5, Fig 5) and switches (Fig 6)", "",
        f"[`table5.md`]({rel}/table5.md). ![Fig 5]({rel}/fig5_ablations.png) ![Fig 6]({rel}/fig6_switch_similarity.png)",
        "", _measurements(runs), "",
        f"Table 3 (from configs): [`table3.md`]({rel}/table3.md). ![Fig 4]({rel}/fig4_memory.png) "
        f"![Fig 3]({rel}/fig3_throughput.png)", "",
        _protocol(runs), "",
    ]
    discussion = Path(__file__).parent / f"discussion_{name}.md"
    if discussion.exists():
        parts += ["## Discussion (written by hand; check it against the tables above)", "", discussion.read_text()]
    return write_markdown(path, "\n".join(parts))

