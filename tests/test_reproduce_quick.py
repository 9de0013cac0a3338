"""`fimkit reproduce --quick`: the whole pipeline, end to end, on the test tier."""

from __future__ import annotations

from fimkit.cli import main


def test_quick_reproduction_trains_draws_and_reports(tmp_path, capsys):
    out = tmp_path / "repro"
    assert main(["reproduce", "--quick", "--out", str(out), "--jobs", "1", "--cache", str(tmp_path / "cache")]) == 0
    figures = out / "quick"
    for name in ("fig1_loss.png", "fig2_perplexity.png", "fig3_throughput.png", "fig4_memory.png", "fig5_ablations.png",
                 "fig6_switch_similarity.png", "table2.md", "table3.md", "table5.md"):
        assert (figures / name).stat().st_size > 0, name
    report = (out / "REPORT.md").read_text()
    assert "pending" not in report.split("## Tuned comparison")[0]  # every claim decided once everything ran
    assert not list((out / "runs" / "quick").glob("*/checkpoint.pt"))  # finished runs keep only small files
    # a second call trains nothing: every run is cached
    assert main(["reproduce", "--quick", "--out", str(out), "--jobs", "1", "--cache", str(tmp_path / "cache")]) == 0
    assert "about 0 to train" in capsys.readouterr().err.split("reproduce quick:")[-1]
