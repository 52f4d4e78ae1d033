"""The robustness study's normalisation, target verdicts, tables and plot, from its rows (``benchmarks/robustness.py``).

A row is one trained agent: a task (``env_id``), a training seed and a weight width, with
``float_reward`` (the float agent as trained on the held-out episodes), ``worst`` (the zero of
the normalised scale), ``random_reward`` and, under ``fits``, one entry per fine-tuning
variant with its chip program's ``chip_reward`` on the same episodes and its wall time.
``tests/test_robustness_benchmark.py`` checks the verdicts on made-up rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from envs import rewards



@dataclass(frozen=True)
class Target:
    """A target of issue 25 on the normalised chip reward of one task at one weight width.

    :param seeds: training seeds the target is stated on
    :param levels: ``(normalised reward, seeds that must reach it)`` pairs, e.g. ``((0.98, 9), (0.95, 10))``
    :param learned_only: count only seeds whose float agent beat the random policy (the rest need nothing)
    """

    seeds: int
    levels: tuple[tuple[float, int], ...]
    learned_only: bool = False

    def describe(self) -> str:
        """The target in words."""
        of = "learned seeds" if self.learned_only else "seeds"
        return "; ".join(f">= {level:.0%} on {need} of {self.seeds} {of}" if need < self.seeds
                         else f">= {level:.0%} on every one of {self.seeds} {of}" for level, need in self.levels)


#: The issue's targets by ``(task, weight bits)``; wall time: at most ``WALL_TIME_FACTOR`` times today's.
TARGETS: dict[tuple[str, int], Target] = {
    ("CartPole-v0", 8): Target(10, ((0.98, 9), (0.95, 10))),
    ("Acrobot-v1", 8): Target(10, ((0.98, 9), (0.95, 10))),
    ("LunarLander-v3", 8): Target(5, ((0.95, 5),), learned_only=True),
    ("MountainCar-v0", 8): Target(5, ((0.95, 5),), learned_only=True),
    ("CartPole-v0", 4): Target(10, ((0.95, 8),)),
}
#: Training plus fine-tuning may take at most this many times today's (training plus the recipe's TD QAT).
WALL_TIME_FACTOR = 1.5
#: The variant that is today's path (``spiking-dqn train`` with its QAT, then ``deploy``): the wall-time reference.
TODAY = "td-qat"


def worst_reward(env_id: str, random_reward: float) -> float:
    """The zero of the normalised scale of ``env_id`` (:func:`envs.rewards.worst_reward`, else the random policy's reward)."""
    return rewards.worst_reward(env_id, random_reward)


def normalised(reward: float, float_reward: float, worst: float) -> float | None:
    """``(reward - worst) / (float_reward - worst)``; None when the float agent is no better than ``worst``."""
    if not float_reward > worst:
        return None
    return (reward - worst) / (float_reward - worst)


def verdict(rows: list[dict[str, Any]], variant: str, target: Target) -> dict[str, Any]:
    """Whether ``variant`` meets ``target`` on ``rows`` (one task, one weight width).

    ``met``/``not met`` once ``target.seeds`` seeds are measured, or earlier when the misses
    already exceed what the target allows; else ``open``.
    """
    measured = [r for r in rows if variant in r["fits"]]
    counted = [r for r in measured if not target.learned_only or r["float_reward"] > r["random_reward"]]
    values = [r["fits"][variant]["normalised"] for r in counted]
    values = [-np.inf if v is None else v for v in values]
    levels, status = [], "met"
    for level, need in target.levels:
        reached = sum(v >= level for v in values)
        allowed_misses = target.seeds - need
        levels.append({"level": level, "need": need, "reached": reached, "of": len(values)})
        if len(values) - reached > allowed_misses:
            status = "not met"
        elif len(measured) < target.seeds and status == "met":
            status = "open"
    return {"status": status, "seeds_measured": len(measured), "seeds_counted": len(counted), "levels": levels,
            "target": target.describe()}


def wall_times(rows: list[dict[str, Any]], variant: str) -> dict[str, Any] | None:
    """Mean training and fit wall time of ``variant`` per agent, and the largest ratio to today's path on a seed."""
    both = [r for r in rows if variant in r["fits"] and TODAY in r["fits"]]
    if not both:
        return None
    ratios = [(r["train_wall_time_s"] + r["fits"][variant]["fit_wall_time_s"])
              / (r["train_wall_time_s"] + r["fits"][TODAY]["fit_wall_time_s"]) for r in both]
    return {"train_s": float(np.mean([r["train_wall_time_s"] for r in both])),
            "fit_s": float(np.mean([r["fits"][variant]["fit_wall_time_s"] for r in both])),
            "today_fit_s": float(np.mean([r["fits"][TODAY]["fit_wall_time_s"] for r in both])),
            "max_ratio": float(max(ratios)), "met": max(ratios) <= WALL_TIME_FACTOR}


def groups(rows: list[dict[str, Any]]) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """Rows by ``(task, weight bits)``, each by seed, in the order the tasks first appear."""
    out: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault((r["env_id"], r["weight_bits"]), []).append(r)
    return {k: sorted(v, key=lambda r: r["seed"]) for k, v in out.items()}


def summarise(rows: list[dict[str, Any]], variants: list[str]) -> dict[str, Any]:
    """Per ``"<task>, <bits>-bit"``: each variant's worst and mean normalised reward, target verdict and wall times."""
    out: dict[str, Any] = {}
    for (env_id, bits), task in groups(rows).items():
        target = TARGETS.get((env_id, bits))
        per: dict[str, Any] = {}
        for name in variants:
            values = [r["fits"][name]["normalised"] for r in task if name in r["fits"]]
            values = [v for v in values if v is not None]
            if not values:
                continue
            per[name] = {"min_normalised": float(min(values)), "mean_normalised": float(np.mean(values)),
                         "verdict": None if target is None else verdict(task, name, target),
                         "wall_time": wall_times(task, name)}
        out[f"{env_id}, {bits}-bit"] = {"seeds": [r["seed"] for r in task], "variants": per,
                                        "reward_target": reward_target(task, variants)}
    return out


def reward_target(task: list[dict[str, Any]], variants: list[str]) -> dict[str, Any] | None:
    """How many of a task's seeds reach its recipe's reward (:data:`envs.rewards.TARGET_REWARD`): float as
    trained, and per variant ``[reached, seeds measured]`` of its chip programs (None: no target reward)."""
    target = rewards.TARGET_REWARD.get(task[0]["env_id"])
    if target is None:
        return None
    chip = {name: [sum(r["fits"][name]["chip_reward"] >= target for r in measured), len(measured)]
            for name in variants if (measured := [r for r in task if name in r["fits"]])}
    return {"reward": target, "seeds": len(task), "float_as_trained": sum(r["float_reward"] >= target for r in task),
            "chip": chip}


def commands(rows: list[dict[str, Any]]) -> list[str]:
    """The commands that measure ``rows`` again, one per task and weight width (the seeds as ranges)."""
    out = []
    for (env_id, bits), task in groups(rows).items():
        seeds, ranges = [r["seed"] for r in task], []
        for s in seeds:
            if ranges and s == ranges[-1][1] + 1:
                ranges[-1][1] = s
            else:
                ranges.append([s, s])
        text = " ".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)
        out.append(f"python benchmarks/robustness.py --env {env_id} --seeds {text}"
                   + ("" if bits == 8 else f" --weight-bits {bits}"))
    return out


