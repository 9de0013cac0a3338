"""``fimkit diagnose`` end to end on the micro preset and the shipped sample corpus."""

from __future__ import annotations

import csv
import json

import pytest

from experiments.data.sample import SAMPLE
from experiments.diagnose import diagnose_command
from fimkit.cli import available_commands
from fimkit.diagnostics import builtin_structures

BLOCKS = ("layers.0.attn.q_proj", "layers.1.mlp.down_proj")


@pytest.fixture(scope="module")
def diagnosed(tmp_path_factory):
    """One tiny diagnose run: 6 steps, gradients at steps 2 and 6, two 4 x 8 blocks."""
    root = tmp_path_factory.mktemp("diagnose")
    argv = ["--preset", "micro", "--data", str(SAMPLE), "--cache", str(root / "cache"), "--out", str(root / "run"),
            "--steps", "6", "--at", "2", "6", "--layers", *BLOCKS, "--block", "4x8", "--samples", "12",
            "--threads", "1", "--results", str(root / "results"), "--replay", "adam", "racs", "alice"]
    assert diagnose_command(argv) == 0
    return root


def read_rows(path):
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    return list(csv.DictReader(lines))


def test_the_command_is_registered():
    assert available_commands()["diagnose"] == "experiments.diagnose:diagnose_command"


def test_outputs_name_their_command_and_revision(diagnosed):
    results = diagnosed / "results"
    for name in ("fit_errors.csv", "fit_errors.md", "error_vs_step.png", "error_vs_step.svg",
                 "error_vs_state.png", "error_vs_state.svg"):
        assert (results / name).stat().st_size > 0, name
    first = (results / "fit_errors.csv").read_text().splitlines()[0]
    assert first.startswith("# made by `") and "--preset micro" in first and "at revision" in first
    assert "at revision" in (results / "fit_errors.md").read_text().splitlines()[-1]


def test_every_structure_optimizer_and_step_has_a_row(diagnosed):
    rows = read_rows(diagnosed / "results" / "fit_errors.csv")
    structures = set(builtin_structures(4, 8))
    for step in ("2", "6"):
        for block in BLOCKS:
            mine = [r for r in rows if r["step"] == step and r["block"].startswith(block)]
            assert {r["label"] for r in mine if r["kind"] == "structure"} == structures
            assert {r["label"] for r in mine if r["kind"] == "optimizer"} == {"adam", "racs", "alice"}
            assert [r["kind"] for r in mine].count("noise") == 1
            assert all(r["samples"] == "12" for r in mine)
    structure_rows = [r for r in rows if r["kind"] == "structure"]
    assert all(0 <= float(r["rescaled_error"]) <= float(r["error"]) + 1e-12 for r in rows)
    assert all(abs(float(r["scale"]) - 1) < 1e-6 for r in structure_rows)  # optima are optimally scaled


