"""The energy study's verdicts, tables and plots, from its rows (``benchmarks/energy.py`` measures them).

The rows are dictionaries as ``energy.evaluate`` writes them (``env_id``, ``variant``, ``family``,
``threshold_scale``, ``normalised_reward``, ``synaptic_events``, ...; seed replicas with ``seed``
and ``of``). ``tests/test_energy_study.py`` checks the verdicts on made-up rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

#: The shipped agents' training seeds (the study's variants use the same).
SEEDS = {"CartPole-v0": 5, "Acrobot-v1": 0}
#: Threshold scales of the robustness target (worst normalised reward over these).
ROBUST_SCALES = (1.0, 1.2, 1.4, 1.6, 1.8, 2.0)
#: Configurations retrained per seed with ``--seeds``: the fixed threshold and the two best ASPEN ranges.
REPLICATED = (("fixed", ()), ("aspen U(1,1.5)", ("--threshold-noise", "1.0,1.5")),
              ("aspen U(1,2)", ("--threshold-noise", "1.0,2.0")))


#: Energy targets of the study: at most this fraction of the shipped agent's synaptic events
#: at scale 1, at this normalised reward or more.
TARGETS = {"CartPole-v0": (0.5, 0.98), "Acrobot-v1": (2 / 3, 0.95)}


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per task: the ASPEN-vs-fixed robustness over scales 1.0-2.0 and the cheapest configuration meeting the target."""
    out: dict[str, Any] = {}
    for env_id in dict.fromkeys(r["env_id"] for r in rows):
        task = [r for r in rows if r["env_id"] == env_id]
        base = next((r for r in task if r["variant"] == "fixed" and r["threshold_scale"] == 1.0), None)
        worst = {}
        for name in dict.fromkeys(r["variant"] for r in task if r["family"] in ("fixed", "aspen")):
            pts = [r["normalised_reward"] for r in task if r["variant"] == name and r["threshold_scale"] in ROBUST_SCALES]
            if pts:
                worst[name] = min(pts)
        fraction, reward = TARGETS[env_id]
        best = None
        if base is not None:
            ok = [r for r in task if r["synaptic_events"] <= fraction * base["synaptic_events"]
                  and r["normalised_reward"] >= reward and r["family"] != "seeds"]
            best = min(ok, key=lambda r: r["synaptic_events"], default=None)
        out[env_id] = {
            "shipped_synaptic_events": None if base is None else base["synaptic_events"],
            "target": {"events_fraction": fraction, "normalised_reward": reward},
            "worst_normalised_reward_scales_1_to_2": worst,
            "aspen_minus_fixed_worst": {k: v - worst["fixed"] for k, v in worst.items() if k != "fixed"}
            if "fixed" in worst else {},
            "cheapest_meeting_target": best,
        }
        if any(r["family"] == "seeds" for r in task):
            out[env_id]["seeds"] = seed_summary(task)  # with the shipped seed's rows
    return out


def seed_summary(task: list[dict[str, Any]]) -> dict[str, Any]:
    """Per seed: each replicated configuration's worst normalised reward over ``ROBUST_SCALES``,
    ASPEN minus the fixed threshold on the same seed, and the means over the seeds.

    The shipped seed's are the study's own ``fixed`` and ASPEN rows of those names.
    """
    names = [n for n, _ in REPLICATED]
    worst: dict[int, dict[str, float]] = {}
    for r in task:
        own = r["family"] in ("fixed", "aspen") and r["variant"] in names
        if (r["family"] == "seeds" or own) and r["threshold_scale"] in ROBUST_SCALES:
            seed, of = r.get("seed", SEEDS[r["env_id"]]), r.get("of", r["variant"])
            per = worst.setdefault(seed, {})
            per[of] = min(per.get(of, np.inf), r["normalised_reward"])
    seeds = sorted(worst)
    out: dict[str, Any] = {"seeds": seeds, "worst": {str(s): worst[s] for s in seeds},
                           "mean_worst": {}, "aspen_minus_fixed": {}}
    for name in names:
        values = [worst[s][name] for s in seeds if name in worst[s]]
        if values:
            out["mean_worst"][name] = float(np.mean(values))
        if name != "fixed":
            gaps = [worst[s][name] - worst[s]["fixed"] for s in seeds if name in worst[s] and "fixed" in worst[s]]
            if gaps:
                out["aspen_minus_fixed"][name] = {
                    "per_seed": gaps, "mean": float(np.mean(gaps)), "mean_95_interval": bootstrap_interval(gaps),
                    "seeds_20_points_above": sum(g >= 0.2 for g in gaps)}
    return out


