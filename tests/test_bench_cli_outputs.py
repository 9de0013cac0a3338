"""``fimkit bench`` end to end on tiny shapes: one run writes the JSON, the Markdown and the plot."""

from __future__ import annotations

import json

from benchmarks.cli import bench_command, int_list, shape_list


def test_bench_options_parse_thread_lists_and_shapes():
    assert int_list("1,2") == (1, 2) and shape_list("64x48,48x64") == [(64, 48), (48, 64)]


def test_bench_refuses_a_bad_thread_list(capsys):
    assert bench_command(["--threads", "0"]) == 2 and "positive integers" in capsys.readouterr().err


def test_bench_writes_json_markdown_and_sweep_plot_for_every_thread_count(tmp_path, capsys):
    code = bench_command(["--optimizers", "adam,racs", "--shapes", "16x12,12x16", "--repeats", "1", "--warmup", "0",
                          "--threads", "1,2", "--no-packages", "--sweep-sizes", "8,16", "--sweep-repeats", "1",
                          "--e2e", "quick", "--out-dir", str(tmp_path)])
    assert code == 0
    document = json.loads((tmp_path / "cpu_bench.json").read_text())
    assert [run["threads"] for run in document["runs"]] == [1, 2]
    run = document["runs"][0]
    assert {r["label"] for r in run["rows"]} >= {"torch Adam (fused)", "adam", "racs"}
    assert all(r["floor_ms"] > 0 for r in run["rows"])
    assert run["sweep"]["sizes"] == [8, 16] and set(run["e2e"]["vs_adam"]) == {"adam", "racs", "alice"}
    assert {v["target"] for v in run["targets"]} == {"floor", "adam", "racs", "alice", "packages", "e2e"}
    text = (tmp_path / "cpu_bench.md").read_text()
    assert document["command"] in text and document["revision"] in text and "## 2 threads" in text
    assert (tmp_path / "cpu_size_sweep.png").exists() and (tmp_path / "cpu_size_sweep.svg").exists()


def test_bench_reports_its_progress_on_stderr(capsys):
    assert bench_command(["--optimizers", "adam", "--shapes", "16x12", "--repeats", "2", "--warmup", "0",
                          "--threads", "1", "--no-packages"]) == 0
    err = capsys.readouterr().err
    assert "1 thread(s): step times of" in err and "round 1/2" in err and "round 2/2" in err