def test_the_run_was_trained_to_the_last_step(diagnosed):
    summary = json.loads((diagnosed / "run" / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["preset"] == "micro"


def test_markdown_has_one_table_per_block(diagnosed):
    text = (diagnosed / "results" / "fit_errors.md").read_text()
    for block in BLOCKS:
        assert f"## `{block}[0:4, 0:8]`" in text
    assert "| step 2 | step 6 |" in text and "Step 6: best " in text


def test_a_checkpoint_is_diagnosed_without_training(diagnosed, tmp_path):
    argv = ["--checkpoint", str(diagnosed / "run" / "checkpoint.pt"), "--layers", BLOCKS[0], "--block", "2x3",
            "--samples", "4", "--replay", "racs", "--ranks", "1", "--results", str(tmp_path), "--threads", "1"]
    assert diagnose_command(argv) == 0
    rows = read_rows(tmp_path / "fit_errors.csv")
    assert {r["step"] for r in rows} == {"6"} and {r["block"] for r in rows} == {f"{BLOCKS[0]}[0:2, 0:3]"}


@pytest.mark.parametrize("argv, message", [
    (["--block", "4by8"], "expected ROWSxCOLS"),
    (["--offset", "1"], "expected ROW,COL"),
    (["--layers", "layers.9.attn.q_proj"], "no module 'layers.9.attn.q_proj'"),
    (["--layers", "layers.0.attn"], "not an nn.Linear"),
    (["--block", "64x8"], "outside the 32 x 32 weight"),
    (["--at", "99"], "between 1 and --steps"),
    (["--replay", "sinkgd"], "no Fisher reader"),
    (["--samples", "1"], "at least 2"),
    (["--checkpoint", "nowhere/checkpoint.pt"], "no checkpoint at"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, message):
    base = ["--preset", "micro", "--data", str(SAMPLE), "--cache", str(tmp_path / "cache"),
            "--out", str(tmp_path / "run"), "--steps", "4"]
    assert diagnose_command(base + argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # nothing was trained


def test_help_documents_every_flag(capsys):
    assert diagnose_command(["--help"]) == 0
    out = capsys.readouterr().out
    assert "--layers" in out and "--block" in out and "--samples" in out and "--replay" in out
    from experiments.diagnose import build_parser
    assert all(action.help for action in build_parser()._actions)


def fake_paper_runs(runs_dir, losses):
    """Finished runs of the quick protocol at paper settings with the given final losses."""
    from experiments.reproduce.plan import default_run
    from experiments.reproduce.protocol import get_protocol

    protocol = get_protocol("quick")
    for name, loss in losses.items():
        folder = runs_dir / default_run(name, protocol).id
        folder.mkdir(parents=True)
        (folder / "summary.json").write_text(json.dumps({"steps": protocol.steps, "final_eval_loss": loss}))
    return protocol


@pytest.mark.parametrize("order, verdict", [("same", "the same order"), ("reverse", "roughly the reverse order")])
def test_report_relates_fit_errors_to_final_losses(diagnosed, tmp_path, order, verdict):
    from paper_figs.common import Runs
    from paper_figs.fig_diagnostics import load, mean_error, write_report

    results = tmp_path / "results"
    results.mkdir()
    (results / "fit_errors.csv").write_text((diagnosed / "results" / "fit_errors.csv").read_text())
    fit = mean_error(load(results)[0], "optimizer")
    by_fit = sorted(fit, key=fit.get)
    ranked = by_fit if order == "same" else by_fit[::-1]
    protocol = fake_paper_runs(tmp_path / "runs", {name: 3.0 + i for i, name in enumerate(ranked)})
    report = write_report(results, Runs.load(protocol, tmp_path / "runs"), None).read_text()
    assert "Over the 3 optimizers with a finished run (still running: alice0, galore, fira)" in report
    assert f"gives {verdict} as ranking by final eval loss" in report
    assert ("rho = 1.00" if order == "same" else "rho = -1.00") in report
    for name in ranked:
        assert f"| {name} | `{name}-lr" in report
    assert "## What this shows and what it does not" in report and "**Causation.**" in report
    assert report.rstrip().endswith("</sub>")  # the provenance line


def test_report_waits_for_runs(diagnosed, tmp_path):
    from paper_figs.common import Runs
    from paper_figs.fig_diagnostics import write_report

    results = tmp_path / "results"
    results.mkdir()
    (results / "fit_errors.csv").write_text((diagnosed / "results" / "fit_errors.csv").read_text())
    protocol = fake_paper_runs(tmp_path / "runs", {"adam": 3.0})
    report = write_report(results, Runs.load(protocol, tmp_path / "runs"), None).read_text()
    assert "Only 1 of the optimizers replayed here have a finished run" in report
    assert "Best, averaged over the blocks: **" in report and "| adam | `adam-lr" in report


def test_report_says_how_two_runs_compare(diagnosed, tmp_path):
    from paper_figs.common import Runs
    from paper_figs.fig_diagnostics import load, mean_error, write_report

    results = tmp_path / "results"
    results.mkdir()
    (results / "fit_errors.csv").write_text((diagnosed / "results" / "fit_errors.csv").read_text())
    fit = mean_error(load(results)[0], "optimizer")
    worse_fit = max(("adam", "racs"), key=fit.get)
    protocol = fake_paper_runs(tmp_path / "runs", {worse_fit: 3.0, ({"adam", "racs"} - {worse_fit}).pop(): 4.0})
    report = write_report(results, Runs.load(protocol, tmp_path / "runs"), None).read_text()
    assert "Two optimizers have a finished run (still running: alice, alice0, galore, fira)" in report
    assert f"{worse_fit}'s F~ fits worse" in report and "ends lower" in report and "the opposite order" in report


def test_report_says_when_the_diagnosed_run_is_not_here_to_check(tmp_path):
    from types import SimpleNamespace

    from paper_figs.fig_diagnostics import trajectory_note

    runs = SimpleNamespace(role=lambda role: {"adam": SimpleNamespace(id="adam-lr0.001-s0")})
    (note,) = trajectory_note(tmp_path / "absent", runs)
    assert "not checked here" in note and "adam-lr0.001-s0" in note
    assert trajectory_note(None, runs) == []
