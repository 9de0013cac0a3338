"""``benchmarks.sweep`` and ``benchmarks.report``: the sweep, its plot and the Markdown/JSON writers
on tiny sizes."""

from __future__ import annotations

import json
import re

from benchmarks.report import git_revision, markdown, write
from benchmarks.step_time import fimkit_candidate, torch_adam
from benchmarks.sweep import format_sweep, plot_sweep, sweep


def test_sweep_times_every_candidate_at_every_size_and_stops_slow_ones():
    candidates = [torch_adam("foreach"), torch_adam("fused"), fimkit_candidate("racs")]
    result = sweep(candidates, sizes=(8, 16), repeats=1, warmup=0, max_step_ms=1e9)
    assert result["sizes"] == [8, 16] and set(result["step_ms"]) == {c.label for c in candidates}
    assert all(ms > 0 for steps in result["step_ms"].values() for ms in steps)
    assert result["floor_ms"]["torch Adam (fused)"][0] > 0
    stopped = sweep(candidates, sizes=(8, 16), repeats=1, warmup=0, max_step_ms=0.0)
    assert stopped["step_ms"]["racs"][1] is None and "racs" in stopped["skipped"]
    table = format_sweep(stopped)
    assert "| racs |" in table and "8x8" in table and "larger sizes not run" in table


def test_sweep_plot_is_written_as_png_and_svg(tmp_path):
    result = {"sizes": [8, 16], "step_ms": {"a": [1.0, 4.0], "b": [2.0, None]}}
    paths = plot_sweep({1: result, 2: result}, tmp_path / "sweep")
    assert [p.suffix for p in paths] == [".png", ".svg"] and all(p.stat().st_size > 0 for p in paths)


def _document():
    row = {"label": "racs", "algorithm": "racs", "package": "fimkit", "step_ms": 2.0, "vs_foreach": 1.0,
           "vs_fused": 2.0, "floor_ms": 1.0, "floor_bound": "bytes", "step_over_floor": 2.0, "state_mib": 0.1,
           "peak_rss_mib": None, "notes": [], "differs": ""}
    run = {"threads": 1, "notes": ["heavyball not installed"], "load": "0.5 0.5 0.5",
           "rates": {"bandwidth_GBps": 10.0, "matmul_GFLOPs": 50.0}, "probes": [], "rows": [row],
           "targets": [{"target": "floor", "text": "within 1.5x", "subject": "racs", "value": 2.0,
                        "threshold": 1.5, "at_most": True, "verdict": "missed"}]}
    return {"command": "fimkit bench --tiny", "revision": "abc1234", "date": "2026-12-02", "device": "cpu",
            "machine": {"cpu": "test"}, "shapes": [(4, 4)], "shapes_label": "one 4x4", "runs": [run]}


def test_markdown_names_the_command_revision_machine_and_marks_missed_targets():
    text = markdown(_document())
    assert "fimkit bench --tiny" in text and "abc1234" in text and "| cpu | test |" in text
    assert "**missed**" in text and "heavyball not installed" in text and "floor: 0/1 met" in text


def test_write_puts_json_and_markdown_side_by_side(tmp_path):
    paths = write(_document(), tmp_path, "cpu_bench")
    assert [p.name for p in paths] == ["cpu_bench.json", "cpu_bench.md"]
    assert json.loads(paths[0].read_text())["revision"] == "abc1234"


def test_git_revision_is_a_short_hash_marked_dirty_when_the_tree_has_changes():
    assert re.fullmatch(r"[0-9a-f]{4,}(-dirty)?|unknown", git_revision())


def test_a_package_row_follows_the_first_fimkit_row_of_its_algorithm_only():
    from benchmarks.report import _ordered

    rows = [{"label": "racs", "package": "fimkit", "algorithm": "racs"},
            {"label": "racs (fused_step)", "package": "fimkit", "algorithm": "racs"},
            {"label": "pytorch-optimizer racs", "package": "pytorch-optimizer", "algorithm": "racs"}]
    assert [r["label"] for r in _ordered(rows)] == ["racs", "pytorch-optimizer racs", "racs (fused_step)"]