def bootstrap_interval(values: list[float], level: float = 0.95, resamples: int = 10_000) -> list[float]:
    """Percentile bootstrap interval of the mean of ``values`` (seeded: the tables are reproducible)."""
    draws = np.random.default_rng(0).choice(np.asarray(values, dtype=float), size=(resamples, len(values)))
    means = draws.mean(axis=1)
    return [float(np.quantile(means, (1 - level) / 2)), float(np.quantile(means, (1 + level) / 2))]


def points(fraction: float) -> str:
    """A difference of normalised rewards in signed percentage points (``+0``, never ``-0``)."""
    return f"{round(fraction * 100) + 0:+d}"


def summary_markdown(summary: dict[str, Any]) -> str:
    lines = []
    for env_id, s in summary.items():
        frac, reward = s["target"]["events_fraction"], s["target"]["normalised_reward"]
        best = s["cheapest_meeting_target"]
        lines.append(f"**{env_id}**: worst normalised reward over threshold scales 1.0-2.0: " + ", ".join(
            f"{k} {v:.0%}" for k, v in s["worst_normalised_reward_scales_1_to_2"].items()) + ".")
        if best is None:
            lines.append(f"No configuration reaches {reward:.0%} with at most {frac:.0%} of the shipped agent's "
                         f"synaptic events ({s['shipped_synaptic_events'] or 0:,.0f}).")
        else:
            lines.append(
                f"Cheapest configuration at {reward:.0%} or more with at most {frac:.0%} of the shipped agent's "
                f"{s['shipped_synaptic_events']:,.0f} synaptic events: {best['variant']} at threshold scale "
                f"{best['threshold_scale']:g}, {best['synaptic_events']:,.0f} events "
                f"({best['synaptic_events'] / s['shipped_synaptic_events']:.0%}), {best['normalised_reward']:.0%}.")
        if "seeds" in s:
            seeds = s["seeds"]
            lines.append(
                f"Per training seed (seeds {', '.join(map(str, seeds['seeds']))}; {SEEDS[env_id]} is the shipped "
                "agent's, the others retrained with `--seeds`), worst normalised reward over threshold "
                "scales 1.0-2.0, mean over the seeds: " + ", ".join(
                    f"{k} {v:.0%}" for k, v in seeds["mean_worst"].items()) + "; ASPEN minus fixed on the same seed: "
                + "; ".join(f"{k} {points(g['mean'])} points on average (bootstrap 95% interval "
                            + " to ".join(points(x) for x in g["mean_95_interval"]) + "; per seed "
                            + ", ".join(points(x) for x in g["per_seed"])
                            + f"), at least +20 on {g['seeds_20_points_above']} of {len(g['per_seed'])} seeds"
                            for k, g in seeds["aspen_minus_fixed"].items()) + ".")
        lines.append("")
    return "\n".join(lines)


