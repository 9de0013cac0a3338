"""Figures, tables, claims and the report of `fimkit reproduce`, on a synthetic reproduction."""

from __future__ import annotations

import json

import pytest

from experiments.reproduce.probes import THROUGHPUT, memory_file
from paper_figs import (
    claims, fig1_loss_curves, fig3_throughput, fig4_memory, fig5_ablations, fig6_switch_similarity, table2, table5,
)
from paper_figs.analysis import Spread, speedup, tokens_to_reach
from paper_figs.common import Runs, read_csv
from paper_figs.report import write_report
from reproduce_fixture import PROTOCOL, synthetic_final, write_reproduction


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("reproduction")
    runs_dir = root / "runs" / PROTOCOL.name
    write_reproduction(runs_dir)
    loaded = Runs.load(PROTOCOL, runs_dir)
    probes = loaded.probes_dir
    for preset in PROTOCOL.memory_presets:
        for optimizer in PROTOCOL.memory_optimizers:
            for release in (False, True):
                path = memory_file(probes, preset, optimizer, release)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps({"preset": preset, "optimizer": optimizer, "gradient_release": release,
                                            "peak_bytes": (3 - release) * 2**20, "weights_bytes": 2**20,
                                            "optimizer_state_bytes": 2**19, "device": "cpu", "dtype": "fp32"}))
    (probes / THROUGHPUT).write_text(json.dumps({"tokens_per_s": {"adam": 100.0, "racs": 95.0, "alice": 90.0}}))
    return loaded


def test_tokens_to_reach_interpolates_between_evaluations():
    assert tokens_to_reach([(100, 5.0), (200, 4.0), (300, 3.0)], 3.5) == pytest.approx(250.0)
    assert tokens_to_reach([(100, 5.0), (200, 4.0)], 3.0) is None


def test_speedup_is_the_reference_tokens_over_the_candidate_tokens_at_the_reference_final_loss():
    adam = [(100, 5.0), (200, 4.0), (300, 3.0)]  # reaches its final 3.0 at 300 tokens
    alice = [(100, 4.0), (200, 2.0), (300, 1.5)]  # reaches 3.0 at 150 tokens
    assert speedup(adam, alice) == pytest.approx(2.0)
    assert speedup(adam, [(100, 5.0), (300, 3.5)]) is None


@pytest.mark.parametrize("module, csv_name", [
    (fig1_loss_curves, "fig1_fig2_curves.csv"), (fig5_ablations, "fig5_ablations.csv"),
    (fig6_switch_similarity, "fig6_switch_similarity.csv"), (fig3_throughput, "fig3_throughput.csv"),
    (fig4_memory, "fig4_memory.csv"),
])
def test_each_figure_writes_a_non_empty_image_and_its_csv(runs, tmp_path, module, csv_name):
    written = module.draw(runs, tmp_path)
    images = [p for p in written if p.suffix in (".png", ".svg")]
    assert images and all(p.stat().st_size > 1000 for p in images)
    assert read_csv(tmp_path / csv_name)


def test_curve_csv_holds_the_fixture_eval_losses(runs, tmp_path):
    fig1_loss_curves.draw(runs, tmp_path)
    rows = read_csv(tmp_path / "fig1_fig2_curves.csv")
    racs = [r for r in rows if r["panel"] == "paper" and r["label"] == "RACS"]
    assert float(racs[-1]["eval_loss"]) == pytest.approx(synthetic_final(runs.role("paper")["racs"]), rel=1e-5)


def test_table_csvs_hold_the_fixture_final_losses(runs, tmp_path):
    table5.draw(runs, tmp_path)
    for row in read_csv(tmp_path / "table5.csv"):
        assert float(row["final_eval_loss"]) == pytest.approx(synthetic_final(runs.role("table5")[row["components"]]), rel=1e-5)
    table2.draw(runs, tmp_path)
    tuned = {r["optimizer"]: r for r in read_csv(tmp_path / "table2.csv") if r["block"] == "tuned"}
    assert float(tuned["RACS"]["speedup"]) > 1.0 > 0  # RACS's curve is below the best Adam's everywhere


