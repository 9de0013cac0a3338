"""``benchmarks.targets``: issue 14's targets marked met, missed or n/a on a fixture run."""

from __future__ import annotations

from benchmarks.targets import TARGETS, evaluate


def _row(label, step_ms, algorithm, package="fimkit", over_floor=None):
    return {"label": label, "step_ms": step_ms, "algorithm": algorithm, "package": package,
            "step_over_floor": over_floor}


RUN = {"rows": [
    _row("torch Adam (foreach)", 40.0, "adam", "torch", 3.0),
    _row("torch Adam (fused)", 10.0, "adam", "torch", 1.0),
    _row("adam", 11.0, "adam", over_floor=1.1),
    _row("racs", 20.0, "racs", over_floor=4.0),
    _row("alice (K=200, amortised)", 60.0, "alice", over_floor=1.2),
    _row("pytorch-optimizer racs", 10.0, "racs", "pytorch-optimizer"),
    _row("pytorch-optimizer alice", 120.0, "alice", "pytorch-optimizer"),
], "e2e": {"vs_adam": {"adam": 1.0, "racs": 0.98, "alice": 0.9}}}


def _verdicts(run=RUN):
    return {(v["target"], v["subject"]): v["verdict"] for v in evaluate(run)}


def test_targets_are_met_or_missed_against_their_thresholds():
    v = _verdicts()
    assert v[("adam", "adam")] == "met"                   # 11 / 10 <= 1.2
    assert v[("racs", "racs")] == "missed"                # 20 / 10 > 1.3
    assert v[("alice", "alice (K=200, amortised)")] == "met"
    assert v[("floor", "adam")] == "met" and v[("floor", "racs")] == "missed"
    assert v[("packages", "alice vs pytorch-optimizer")] == "met"     # 120 / 60 >= 1.5
    assert v[("packages", "racs vs pytorch-optimizer")] == "missed"   # 10 / 20
    assert v[("e2e", "racs")] == "met" and v[("e2e", "alice")] == "missed"


def test_torch_rows_are_not_judged_against_the_floor_target():
    assert not any(v["subject"].startswith("torch") for v in evaluate(RUN) if v["target"] == "floor")


def test_a_target_whose_subject_was_not_measured_is_not_applicable():
    run = {"rows": [r for r in RUN["rows"] if r["algorithm"] != "racs" or r["package"] != "fimkit"]}
    v = _verdicts(run)
    assert v[("racs", "racs")] == "n/a" and v[("e2e", "alice")] == "n/a"
    assert v[("packages", "racs vs pytorch-optimizer")] == "n/a"


def test_every_target_states_its_threshold_in_its_text():
    for target in TARGETS:
        assert f"{target.threshold:g}" in target.text, target.key


def test_a_package_target_is_marked_unreachable_where_the_package_is_under_the_ratio_from_its_floor():
    run = {"rows": RUN["rows"] + [_row("galore", 100.0, "galore", over_floor=1.05),
                                  _row("galore-torch galore", 90.0, "galore", "galore-torch", over_floor=1.2),
                                  _row("slow-package galore", 300.0, "galore", "slow-package", over_floor=3.0)]}
    verdicts = {v["subject"]: v for v in evaluate(run) if v["target"] == "packages"}
    assert verdicts["galore vs galore-torch"]["verdict"] == "missed"
    assert "1.20x the floor" in verdicts["galore vs galore-torch"]["bound"]
    assert verdicts["galore vs slow-package"]["verdict"] == "met" and "bound" not in verdicts["galore vs slow-package"]
    assert "bound" not in verdicts["racs vs pytorch-optimizer"]   # no floor known: nothing claimed


def test_a_serial_row_is_not_a_subject_of_the_floor_target():
    from benchmarks.targets import _over_floor

    run = {"rows": [{"label": "racs", "package": "fimkit", "step_over_floor": 9.0},
                    {"label": "racs (serial)", "package": "fimkit", "step_over_floor": 12.0}]}
    assert _over_floor(run) == [("racs", 9.0)]