def condensed_markdown(rows: list[dict[str, Any]]) -> str:
    """One row per configuration at its nominal thresholds (scale 1): the condensed table of ``docs/energy.md``."""
    lines = [
        "| task | configuration | ticks | reward (normalised) | synaptic events | hidden spikes "
        "| energy: time + activity part | latency |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["threshold_scale"] != 1.0 or r["family"] == "seeds":
            continue
        lines.append(
            f"| {r['env_id']} | {r['variant']} | {r['ticks']} | {r['mean_reward']:.1f} ({r['normalised_reward']:.0%}) "
            f"| {r['synaptic_events']:,.0f} | {r['hidden_spikes']:,.1f} | {r['energy_time_j'] * 1e3:.2f} mJ + "
            f"{r['energy_activity_j'] * 1e6:.1f} µJ | {r['latency_s'] * 1e3:.0f} ms |"
        )
    return "\n".join(lines) + "\n"


def markdown(rows: list[dict[str, Any]], references: dict[str, float]) -> str:
    lines = []
    for env_id in dict.fromkeys(r["env_id"] for r in rows):
        lines += [
            f"**{env_id}** (reference: the shipped agent's float reward {references[env_id]:.1f} on the same episodes)",
            "",
            "| configuration | threshold scale | ticks | reward | normalised | synaptic events | hidden spikes "
            "| energy: time part | energy: activity part | latency |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            if r["env_id"] != env_id:
                continue
            lines.append(
                f"| {r['variant']} | {r['threshold_scale']:g} | {r['ticks']} | {r['mean_reward']:.1f} "
                f"| {r['normalised_reward']:.0%} | {r['synaptic_events']:,.0f} | {r['hidden_spikes']:,.1f} "
                f"| {r['energy_time_j'] * 1e3:.2f} mJ | {r['energy_activity_j'] * 1e6:.1f} µJ "
                f"| {r['latency_s'] * 1e3:.0f} ms |"
            )
        lines.append("")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], out: Path) -> None:
    from spiking_dqn.plots import pyplot

    plt = pyplot()

    replicas = [r for r in rows if r["family"] in ("seeds", "fixed", "aspen")]
    rows = [r for r in rows if r["family"] != "seeds"]
    tasks = list(dict.fromkeys(r["env_id"] for r in rows))
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.2), squeeze=False)
    for ax, env_id in zip(axes[0], tasks):
        for name in dict.fromkeys(r["variant"] for r in rows if r["env_id"] == env_id and len(
                [q for q in rows if q["variant"] == r["variant"] and q["env_id"] == env_id]) > 1):
            pts = [r for r in rows if r["env_id"] == env_id and r["variant"] == name]
            ax.plot([r["threshold_scale"] for r in pts], [r["normalised_reward"] for r in pts], "o-", label=name,
                    lw=2.5 if name == "fixed" else 1.2, color="black" if name == "fixed" else None)
        ax.set(title=env_id, xlabel="runtime threshold scale", ylabel="normalised reward (float agent = 1)")
        ax.axvspan(1.0, 2.0, color="0.92", zorder=0)
        if ax.get_legend_handles_labels()[0]:  # a run of single-scale configurations has no sweep to label
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "energy_scale.png", dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.2), squeeze=False)
    markers = {"fixed": "o", "aspen": "s", "penalty": "^", "adaptive": "v", "hybrid": "D", "ticks": "P"}
    for ax, env_id in zip(axes[0], tasks):
        for family, marker in markers.items():
            pts = [r for r in rows if r["env_id"] == env_id and r["family"] == family]
            if pts:
                ax.scatter([r["synaptic_events"] for r in pts], [r["normalised_reward"] for r in pts],
                           marker=marker, label=family, alpha=0.8)
        ax.set(title=env_id, xlabel="synaptic events per inference", ylabel="normalised reward (float agent = 1)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "energy_front.png", dpi=120)
    plt.close(fig)
    if any(r["family"] == "seeds" for r in replicas):
        plot_seeds(replicas, out)


def plot_seeds(replicas: list[dict[str, Any]], out: Path) -> None:
    """``energy_seeds.png``: per task and seed, each replicated configuration's worst normalised reward over scales 1-2."""
    from spiking_dqn.plots import pyplot

    plt = pyplot()

    tasks = list(dict.fromkeys(r["env_id"] for r in replicas if r["family"] == "seeds"))
    most = max(len({r.get("seed") for r in replicas if r["env_id"] == env_id}) for env_id in tasks)
    fig, axes = plt.subplots(1, len(tasks), figsize=(max(6.0, 0.6 * most + 1.5) * len(tasks), 5.0), squeeze=False)
    names = [n for n, _ in REPLICATED]
    for ax, env_id in zip(axes[0], tasks):
        summary = seed_summary([r for r in replicas if r["env_id"] == env_id])
        seeds = summary["seeds"]
        width = 0.8 / len(names)
        for i, name in enumerate(names):
            ax.bar(np.arange(len(seeds)) + (i - (len(names) - 1) / 2) * width,
                   [summary["worst"][str(s)].get(name, np.nan) for s in seeds], width, label=name,
                   color="black" if name == "fixed" else None)
        ax.set_xticks(np.arange(len(seeds)), [f"{s}" + ("\n(shipped)" if s == SEEDS[env_id] else "") for s in seeds])
        gaps = "\n".join(f"{k} - fixed: {points(g['mean'])} points (95% interval "
                         + " to ".join(points(x) for x in g["mean_95_interval"]) + ")"
                         for k, g in summary["aspen_minus_fixed"].items())
        ax.set(title=f"{env_id}, mean over {len(seeds)} seeds:\n{gaps}", xlabel="training seed",
               ylabel="worst normalised reward over scales 1.0-2.0", ylim=(0, 1.05))
        ax.title.set_fontsize(9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "energy_seeds.png", dpi=120)
    plt.close(fig)
