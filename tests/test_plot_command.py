"""`fimkit plot`: any run folder, finished or still being written, drawn without code."""

from __future__ import annotations

import json

from fimkit.cli import main


def _run(folder, steps, torn=False):
    folder.mkdir(parents=True)
    lines = [json.dumps({"step": s, "tokens": 100 * s, "train_loss": 5.0 - 0.1 * s, "lr": 0.01, "tokens_per_s": 50.0,
                         **({"eval_loss": 5.0 - 0.1 * s} if s % 2 == 0 else {})}) for s in range(1, steps + 1)]
    (folder / "metrics.jsonl").write_text("\n".join(lines) + ("\n{\"step\": 9, \"tok" if torn else "\n"))


def test_plot_draws_several_runs_including_one_still_being_written(tmp_path, capsys):
    _run(tmp_path / "a", 6)
    _run(tmp_path / "b", 4, torn=True)
    assert main(["plot", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "plots")]) == 0
    assert (tmp_path / "plots" / "plot.png").stat().st_size > 1000 and (tmp_path / "plots" / "plot.svg").exists()
    out = capsys.readouterr().out
    assert "step 6" in out and "step 4" in out and "eval loss 4.6000" in out


def test_plot_of_a_folder_that_is_not_a_run_is_a_one_line_error(tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err