def test_throughput_and_memory_csvs_hold_the_measurements(runs, tmp_path):
    fig3_throughput.draw(runs, tmp_path)
    speed = {r["optimizer"]: r for r in read_csv(tmp_path / "fig3_throughput.csv")}
    assert float(speed["racs"]["relative_throughput"]) == pytest.approx(0.95)
    fig4_memory.draw(runs, tmp_path)
    memory = read_csv(tmp_path / "fig4_memory.csv")
    assert {float(r["peak_mib"]) for r in memory} == {3.0, 2.0}


def test_fig6_reads_the_logged_switch_similarities(runs):
    found = fig6_switch_similarity.mean_similarity(runs)
    assert found["tracking on (Alice)"] == pytest.approx(0.85) and found["tracking off (Alice-0)"] == pytest.approx(0.15)


FINALS = {"alice": 4.0, "alice0": 4.1, "racs": 4.2, "adam": 4.5, "fira": 4.55, "galore": 4.7}


def test_ordering_claim_holds_for_the_paper_order_and_fails_when_alice_is_worst():
    assert claims.ordering_claim(FINALS).verdict == "holds"
    assert claims.ordering_claim({**FINALS, "alice": 5.0}).verdict == "does not hold"


def test_table5_claim_fails_when_compensation_does_not_help():
    good = {"+compensation (Alice)": 4.0, "+tracking +switching": 4.2, "none": 4.3, "+tracking": 4.4}
    assert claims.table5_claim(good).verdict == "holds"
    assert claims.table5_claim({**good, "+compensation (Alice)": 4.5}).verdict == "does not hold"


def test_speedup_ema_fig6_and_memory_claims_fail_on_contrary_numbers():
    assert claims.speedup_claim(Spread.of([2.1, 2.3])).verdict == "holds"
    assert claims.speedup_claim(Spread.of([0.8, 0.9])).verdict == "does not hold"
    assert claims.ema_claim(4.0, 4.1).verdict == "holds" and claims.ema_claim(4.2, 4.1).verdict == "does not hold"
    assert claims.fig6_claim({"tracking on": 0.3, "tracking off": 0.6}).verdict == "does not hold"
    assert claims.memory_claim(0.005).verdict == "holds" and claims.memory_claim(0.08).verdict == "partly"
    assert claims.beats_adam_claim("Alice", Spread.of([4.6, 4.7]), Spread.of([4.5, 4.55])).verdict == "does not hold"


def test_throughput_claim_fails_when_a_candidate_is_much_slower_than_adam():
    assert claims.throughput_claim({"alice": 0.96, "racs": 0.99}).verdict == "holds"
    assert claims.throughput_claim({"alice": 0.96, "racs": 0.80}).verdict == "partly"
    assert claims.throughput_claim({"alice": 0.5, "racs": 0.5}).verdict == "does not hold"
    assert claims.throughput_claim({"racs": 1.0}).verdict == "pending"


def test_a_claim_without_its_runs_is_pending():
    assert claims.ordering_claim({"alice": 4.0}).verdict == "pending"


def test_report_lists_every_claim_with_a_verdict(runs, tmp_path):
    text = write_report(runs, tmp_path / PROTOCOL.name, tmp_path / "REPORT.md").read_text()
    assert text.count("| **holds** |") >= 4
    assert "130M ordering" in text and "Adam-group learning rate" in text and "revision" in text


def test_an_ema_difference_below_the_seed_spread_is_within_noise():
    assert claims.ema_claim(4.045, 4.048, noise=0.035).verdict == "within noise"
    assert claims.ema_claim(4.0, 4.1, noise=0.035).verdict == "holds"


def test_a_table5_ordering_with_steps_below_the_seed_spread_holds_only_in_part():
    finals = {"+compensation (Alice)": 4.2, "+tracking +switching": 4.465, "none": 4.471, "+tracking": 4.484}
    assert claims.table5_claim(finals, noise=0.035).verdict == "partly"
    assert claims.table5_claim(finals).verdict == "holds"