def _cell(fit: dict[str, Any] | None) -> str:
    if fit is None:
        return "-"
    share = "n/a" if fit["normalised"] is None else f"{fit['normalised']:.1%}"
    return f"{fit['chip_reward']:.1f} ({share}), {fit['fit_wall_time_s']:.0f} s"


def markdown(rows: list[dict[str, Any]], variants: list[str], summary: dict[str, Any]) -> str:
    """Per task and weight width: one row per seed (float as trained, each variant), then each variant's verdict."""
    lines = []
    for (env_id, bits), task in groups(rows).items():
        names = [n for n in variants if any(n in r["fits"] for r in task)]
        first = task[0]
        worst = "the random policy's reward" if rewards.WORST_REWARD.get(env_id) is None else "the task's minimum"
        lines += [
            f"**{env_id}, {bits}-bit weights**: {first['episodes']} held-out episodes (env seeds {first['eval_seed']}"
            f" + i, the same for every agent and program); normalised reward (R - R_worst) / (R_float - R_worst), "
            f"R_worst = {first['worst']:g} ({worst}; a uniformly random policy gets {first['random_reward']:.1f}). "
            "Each chip cell: mean reward on the emulator (normalised), fine-tuning wall time.",
            "",
            "| seed | float as trained | training | " + " | ".join(names) + " |",
            "|---|---|---|" + "---|" * len(names),
        ]
        for r in task:
            lines.append(f"| {r['seed']} | {r['float_reward']:.1f} | {r['train_wall_time_s']:.0f} s | "
                         + " | ".join(_cell(r["fits"].get(n)) for n in names) + " |")
        reached = summary[f"{env_id}, {bits}-bit"].get("reward_target")
        if reached is not None:
            chip = "; ".join(f"`{n}` {k} of {of}" for n, (k, of) in reached["chip"].items())
            lines += ["", f"The recipe's target reward {reached['reward']:g} (`envs.rewards.TARGET_REWARD`) is reached "
                      f"by the float agent as trained on {reached['float_as_trained']} of {reached['seeds']} seeds; "
                      f"on the chip, per fine-tuning: {chip}."]
        lines += ["", "| variant | worst seed | mean | target | verdict | wall time per agent: training + fit "
                  f"(largest ratio to {TODAY}, at most {WALL_TIME_FACTOR:g}x) |", "|---|---|---|---|---|---|"]
        for name, s in summary[f"{env_id}, {bits}-bit"]["variants"].items():
            v, w = s["verdict"], s["wall_time"]
            reached = "" if v is None else " (" + ", ".join(
                f">= {x['level']:.0%}: {x['reached']} of {x['of']}" for x in v["levels"]) + ")"
            time = "-" if w is None else (f"{w['train_s']:.0f} s + {w['fit_s']:.0f} s ({w['max_ratio']:.2f}x: "
                                          f"{'met' if w['met'] else 'not met'})")
            lines.append(f"| {name} | {s['min_normalised']:.1%} | {s['mean_normalised']:.1%} | "
                         f"{'-' if v is None else v['target']} | {'-' if v is None else v['status']}{reached} | {time} |")
        lines.append("")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], variants: list[str], path: Path) -> None:
    """``robustness.png``: per task and weight width, each variant's normalised chip reward by training seed."""
    from spiking_dqn.plots import pyplot

    plt = pyplot()
    panels = groups(rows)
    fig, axes = plt.subplots(1, len(panels), figsize=(7.5 * len(panels), 4.2), squeeze=False)
    for ax, ((env_id, bits), task) in zip(axes[0], panels.items()):
        names = [n for n in variants if any(n in r["fits"] for r in task)]
        seeds = [r["seed"] for r in task]
        low = 0.9
        for i, name in enumerate(names):
            offset = (i - (len(names) - 1) / 2) * 0.08
            pts = [(s + offset, r["fits"][name]["normalised"]) for s, r in zip(seeds, task)
                   if name in r["fits"] and r["fits"][name]["normalised"] is not None]
            if pts:
                ax.plot(*zip(*pts), "o", label=name, alpha=0.85)
                low = min(low, min(y for _, y in pts))
        for level, style in ((0.98, "--"), (0.95, ":")):
            ax.axhline(level, color="black", ls=style, lw=1, label=f"{level:.0%} target")
        ax.set(title=f"{env_id}, {bits}-bit weights", xlabel="training seed", xticks=seeds,
               ylabel="normalised chip reward (float as trained = 1)", ylim=(max(low - 0.05, -0.05), 1.08))
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the points, never over them
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
