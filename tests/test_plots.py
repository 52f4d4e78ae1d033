"""The package's figures (``spiking_dqn.plots``): every branch writes a PNG on the Agg backend."""

from __future__ import annotations

import dataclasses
import warnings

import matplotlib
import pytest
import torch as th
from stable_baselines3 import DQN

from spiking_dqn import SpikingDQNPolicy
from spiking_dqn.compare import compare
from spiking_dqn.plots import plot_rewards, plot_search, plot_spike_raster
from spiking_dqn.report import ComparisonReport
from spiking_dqn.search import results

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
    no_voltages = dataclasses.replace(report, raster=dataclasses.replace(report.raster, voltage_trace=None))
    cases = {
        "reward.png": (plot_rewards, report),
        "raster.png": (plot_spike_raster, report),
        "raster_output_spikes.png": (plot_spike_raster, no_voltages),
        "raster_none.png": (plot_spike_raster, dataclasses.replace(report, raster=None)),
    }
    for name, (plot, data) in cases.items():
        plot(data, tmp_path / name)
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC, name
    assert matplotlib.get_backend().lower() == "agg"


def test_search_saves_its_plot_from_the_plots_module():
    assert results.plot_search is plot_search  # one place for the package's figures
