"""The comparison report's figures, and matplotlib on its Agg backend for every figure of the package.

* :func:`pyplot`: ``matplotlib.pyplot`` on the non-interactive Agg backend, imported on the
  first plot (matplotlib is not needed to train or deploy);
* :class:`RasterData`, :func:`plot_spike_raster`: the per-tick activity of one inference and
  its spike raster (``spike_raster.png``);
* :func:`plot_rewards`: episode rewards side by side (``reward.png``).

The figures draw plain data, so that the report that writes them
(:meth:`spiking_dqn.report.ComparisonReport.write`) imports them and not the reverse; the
threshold search's figure lives beside its result (:func:`spiking_dqn.search.results.plot_search`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from spiking_dqn.files import atomic_write


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@dataclass
class RasterData:
    """Per-tick activity of one inference, for the spike raster.

    :param observation: the observation ``(d,)``
    :param spike_trains: one ``(ticks, n)`` bool array per population (input, hidden..., output)
    :param voltage_trace: output voltages after every tick ``(ticks, n_actions)``, chip units
    :param source: the backend that produced it
    """

    observation: np.ndarray
    spike_trains: list[np.ndarray]
    voltage_trace: np.ndarray | None
    source: str = "emulator"


def plot_rewards(rewards: Mapping[str, Sequence[float]], title: str, path: str | os.PathLike) -> None:
    """Episode rewards of two policies side by side: box plot, episodes as points, mean ± std.

    :param rewards: the episode rewards of each policy, by label (float first, then chip)
    :param title: the figure's title
    :param path: PNG file to write
    """
    plt = pyplot()
    data = [np.asarray(values, float) for values in rewards.values()]
    fig, ax = plt.subplots(figsize=(5.5, 4.0))
    ax.boxplot(data, positions=[1, 2], widths=0.5, showfliers=False)
    rng = np.random.default_rng(0)
    for x, values, color in zip((1, 2), data, ("tab:blue", "tab:orange")):
        ax.scatter(x + rng.uniform(-0.12, 0.12, values.size), values, s=12, alpha=0.6, color=color, zorder=3)
        ax.errorbar(x + 0.33, values.mean(), yerr=values.std(), fmt="o", color="black", capsize=4, zorder=4)
    ax.set_xticks([1, 2], list(rewards))
    ax.set_ylabel("episode reward")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("points: episodes; black: mean ± std", fontsize=8)
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def plot_spike_raster(
    raster: RasterData | None, names: Sequence[str], output_lambda: float, path: str | os.PathLike
) -> None:
    """Spike raster of one inference: input, every hidden layer, and the output voltages over ticks.

    :param raster: the inference's activity (a placeholder figure when None)
    :param names: the population names (input, hidden..., output)
    :param output_lambda: the output layer's lambda (chip voltage = Q x lambda), for the axis label
    :param path: PNG file to write
    """
    plt = pyplot()
    if raster is None:
        fig, ax = plt.subplots(figsize=(5, 2))
        ax.text(0.5, 0.5, "no spike trains recorded", ha="center", va="center")
        ax.axis("off")
        with atomic_write(path) as tmp:
            fig.savefig(tmp, dpi=110)
        plt.close(fig)
        return
    trains = raster.spike_trains
    panels = len(trains)  # input and hidden rasters, then the output voltage (or spikes)
    heights = [max(1.0, min(3.0, t.shape[1] / 24)) for t in trains[:-1]] + [1.6]
    fig, axes = plt.subplots(
        panels, 1, figsize=(7, 1.2 + 1.1 * sum(heights)), sharex=True, gridspec_kw={"height_ratios": heights}
    )
    ticks = trains[0].shape[0]
    for ax, train, name in zip(axes[:-1], trains[:-1], names[:-1]):
        t_idx, n_idx = np.nonzero(train)
        ax.scatter(t_idx, n_idx, marker="|", s=40, color="black", linewidths=1.0)
        ax.set_ylim(-0.5, train.shape[1] - 0.5)
        ax.set_ylabel(f"{name}\n({train.shape[1]})", fontsize=8)
        ax.text(1.0, 1.0, f"{int(train.sum())} spikes", transform=ax.transAxes, ha="right", va="bottom", fontsize=7)
    out_ax = axes[-1]
    if raster.voltage_trace is not None:
        for a in range(raster.voltage_trace.shape[1]):
            out_ax.plot(np.arange(ticks), raster.voltage_trace[:, a], marker="o", ms=3, label=f"action {a}")
        out_ax.set_ylabel(f"output voltage\n(Q x {output_lambda:.3g})", fontsize=8)
        out_ax.legend(fontsize=7, loc="upper left")
    else:
        t_idx, n_idx = np.nonzero(trains[-1])
        out_ax.scatter(t_idx, n_idx, marker="|", s=40, color="black")
        out_ax.set_ylabel("output\nspikes", fontsize=8)
    out_ax.set_xlabel("tick")
    out_ax.set_xlim(-0.5, ticks - 0.5)
    obs = ", ".join(f"{x:.3g}" for x in np.asarray(raster.observation).ravel())
    fig.suptitle(f"one inference on the {raster.source} (observation [{obs}])", fontsize=9)
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
