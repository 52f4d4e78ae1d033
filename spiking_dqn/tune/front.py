"""The Pareto front of a tuning study (chip reward up, synaptic events down) and the trial it recommends.

Recommendation rule (:func:`recommend`): among the trials of the front, the one with the
fewest synaptic events per inference whose chip reward is within noise of the best reward:
at least ``best - 2 * std / sqrt(episodes)``, where ``best`` is the highest mean held-out chip
reward and ``std`` the spread of that trial's episode rewards (two standard errors of its
mean). With no spread (every episode at the cap, as CartPole's 200) only the best reward
qualifies.

:func:`write_front` writes ``pareto_front.md`` (a table), ``pareto_front.json`` (every
complete trial, the front and the recommendation) and ``pareto_front.png`` (chip reward
against synaptic events, the front highlighted and the recommended trial marked), each
atomically (:mod:`spiking_dqn.files`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from spiking_dqn.files import atomic_write, atomic_write_text
from spiking_dqn.plots import pyplot

#: The rule of :func:`recommend`, in words (written with the front).
RULE = ("fewest synaptic events among the front's trials whose chip reward is at least the best reward minus two "
        "standard errors of the best trial's mean (std of its episode rewards / sqrt(episodes))")
#: Parameters shown in the table.
SHOWN = ("ticks", "hidden_layers", "hidden_width", "weight_bits", "threshold", "encoding", "activity_penalty")


@dataclass
class Point:
    """One complete trial: its two objective values and what produced them."""

    number: int
    reward: float
    reward_std: float
    events: float
    params: dict[str, Any]
    float_reward: float | None = None
    energy_j: float | None = None
    folder: str | None = None
    on_front: bool = False


def points(study: optuna.Study) -> list[Point]:
    """The study's complete trials (surplus ones never complete), the front marked."""
    out = [
        Point(t.number, float(t.values[0]), float(t.user_attrs.get("chip_reward_std", 0.0)), float(t.values[1]),
              dict(t.params), t.user_attrs.get("float_reward"), t.user_attrs.get("energy_j"), t.user_attrs.get("folder"))
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.values is not None and all(math.isfinite(v) for v in t.values)
    ]
    for p in out:
        p.on_front = not any(_dominates(q, p) for q in out)
    return out


def recommend(front: Sequence[Point], episodes: int) -> Point | None:
    """The recommended trial of the front (see the module docstring), or None for an empty front."""
    if not front:
        return None
    best = max(front, key=lambda p: (p.reward, -p.events))
    floor = best.reward - 2 * best.reward_std / math.sqrt(max(episodes, 1))
    return min((p for p in front if p.reward >= floor), key=lambda p: (p.events, -p.reward))


def write_front(out: Path, study: optuna.Study, env_id: str, episodes: int, n_trials: int) -> dict[str, Any]:
    """Write ``pareto_front.md``, ``.json`` and ``.png`` in ``out``; return what the JSON holds.

    :param out: the output folder
    :param study: the study
    :param env_id: Gymnasium id
    :param episodes: held-out episodes of each chip evaluation
    :param n_trials: the study's trial count
    """
    out.mkdir(parents=True, exist_ok=True)
    everything = points(study)
    front = sorted((p for p in everything if p.on_front), key=lambda p: p.events)
    chosen = recommend(front, episodes)
    states = [t.state for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("surplus")]
    data = {
        "env_id": env_id,
        "study": study.study_name,
        "objectives": {"chip_reward": "maximize", "synaptic_events_per_inference": "minimize"},
        "trials": n_trials,
        "complete": states.count(TrialState.COMPLETE),
        "pruned": states.count(TrialState.PRUNED),
        "eval_episodes": episodes,
        "rule": RULE,
        "recommended": None if chosen is None else chosen.number,
        "front": [asdict(p) for p in front],
        "all": [asdict(p) for p in sorted(everything, key=lambda p: p.number)],
    }
    atomic_write_text(out / "pareto_front.json", json.dumps(data, indent=2, default=float) + "\n")
    atomic_write_text(out / "pareto_front.md", front_table(data, front, chosen))
    plot_front(out / "pareto_front.png", everything, chosen, env_id)
    return data


def front_table(data: dict[str, Any], front: Sequence[Point], chosen: Point | None) -> str:
    """``pareto_front.md``: the front as a Markdown table, the recommended trial marked."""
    lines = [
        f"# Pareto front: {data['env_id']} (study {data['study']})", "",
        f"{data['complete']} complete and {data['pruned']} pruned of {data['trials']} trials; chip reward: mean of "
        f"{data['eval_episodes']} held-out episodes on the emulator.", "",
        f"Recommended (**bold**, ★): {RULE}.", "",
        "| trial | chip reward | synaptic events / inference | float reward | " + " | ".join(SHOWN) + " |",
        "|---" * (4 + len(SHOWN)) + "|",
    ]
    for p in front:
        mark = p is chosen
        cells = [f"{'★ ' if mark else ''}{p.number}", f"{p.reward:.1f} ± {p.reward_std:.1f}", f"{p.events:.0f}",
                 "" if p.float_reward is None else f"{p.float_reward:.1f}"]
        cells += [_cell(p.params.get(name)) for name in SHOWN]
        if mark:
            cells = [f"**{c}**" if c else c for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    if not front:
        lines.append("| (no complete trial) |" + " |" * (3 + len(SHOWN)))
    return "\n".join(lines) + "\n"


def plot_front(path: Path, everything: Sequence[Point], chosen: Point | None, env_id: str) -> None:
    """``pareto_front.png``: every complete trial, the front as a line, the recommended trial as a star."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    others = [p for p in everything if not p.on_front]
    front = sorted((p for p in everything if p.on_front), key=lambda p: p.events)
    ax.scatter([p.events for p in others], [p.reward for p in others], s=18, color="0.65", label="trials")
    ax.plot([p.events for p in front], [p.reward for p in front], "o-", color="tab:blue", drawstyle="steps-post",
            label="Pareto front")
    if chosen is not None:
        ax.scatter([chosen.events], [chosen.reward], marker="*", s=260, color="tab:red", zorder=5,
                   label=f"recommended (trial {chosen.number})")
    events = [p.events for p in everything if p.events > 0]
    log = bool(events) and max(events) > 30 * min(events)  # trials of a study span decades of activity
    if log:
        ax.set_xscale("log")
    ax.set_xlabel("synaptic events per inference (fewer is better" + (", log scale)" if log else ")"))
    ax.set_ylabel("chip reward (held-out mean)")
    ax.set_title(f"{env_id}: chip reward against synaptic events", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def _dominates(a: Point, b: Point) -> bool:
    """``a`` is at least as good on both objectives and better on one."""
    return a.reward >= b.reward and a.events <= b.events and (a.reward > b.reward or a.events < b.events)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return "" if value is None else str(value)
