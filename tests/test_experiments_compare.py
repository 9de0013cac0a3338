"""The comparison runner: same data order and budget per optimizer, a table and two plot files."""

import pytest

from experiments.compare import parse_spec, run_comparison, write_report
from experiments.demo import run_demo
from experiments.metrics import MetricsLog
from experiment_helpers import micro_config
from fimkit.cli import main as fimkit_main


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    base = micro_config(root, steps=4)
    summaries = run_comparison(base, ["adam", "adam:lr=3e-3"], [0, 1], root / "out")
    return root / "out", summaries, write_report(summaries, root / "out")


def test_spec_splits_config_fields_from_hyperparameters():
    assert parse_spec("Alice:lm_head=matrix,rank=32,lr=2e-3") == (
        "alice", {"optimizer": "alice", "lm_head": "matrix", "lr": 2e-3}, {"rank": 32})


def test_every_spec_and_seed_gets_its_own_run(comparison):
    out, summaries, _ = comparison
    assert sorted(s["out"] for s in summaries) == sorted(str(out / n) for n in
                                                         ("adam-seed0", "adam-seed1", "adam-lr3e-3-seed0", "adam-lr3e-3-seed1"))


def test_runs_of_one_seed_see_the_same_batches_and_budget(comparison):
    _, summaries, _ = comparison
    seed0 = [MetricsLog.read(f"{s['out']}/metrics.jsonl") for s in summaries if s["seed"] == 0]
    # Step 1's loss is measured before any update: equal iff weights and batch are equal.
    assert seed0[0][0]["train_loss"] == seed0[1][0]["train_loss"]
    assert [r["tokens"] for r in seed0[0]] == [r["tokens"] for r in seed0[1]]
    assert seed0[0][1]["train_loss"] != seed0[1][1]["train_loss"]  # the lrs differ from then on


def test_table_has_a_row_per_spec_with_mean_and_std_over_seeds(comparison):
    _, _, (table, _) = comparison
    text = table.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| adam")]
    assert len(rows) == 2 and all("±" in row for row in rows)
    assert "tokens/s" in text and "optimizer state (MiB)" in text


def test_plots_are_written_as_png_and_svg(comparison):
    _, _, (_, plots) = comparison
    assert [p.suffix for p in plots] == [".png", ".svg"]
    assert plots[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in plots[1].read_bytes()[:2000]


def test_demo_writes_table_and_plots_to_its_folder(tmp_path):
    table = run_demo(tmp_path / "demo", micro_config(tmp_path, steps=2), optimizers=("adam", "racs"))
    assert "| racs |" in table
    assert {"results.md", "loss.png", "loss.svg", "adam", "racs"} <= {p.name for p in (tmp_path / "demo").iterdir()}


def test_compare_command_is_reachable_through_the_fimkit_cli(tmp_path, capsys):
    cfg = micro_config(tmp_path)
    code = fimkit_main(["compare", "--preset", "micro", "--optimizers", "adam", "--steps", "2", "--data", *cfg.data,
                        "--cache", cfg.cache, "--out", str(tmp_path / "cmp"), "--threads", "1"])
    assert code == 0
    assert "| adam |" in capsys.readouterr().out
