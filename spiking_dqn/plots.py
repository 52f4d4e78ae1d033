"""Every figure of the package, written to PNG files with matplotlib's Agg backend.

* :func:`plot_rewards`, :func:`plot_spike_raster`: the figures of a
  :class:`~spiking_dqn.report.ComparisonReport` (``reward.png``, ``spike_raster.png``);
* :func:`plot_search`: reward over the thresholds of a threshold search.

matplotlib is imported on the first plot (it is not needed to train or deploy).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from spiking_dqn.report import ComparisonReport
    from spiking_dqn.search.results import ThresholdSearchResult


def _pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_rewards(report: ComparisonReport, path: str | os.PathLike) -> None:
    """Episode rewards of both policies side by side: box plot, episodes as points, mean ± std.

    :param report: the comparison
    :param path: PNG file to write
    """
    plt = _pyplot()
    chip_label = "chip" if report.backend == "spinnaker2" else "chip (emulator)"
    data = [np.asarray(report.float_rewards, float), np.asarray(report.chip_rewards, float)]
    labels = [f"float ({report.float_device})", chip_label]
    fig, ax = plt.subplots(figsize=(5.5, 4.0))
    ax.boxplot(data, positions=[1, 2], widths=0.5, showfliers=False)
    rng = np.random.default_rng(0)
    for x, values, color in zip((1, 2), data, ("tab:blue", "tab:orange")):
        ax.scatter(x + rng.uniform(-0.12, 0.12, values.size), values, s=12, alpha=0.6, color=color, zorder=3)
        ax.errorbar(x + 0.33, values.mean(), yerr=values.std(), fmt="o", color="black", capsize=4, zorder=4)
    ax.set_xticks([1, 2], labels)
    ax.set_ylabel("episode reward")
    ax.set_title(f"{report.env_id}: {report.n_episodes} episodes each (agreement {report.agreement:.1%})", fontsize=10)
    ax.set_xlabel("points: episodes; black: mean ± std", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_spike_raster(report: ComparisonReport, path: str | os.PathLike) -> None:
    """Spike raster of one inference: input, every hidden layer, and the output voltages over ticks.

    :param report: the comparison (a placeholder figure when it has no ``raster``)
    :param path: PNG file to write
    """
    plt = _pyplot()
    raster = report.raster
    if raster is None:
        fig, ax = plt.subplots(figsize=(5, 2))
        ax.text(0.5, 0.5, "no spike trains recorded", ha="center", va="center")
        ax.axis("off")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return
    trains = raster.spike_trains
    names = report.population_names
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
        out_ax.set_ylabel(f"output voltage\n(Q x {report.program.lambdas[-1]:.3g})", fontsize=8)
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
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_search(result: ThresholdSearchResult, path: str | os.PathLike) -> None:
    """Reward over the searched thresholds: stage 1 against the global multiplier, stage 2 per layer.

    :param result: the threshold search
    :param path: PNG file to write
    """
    plt = _pyplot()
    s1 = sorted((e for e in result.evaluations if e.stage == 1), key=lambda e: e.multipliers[0])
    s2 = [e for e in result.evaluations if e.stage == 2]
    n_layers = len(result.base_thresholds)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ax = axes[0]
    ax.errorbar(
        [e.multipliers[0] for e in s1],
        [e.mean_reward for e in s1],
        yerr=[e.std_reward for e in s1],
        marker="o",
        capsize=3,
    )
    ax.axvline(result.stage1_best.multipliers[0], color="tab:red", ls="--", lw=1, label="stage-1 best")
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks([e.multipliers[0] for e in s1], [f"{e.multipliers[0]:.2g}" for e in s1])
    ax.set_xlabel("global threshold multiplier (x float threshold x lambda)")
    ax.set_ylabel(f"mean reward ({result.n_episodes} episodes)")
    ax.set_title(f"{result.env_id}: stage 1")
    ax.legend(loc="best")
    ax = axes[1]
    if s2 and n_layers == 2:
        xs = sorted({e.multipliers[0] for e in s2})
        ys = sorted({e.multipliers[1] for e in s2})
        grid = np.full((len(ys), len(xs)), np.nan)
        for e in s2:
            grid[ys.index(e.multipliers[1]), xs.index(e.multipliers[0])] = e.mean_reward
        im = ax.imshow(grid, origin="lower", cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(xs)), [f"{x:.3g}" for x in xs])
        ax.set_yticks(range(len(ys)), [f"{y:.3g}" for y in ys])
        for i in range(len(ys)):
            for j in range(len(xs)):
                if np.isfinite(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.0f}", ha="center", va="center", color="w", fontsize=8)
        ax.set_xlabel("layer 1 multiplier")
        ax.set_ylabel("layer 2 multiplier")
        fig.colorbar(im, ax=ax, label="mean reward")
    elif s2:
        for k in range(n_layers):
            ax.scatter([e.multipliers[k] for e in s2], [e.mean_reward for e in s2], label=f"layer {k + 1}", s=18)
        ax.set_xscale("log")
        ax.set_xlabel("per-layer threshold multiplier")
        ax.set_ylabel("mean reward")
        ax.legend(loc="best")
    best = result.best
    ax.set_title("stage 2: best " + ", ".join(f"{m:.3g}" for m in best.multipliers) + f" -> {best.mean_reward:.4g}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
