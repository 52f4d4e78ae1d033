"""What a threshold search found, and its files.

* :class:`Evaluation`: one evaluated point (multipliers, thresholds, reward, costs), rebuilt
  from its Optuna trial;
* :func:`best_evaluation`: the highest mean reward, then the fewest synaptic events;
* :class:`ThresholdSearchResult`: the outcome of
  :func:`~spiking_dqn.search.grid.threshold_search`, as CSV rows, plain data (JSON), and
  :meth:`~ThresholdSearchResult.save`, which writes ``<prefix>.csv``, ``<prefix>.json``,
  ``<prefix>.png`` (:func:`plot_search`) and ``best_program.npz``;
* :func:`plot_search`: reward over the searched thresholds.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from spiking_dqn.files import atomic_write, atomic_write_text
from spiking_dqn.hardware import ChipProgram
from spiking_dqn.plots import pyplot


@dataclass
class Evaluation:
    """One evaluated point of the search.

    :param stage: 1 or 2
    :param trial: Optuna trial number in its stage's study
    :param multipliers: threshold multiplier of each hidden layer
    :param thresholds: resulting threshold of each hidden layer (chip units; the mean
        over the layer when it is not uniform)
    :param mean_reward: mean reward over the episodes (the objective)
    :param std_reward: standard deviation of the episode rewards
    :param episodes: episodes played
    :param inferences: backend inferences (observations run)
    :param synaptic_events_per_inference: mean synaptic events per inference
    :param hidden_spikes_per_inference: mean hidden-layer spikes per inference
    :param wall_time_s: wall time of the evaluation
    :param worker: ``host:pid`` of the process that evaluated it
    """

    stage: int
    trial: int
    multipliers: list[float]
    thresholds: list[float]
    mean_reward: float
    std_reward: float
    episodes: int
    inferences: int
    synaptic_events_per_inference: float
    hidden_spikes_per_inference: float
    wall_time_s: float
    worker: str = ""

    def sort_key(self) -> tuple[float, float]:
        """Higher reward first, then fewer synaptic events."""
        return (-self.mean_reward, self.synaptic_events_per_inference)

    @classmethod
    def from_trial(cls, stage: int, trial: optuna.trial.FrozenTrial) -> Evaluation:
        """Rebuild an evaluation from its finished Optuna trial."""
        a = trial.user_attrs
        return cls(
            stage=stage,
            trial=trial.number,
            multipliers=[float(m) for m in a["multipliers"]],
            thresholds=[float(t) for t in a["thresholds"]],
            mean_reward=float(trial.value),
            std_reward=float(a.get("std_reward", 0.0)),
            episodes=int(a.get("episodes", 0)),
            inferences=int(a.get("inferences", 0)),
            synaptic_events_per_inference=float(a.get("synaptic_events_per_inference", 0.0)),
            hidden_spikes_per_inference=float(a.get("hidden_spikes_per_inference", 0.0)),
            wall_time_s=float(a.get("wall_time_s", 0.0)),
            worker=str(a.get("worker", "")),
        )


def best_evaluation(evaluations: Sequence[Evaluation]) -> Evaluation:
    """The highest mean reward; among equal rewards, the fewest synaptic events per inference."""
    if not evaluations:
        raise ValueError("no evaluations to choose from")
    return min(evaluations, key=lambda e: e.sort_key())


@dataclass
class ThresholdSearchResult:
    """Outcome of :func:`~spiking_dqn.search.grid.threshold_search`.

    :param program: the base program with the best thresholds
    :param best: the best evaluation (over both stages)
    :param stage1_best: the best stage-1 evaluation (the centre of stage 2)
    :param evaluations: every evaluation of both stages, in stage and trial order
    :param env_id: environment
    :param n_episodes: episodes per evaluation
    :param seed: seed of the first episode
    :param base_thresholds: hidden thresholds the multipliers apply to (layer means)
    :param study_names: the two studies
    :param storage: storage URL with the password hidden (``None``: in memory)
    :param wall_time_s: wall time of this call (a resumed search counts only its own part)
    :param evaluated_here: evaluations this process made (the rest came from the study)
    :param files: the paths :meth:`save` wrote, by kind (empty until it is called)
    """

    program: ChipProgram
    best: Evaluation
    stage1_best: Evaluation
    evaluations: list[Evaluation]
    env_id: str
    n_episodes: int
    seed: int
    base_thresholds: list[float]
    study_names: list[str]
    storage: str | None
    wall_time_s: float
    evaluated_here: int = 0
    files: dict[str, str] = field(default_factory=dict)

    @property
    def backend_episodes(self) -> int:
        """Backend episodes spent by the whole search (all workers)."""
        return sum(e.episodes for e in self.evaluations)

    @property
    def backend_inferences(self) -> int:
        """Backend inferences spent by the whole search (all workers)."""
        return sum(e.inferences for e in self.evaluations)

    @property
    def evaluation_wall_time_s(self) -> float:
        """Sum of the evaluations' wall times (all workers)."""
        return sum(e.wall_time_s for e in self.evaluations)

    @property
    def best_thresholds(self) -> list[float]:
        """Best threshold of each hidden layer (chip units)."""
        return list(self.best.thresholds)

    def rows(self) -> list[dict[str, Any]]:
        """One flat dict per evaluation (CSV rows)."""
        out = []
        for e in self.evaluations:
            row: dict[str, Any] = {"stage": e.stage, "trial": e.trial}
            row.update({f"multiplier_{k}": m for k, m in enumerate(e.multipliers)})
            row.update({f"threshold_{k}": t for k, t in enumerate(e.thresholds)})
            row.update(
                mean_reward=e.mean_reward,
                std_reward=e.std_reward,
                episodes=e.episodes,
                inferences=e.inferences,
                synaptic_events_per_inference=e.synaptic_events_per_inference,
                hidden_spikes_per_inference=e.hidden_spikes_per_inference,
                wall_time_s=e.wall_time_s,
                worker=e.worker,
                best=e is self.best,
            )
            out.append(row)
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON)."""
        return {
            "env_id": self.env_id,
            "n_episodes": self.n_episodes,
            "seed": self.seed,
            "base_thresholds": self.base_thresholds,
            "best": asdict(self.best),
            "stage1_best": asdict(self.stage1_best),
            "backend_episodes": self.backend_episodes,
            "backend_inferences": self.backend_inferences,
            "evaluation_wall_time_s": self.evaluation_wall_time_s,
            "wall_time_s": self.wall_time_s,
            "evaluated_here": self.evaluated_here,
            "study_names": self.study_names,
            "storage": self.storage,
            "evaluations": [asdict(e) for e in self.evaluations],
        }

    def save(self, directory: str | os.PathLike, prefix: str = "threshold_search") -> dict[str, str]:
        """Write ``<prefix>.csv``, ``<prefix>.json``, ``<prefix>.png`` and ``best_program.npz``.

        :return: the paths written, by kind
        """
        import pandas as pd

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        files = {
            "csv": directory / f"{prefix}.csv",
            "json": directory / f"{prefix}.json",
            "plot": directory / f"{prefix}.png",
            "program": directory / "best_program.npz",
        }
        with atomic_write(files["csv"]) as tmp:
            pd.DataFrame(self.rows()).to_csv(tmp, index=False)
        atomic_write_text(files["json"], json.dumps(self.to_dict(), indent=2) + "\n")
        plot_search(self, files["plot"])
        self.program.save(files["program"])
        self.files = {k: str(v) for k, v in files.items()}
        return self.files


def plot_search(result: ThresholdSearchResult, path: str | os.PathLike) -> None:
    """Reward over the searched thresholds: stage 1 against the global multiplier, stage 2 per layer.

    :param result: the threshold search
    :param path: PNG file to write
    """
    plt = pyplot()
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
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
