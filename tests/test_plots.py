"""The package's figures (the comparison's in ``spiking_dqn.plots``, the search's beside its result):
every branch writes a PNG on the Agg backend."""

from __future__ import annotations

import dataclasses
import warnings

import matplotlib
import pytest
import torch as th
from stable_baselines3 import DQN

from spiking_dqn import SpikingDQNPolicy
from spiking_dqn.compare import compare
from spiking_dqn.plots import plot_rewards, plot_spike_raster
from spiking_dqn.report import ComparisonReport

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def report() -> ComparisonReport:
    """The comparison of an untrained spiking DQN over one CartPole episode."""
    th.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = DQN(SpikingDQNPolicy, "CartPole-v0", policy_kwargs={"net_arch": [8], "ticks": 4}, seed=0, device="cpu")
        return compare(model, "CartPole-v0", n_episodes=1, device="cpu", progress=False)


def test_comparison_plots_write_pngs_on_agg(report, tmp_path):
    no_voltages = dataclasses.replace(report.raster, voltage_trace=None)
    names, output_lambda = report.population_names, report.program.lambdas[-1]
    plot_rewards({"float": report.float_rewards, "chip": report.chip_rewards}, "rewards", tmp_path / "reward.png")
    for name, raster in {"raster": report.raster, "raster_output_spikes": no_voltages, "raster_none": None}.items():
        plot_spike_raster(raster, names, output_lambda, tmp_path / f"{name}.png")
    for name in ("reward", "raster", "raster_output_spikes", "raster_none"):
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == PNG_MAGIC, name
    assert matplotlib.get_backend().lower() == "agg"


def test_report_writes_its_figures(report, tmp_path):
    paths = report.write(tmp_path)
    for name in ("reward.png", "spike_raster.png"):
        assert paths[name].read_bytes()[:8] == PNG_MAGIC, name


@pytest.mark.parametrize("n_layers", [1, 2])
def test_search_figure_writes_a_png(n_layers, tmp_path):
    from spiking_dqn.search.results import Evaluation, ThresholdSearchResult, plot_search

    def evaluation(stage, trial, multipliers, reward):
        return Evaluation(stage, trial, multipliers, [8.0 * m for m in multipliers], reward, 1.0, 2, 20, 5.0, 3.0, 0.1)

    s1 = [evaluation(1, k, [m] * n_layers, 10.0 * k) for k, m in enumerate((0.5, 1.0, 2.0))]
    s2 = [evaluation(2, k, [m, 2.0][:n_layers], 25.0 + k) for k, m in enumerate((1.5, 2.0, 3.0))]
    result = ThresholdSearchResult(
        program=None, best=s2[-1], stage1_best=s1[-1], evaluations=s1 + s2, env_id="CartPole-v1", n_episodes=2,
        seed=0, base_thresholds=[8.0] * n_layers, study_names=["a", "b"], storage=None, wall_time_s=1.0,
    )  # fmt: skip
    plot_search(result, tmp_path / "search.png")
    assert (tmp_path / "search.png").read_bytes()[:8] == PNG_MAGIC
