"""The energy study's bookkeeping (``benchmarks/energy.py``, ``energy_tables.py``): the verdicts it writes into
``docs/energy.md``.

The study's figures come from hours of training; what it concludes from them (worst reward
over the robustness scales, ASPEN minus fixed per seed, the cheapest configuration meeting
the target, the order of the tables) is checked here on rows made up for the purpose.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from _benchmarks import benchmark_module


@pytest.fixture(scope="module")
def study():
    with benchmark_module("energy", "energy_study") as module:
        yield module


@pytest.fixture(scope="module")
def tables(study):
    """``benchmarks/energy_tables.py``, as the study imports it."""
    return sys.modules["energy_tables"]


def row(variant, family, scale, reward, events, env_id="CartPole-v0", **extra):
    return {"env_id": env_id, "variant": variant, "family": family, "threshold_scale": scale,
            "normalised_reward": reward, "synaptic_events": events, **extra}


def test_worst_reward_is_taken_over_the_robust_scales_only(tables):
    rows = [row("fixed", "fixed", s, r, 1000) for s, r in ((0.6, 0.0), (1.0, 1.0), (1.4, 0.5), (2.0, 0.9), (2.4, 0.0))]
    rows += [row("aspen U(1,2)", "aspen", s, r, 2000) for s, r in ((0.6, 0.1), (1.0, 1.0), (1.6, 0.8), (2.4, 0.0))]
    summary = tables.summarise(rows)["CartPole-v0"]
    assert summary["worst_normalised_reward_scales_1_to_2"] == {"fixed": 0.5, "aspen U(1,2)": 0.8}
    assert summary["aspen_minus_fixed_worst"] == {"aspen U(1,2)": pytest.approx(0.3)}


def test_cheapest_configuration_meets_both_parts_of_the_target(tables):
    rows = [
        row("fixed", "fixed", 1.0, 1.0, 1000),
        row("fixed", "fixed", 2.0, 0.97, 300),            # cheap but below 98%
        row("penalty 0.0001", "penalty", 1.0, 0.99, 450),  # meets both
        row("ticks 8", "ticks", 1.0, 1.0, 400),            # meets both, cheaper: chosen
        row("ticks 12", "ticks", 1.0, 1.0, 600),           # more than half the events
        row("fixed (seed 1)", "seeds", 1.0, 1.0, 100, seed=1, of="fixed"),  # a replica is not a candidate
    ]
    best = tables.summarise(rows)["CartPole-v0"]["cheapest_meeting_target"]
    assert best["variant"] == "ticks 8"
    rows = [row("fixed", "fixed", 1.0, 1.0, 1000), row("ticks 6", "ticks", 1.0, 0.5, 100)]
    assert tables.summarise(rows)["CartPole-v0"]["cheapest_meeting_target"] is None


def test_seed_summary_counts_the_shipped_seeds_rows_as_its_seed(tables):
    shipped = tables.SEEDS["CartPole-v0"]
    rows = [row("fixed", "fixed", 1.0, 1.0, 1), row("fixed", "fixed", 1.6, 0.4, 1),
            row("aspen U(1,2)", "aspen", 1.0, 1.0, 1), row("aspen U(1,2)", "aspen", 2.0, 0.7, 1),
            row("aspen U(1,2)", "aspen", 2.4, 0.0, 1)]  # outside the robustness scales
    for name, worst in (("fixed", 0.9), ("aspen U(1,2)", 0.6)):
        rows += [row(f"{name} (seed 0)", "seeds", s, r, 1, seed=0, of=name) for s, r in ((1.0, 1.0), (1.8, worst))]
    summary = tables.seed_summary(rows)
    assert summary["seeds"] == [0, shipped]
    gaps = summary["aspen_minus_fixed"]["aspen U(1,2)"]
    assert gaps["per_seed"] == [pytest.approx(-0.3), pytest.approx(0.3)]
    assert gaps["mean"] == pytest.approx(0.0) and gaps["seeds_20_points_above"] == 1
    assert summary["mean_worst"]["fixed"] == pytest.approx(0.65)
    low, high = gaps["mean_95_interval"]
    assert -0.3 - 1e-9 <= low < 0.0 < high <= 0.3 + 1e-9  # the mean of two seeds this far apart is not settled


def test_bootstrap_interval_brackets_the_mean_and_narrows_with_more_seeds(tables):
    rng = np.random.default_rng(1)
    few, many = rng.normal(0.2, 0.3, 4), rng.normal(0.2, 0.3, 64)
    for values in (few, many):
        low, high = tables.bootstrap_interval(list(values))
        assert low < values.mean() < high
    assert np.ptp(tables.bootstrap_interval(list(many))) < np.ptp(tables.bootstrap_interval(list(few)))
    assert tables.bootstrap_interval([0.1, 0.1, 0.1]) == [pytest.approx(0.1), pytest.approx(0.1)]


def test_tables_read_in_study_order_whatever_order_the_runs_came_in(study, tmp_path):
    old = [row("ticks 8", "ticks", 1.0, 1.0, 1, env_id="Acrobot-v1"), row("fixed", "fixed", 1.4, 1.0, 1),
           row("ticks 6", "ticks", 1.0, 1.0, 1)]
    (tmp_path / "energy.json").write_text(json.dumps({"rows": old, "references_float_reward": {"Acrobot-v1": -80.0}}))
    new = [row("fixed", "fixed", 1.0, 0.5, 1), row("aspen U(1,3)", "aspen", 1.0, 1.0, 1, env_id="Acrobot-v1"),
           row("fixed (seed 0)", "seeds", 1.0, 1.0, 1, seed=0, of="fixed"), row("hybrid 0.5", "hybrid", 1.0, 1.0, 1)]
    merged, references = study.merge_with_previous(tmp_path / "energy.json", new, {"CartPole-v0": 200.0})
    ordered = study.in_study_order(merged)  # fixed, evaluated anew, replaces all its old rows
    assert [(r["env_id"][:4], r["variant"], r["threshold_scale"]) for r in ordered] == [
        ("Cart", "fixed", 1.0), ("Cart", "hybrid 0.5", 1.0), ("Cart", "ticks 6", 1.0),
        ("Cart", "fixed (seed 0)", 1.0), ("Acro", "aspen U(1,3)", 1.0), ("Acro", "ticks 8", 1.0)]
    assert references == {"Acrobot-v1": -80.0, "CartPole-v0": 200.0}


def test_seed_replicas_leave_out_the_shipped_seed(tables, study):
    shipped = tables.SEEDS["Acrobot-v1"]
    replicas = [v for v in study.variants("Acrobot-v1", [shipped, shipped + 1]) if v.family == "seeds"]
    assert {v.seed for v in replicas} == {shipped + 1}
    assert [v.of for v in replicas] == [name for name, _ in tables.REPLICATED]


def test_a_failed_training_is_reported_and_the_other_configurations_still_evaluated(study, tmp_path, monkeypatch):
    def train(env_id, variant, cache, allow):
        if variant.name == "ticks 6":
            raise study.subprocess.CalledProcessError(1, ["python", "-m", "agents.cartpole"])
        return tmp_path / "model.zip"

    def evaluate(env_id, variant, model_path, episodes, reference):
        return [row(variant.name, variant.family, 1.0, 1.0, 100.0, ticks=8, mean_reward=200.0, hidden_spikes=1.0,
                    energy_time_j=1e-3, energy_activity_j=1e-6, latency_s=8e-3, model=str(model_path))]

    (tmp_path / "model.zip").write_bytes(b"")
    monkeypatch.setattr(study, "train", train)
    monkeypatch.setattr(study, "evaluate", evaluate)
    assert study.main(["--tasks", "CartPole-v0", "--episodes", "1", "--only", "ticks 6", "ticks 8", "--jobs", "2",
                       "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out")]) == 0
    data = json.loads((tmp_path / "out" / "energy.json").read_text())
    assert [r["variant"] for r in data["rows"]] == ["ticks 8"]
    assert len(data["skipped"]) == 1 and data["skipped"][0].startswith("CartPole-v0: ticks 6 (training failed")
    assert "ticks 8" in (tmp_path / "out" / "energy.md").read_text()


def test_update_docs_writes_the_page_between_its_markers_only(study, tmp_path, monkeypatch):
    pages = sys.modules["docs_pages"]
    monkeypatch.setattr(pages, "DOCS", tmp_path)
    (tmp_path / "energy.md").write_text("# Energy\n\n<!-- energy-table:begin -->\nold\n<!-- energy-table:end -->\nAfter.\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "energy_front.png").write_bytes(b"")
    monkeypatch.setattr(study, "plot", lambda rows, out: None)
    assert study.main(["--tasks", "CartPole-v0", "--episodes", "1", "--only", "--update-docs",
                       "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "energy.md").read_text()
    assert "old" not in text and text.startswith("# Energy\n") and text.endswith("<!-- energy-table:end -->\nAfter.\n")
    assert "| task | configuration |" in text and "energy_front.png)" in text and "energy_scale.png" not in text
    (tmp_path / "other.md").write_text("# no markers\n")
    with pytest.raises(ValueError, match="markers"):
        pages.update_page("other.md", "energy-table", "body")
