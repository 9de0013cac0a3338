"""``fimkit bench``'s outputs: one JSON document and one Markdown report for all thread counts of a
run, each naming the command, the git revision and the machine."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from .sweep import format_sweep


def git_revision(root: Path | None = None) -> str:
    """``git rev-parse --short HEAD``, with ``-dirty`` when tracked files have changes."""
    root = root or Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + ("-dirty" if dirty else "")


def _f(value, digits=2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _ordered(rows: list[dict]) -> list[dict]:
    """torch's Adams first, then each fimkit optimizer followed by the packages' versions of it."""
    torch_rows = [r for r in rows if r["package"] == "torch"]
    ours = [r for r in rows if r["package"] == "fimkit"]
    others = [r for r in rows if r["package"] not in ("torch", "fimkit")]
    out = list(torch_rows)
    for r in ours:  # (a variant row, e.g. "racs (fused_step)", is not followed by the packages again)
        out.append(r)
        out += [o for o in others if o["algorithm"] == r["algorithm"] and o not in out]
    return out + [o for o in others if o not in out]


def step_table(run: dict) -> str:
    ours = {r["algorithm"]: r for r in run["rows"] if r["package"] == "fimkit"}
    lines = ["| optimizer | step (ms) | / Adam foreach | / Adam fused | floor (ms) | bound | step / floor "
             "| package / fimkit | state (MiB) | peak RSS growth (MiB) | notes |", "|---" * 11 + "|"]
    for r in _ordered(run["rows"]):
        mine = ours.get(r["algorithm"])
        speedup = _f(r["step_ms"] / mine["step_ms"]) if mine and r["package"] not in ("fimkit", "torch") else ""
        notes = "; ".join(r["notes"] + ([r["differs"]] if r["differs"] else []))
        lines.append(f"| {r['label']} | {r['step_ms']:.1f} | {r['vs_foreach']:.2f} | {r['vs_fused']:.2f} "
                     f"| {_f(r['floor_ms'], 1)} | {r['floor_bound'] or ''} | {_f(r['step_over_floor'])} | {speedup} "
                     f"| {r['state_mib']:.1f} | {_f(r['peak_rss_mib'], 1)} | {notes} |")
    return "\n".join(lines)


def targets_table(run: dict) -> str:
    lines = ["| target | subject | value | needs | verdict |", "|---|---|---|---|---|"]
    for v in run["targets"]:
        needs = ("<= " if v["at_most"] else ">= ") + f"{v['threshold']:g}"
        verdict = {"met": "met", "missed": "**missed**", "n/a": "n/a"}[v["verdict"]]
        if v.get("bound"):
            verdict += f" ({v['bound']})"
        lines.append(f"| {v['text']} | {v['subject']} | {_f(v['value'])} | {needs} | {verdict} |")
    return "\n".join(lines)


def e2e_table(e2e: dict) -> str:
    lines = [f"Preset `{e2e['preset']}` (protocol `{e2e['protocol']}`), {e2e['tokens_per_step']} tokens a step, "
             f"{e2e['rounds']} interleaved rounds.", "", "| optimizer | tokens/s | / Adam | mean step (s) |",
             "|---|---|---|---|"]
    for name, tps in e2e["tokens_per_s"].items():
        lines.append(f"| {name} | {tps:,.0f} | {_f(e2e['vs_adam'].get(name))} | {e2e['mean_step_s'][name]:.3f} |")
    return "\n".join(lines)


def summary(runs: list[dict]) -> str:
    lines = []
    for run in runs:
        counts, unreachable = {}, {}
        for v in run["targets"]:
            counts.setdefault(v["target"], []).append(v["verdict"])
            unreachable[v["target"]] = unreachable.get(v["target"], 0) + bool(v.get("bound"))
        parts = [f"{key}: {verdicts.count('met')}/{len(verdicts)} met"
                 + (f" ({unreachable[key]} of the misses unreachable)" if unreachable[key] else "")
                 for key, verdicts in counts.items()]
        lines.append(f"- {run['threads']} thread(s): " + ", ".join(parts))
    return "\n".join(lines)


def markdown(document: dict) -> str:
    lines = [f"# `fimkit bench` on {document['device']}", ""]
    if document.get("partial"):
        lines += [f"**{document['partial']}** (the run was cut short or is still going)", ""]
    lines += [f"Command: `{document['command']}`  ", f"Revision: `{document['revision']}`  ",
              f"Date: {document['date']}  ", f"Shapes: {document['shapes_label']}", "",
              "Ratios within one table are what count: absolute times on this shared VM move 20-50% between "
              "runs. Floor = max(necessary bytes / bandwidth of torch's fused Adam, necessary matmul flops / "
              "GEMM rate), both measured in the same rounds (`benchmarks/floors.py`, `benchmarks/README.md`).",
              "", "| machine | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in document["machine"].items()]
    lines += ["", "## Targets (issue 14), summary", "", summary(document["runs"])]
    for run in document["runs"]:
        t = run["threads"]
        lines += ["", f"## {t} thread{'s' if t > 1 else ''}", "",
                  f"Load average (1/5/15 min): {run.get('load', 'n/a')}. Bandwidth (fused Adam, 28 B a weight): "
                  f"{run['rates']['bandwidth_GBps']:.1f} GB/s; matmul rate (fastest probe): "
                  f"{run['rates']['matmul_GFLOPs']:.1f} GFLOP/s ("
                  + ", ".join(f"{p['label']}: {p['step_ms']:.2f} ms" for p in run["probes"]) + ").", ""]
        lines += [f"- {note}" for note in run["notes"]]
        lines += ["", step_table(run), "", "### Targets", "", targets_table(run)]
        if "sweep" in run:
            lines += ["", "### Size sweep", "", format_sweep(run["sweep"])]
        if "e2e" in run:
            lines += ["", "### End-to-end training throughput", "", e2e_table(run["e2e"])]
    return "\n".join(lines) + "\n"


def write(document: dict, out_dir: Path, stem: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(document, indent=1, default=str) + "\n")
    md_path.write_text(markdown(document))
    return [json_path, md_path]
