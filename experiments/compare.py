"""Compare optimizers: the same model, initial weights, batches and token budget for each.

An optimizer spec is a name with optional settings, e.g. ``adam``, ``adam:lr=3e-3``,
``alice:lm_head=matrix,rank=32``: keys that are ``TrainConfig`` fields set those, any other key
is an optimizer hyperparameter. The name may be a structure spec (``experiments.specs``), e.g.
``derive(RowColumn(), lr=1e-2):lm_head=adam`` or ``my_package.module:MyStructure:lr=3e-3``. Outputs in the comparison folder: one run folder per spec and
seed, ``results.md`` (the table), ``results.json``, and ``loss.png`` / ``loss.svg``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
from pathlib import Path
from typing import Any

from experiments.atomic import write_text_atomic
from experiments.config import TrainConfig, parse_key_value, suggestion
from experiments.figures import provenance, save_figure, smooth
from experiments.metrics import METRICS, MetricsLog
from experiments.optimizers import default_hparams
from experiments.presets import get_preset
from experiments.specs import canonical, is_spec, slug
from experiments.train import train

CONFIG_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)} - {"hparams", "out", "seed", "data_seed"}


def split_spec(spec: str) -> tuple[str, str]:
    """``spec`` -> (optimizer, settings): ``adam:lr=3e-3`` -> (``adam``, ``lr=3e-3``). A structure
    expression ends at its last ``)``; ``module:attribute`` keeps its own colon."""
    spec = spec.strip()
    if "(" in spec:
        end = spec.rindex(")") + 1
        rest = spec[end:]
        if rest and not rest.startswith(":"):
            raise ValueError(f"optimizer spec {spec!r}: expected EXPRESSION[:KEY=VALUE,...] after the expression")
        return spec[:end], rest[1:]
    parts = spec.split(":")
    if len(parts) >= 2 and parts[1] and "=" not in parts[1]:  # module:attribute[:KEY=VALUE,...]
        return ":".join(parts[:2]), ":".join(parts[2:])
    return parts[0], ":".join(parts[1:])


def parse_spec(spec: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """``name:key=value,...`` -> (optimizer name, config fields, optimizer hyperparameters)."""
    name, rest = split_spec(spec)
    name = name if is_spec(name) else name.lower()
    fields, hparams = {"optimizer": name}, {}
    for item in filter(None, rest.split(",")):
        try:
            key, value = parse_key_value(item)
        except argparse.ArgumentTypeError as exc:
            raise ValueError(f"optimizer spec {spec!r}: {exc}") from None
        (fields if key in CONFIG_FIELDS else hparams)[key] = value
    return name, fields, hparams


def run_dir_name(spec: str, seed: int, n_seeds: int) -> str:
    safe = slug(spec)
    return safe if n_seeds == 1 else f"{safe}-seed{seed}"


def check_spec_keys(spec: str, name: str, hparams: dict[str, Any], base: TrainConfig) -> None:
    """A key of a spec that is neither a config field nor a hyperparameter of its optimizer is an
    error suggesting the closest of either."""
    try:
        optimizer = canonical(name)
        preset = get_preset(base.preset)
    except ValueError as exc:
        raise ValueError(f"optimizer spec {spec!r}: {exc}") from None
    valid = default_hparams(optimizer, preset, base.steps or preset.steps)
    for key in sorted(set(hparams) - set(valid)):
        raise ValueError(f"optimizer spec {spec!r}: unknown key {key!r}{suggestion(key, [*CONFIG_FIELDS, *valid])}; "
                         f"config fields: {', '.join(sorted(CONFIG_FIELDS))}; {optimizer}'s hyperparameters: "
                         f"{', '.join(sorted(valid))}")


def run_comparison(base: TrainConfig, specs: list[str], seeds: list[int], out: str | Path,
                   resume: bool = False) -> list[dict[str, Any]]:
    """Train every spec for every seed (seed fixes weights and batch order alike); returns one
    summary per run, labelled with its spec."""
    out = Path(out)
    runs = []
    for spec in specs:
        name, fields, hparams = parse_spec(spec)
        check_spec_keys(spec, name, hparams, base)
        for seed in seeds:
            cfg = dataclasses.replace(base, **fields, hparams={**base.hparams, **hparams}, seed=seed,
                                      data_seed=seed, out=str(out / run_dir_name(spec, seed, len(seeds))))
            try:
                cfg.resolve()  # every spec checked before the first run trains
            except ValueError as exc:
                raise ValueError(f"optimizer spec {spec!r}: {exc}") from None
            runs.append((spec, seed, cfg))
    summaries = [{**train(cfg, resume=resume), "label": spec, "seed": seed} for spec, seed, cfg in runs]
    write_text_atomic(out / "results.json", json.dumps(summaries, indent=2) + "\n")
    return summaries


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def results_table(summaries: list[dict[str, Any]]) -> str:
    """Markdown: one row per spec (mean ± std over seeds where there are several)."""
    by_label: dict[str, list[dict[str, Any]]] = {}
    for s in summaries:
        by_label.setdefault(s["label"], []).append(s)
    first = summaries[0]
    lines = [
        (f"Preset `{first['preset']}`, {first['tokens']:,} training tokens per run ({first['steps']} steps), "
        f"{len(next(iter(by_label.values())))} seed(s). Eval: mean loss over the held-out tokens."),
        "",
        "| optimizer | final eval loss | eval ppl | tokens/s | optimizer state (MiB) |",
        "|---|---|---|---|---|",
    ]
    for label, runs in by_label.items():
        losses = [r["final_eval_loss"] for r in runs]
        ppl = math.exp(statistics.mean(losses))
        tps = statistics.mean(r["tokens_per_s"] for r in runs)
        mem = statistics.mean(r["optimizer_state_bytes"] for r in runs) / 2**20
        lines.append(f"| {label} | {_mean_std(losses)} | {ppl:.2f} | {tps:,.0f} | {mem:.1f} |")
    return "\n".join(lines) + "\n"


def plot_curves(summaries: list[dict[str, Any]], path_stem: str | Path) -> list[Path]:
    """Train loss (smoothed) and eval loss against tokens, one colour per spec; PNG and SVG."""
    import matplotlib

    matplotlib.use("Agg")  # files only: works without a display, and before pyplot is imported
    import matplotlib.pyplot as plt

    fig, (ax_train, ax_eval) = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    colors = {label: f"C{i}" for i, label in enumerate(dict.fromkeys(s["label"] for s in summaries))}
    for s in summaries:
        records = MetricsLog.read(Path(s["out"]) / METRICS)
        tokens = [r["tokens"] / 1e6 for r in records]
        label = s["label"] if s["seed"] == min(x["seed"] for x in summaries if x["label"] == s["label"]) else None
        ax_train.plot(tokens, smooth([r["train_loss"] for r in records]), color=colors[s["label"]], label=label, lw=1.2)
        evals = [r for r in records if "eval_loss" in r]
        ax_eval.plot([r["tokens"] / 1e6 for r in evals], [r["eval_loss"] for r in evals], "o-",
                     color=colors[s["label"]], label=label, ms=3, lw=1.2)
    ax_train.set(title="train loss (EMA 0.9)", xlabel="tokens (M)", ylabel="cross-entropy (nats)")
    ax_eval.set(title="held-out loss", xlabel="tokens (M)")
    for ax in (ax_train, ax_eval):
        ax.grid(alpha=0.3)
        ax.legend()
    # The first steps' losses (~ln vocab) would squash the interesting part of the curves.
    finals = [s["final_eval_loss"] for s in summaries if s["final_eval_loss"] is not None]
    if finals:
        ax_train.set_ylim(min(finals) - 0.3, min(finals) + 2.5)
    fig.tight_layout()
    return save_figure(fig, path_stem, dpi=150)


def write_report(summaries: list[dict[str, Any]], out: str | Path) -> tuple[Path, list[Path]]:
    out = Path(out)
    table = results_table(summaries) + f"\n<sub>{provenance()}</sub>\n"
    write_text_atomic(out / "results.md", table)
    return out / "results.md", plot_curves(summaries, out / "loss")
