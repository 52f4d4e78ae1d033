"""Two-stage threshold grid search on a backend, as resumable Optuna studies.

After quantization, the hidden-layer thresholds tuned in float no longer fit the int8
synaptic currents. Following Arfa, Vogginger and Mayr (arXiv 2507.23562), the search runs
on the target backend itself:

* stage 1: one global multiplier ``m`` on all hidden-layer thresholds, over a coarse
  log-spaced grid (default ``2 ** (k / 2)`` for ``k = -3 .. 4``: 0.35 to 4);
* stage 2: one multiplier per hidden layer, on a fine grid around the stage-1 best
  (default ``m1 * 2 ** (j / 4)``, ``j = -1, 0, 1``: ``3 ** L`` points for ``L`` hidden layers).

Multipliers are relative to the program's hidden thresholds as given (for a program
fresh from :func:`~spiking_dqn.quantization.quantize_network`: float threshold x lambda).
The objective of a point is the mean reward over ``n_episodes`` greedy episodes on the
backend, the same episodes (seeds ``seed .. seed + n_episodes - 1``) for every point; among
equal rewards the point with fewer synaptic events per inference wins.

Each stage is an Optuna study with a ``GridSampler`` search space, named
``<study_name>-stage1`` and ``<study_name>-stage2``, evaluated exactly once per point
(see :mod:`spiking_dqn.search.studies`): in memory by default, resumable with
``storage="sqlite:///search.db"``, and shared by several processes, machines or chips
with a PostgreSQL URL.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from spiking_dqn.hardware import ChipProgram
from spiking_dqn.plots import plot_search
from spiking_dqn.hardware.backend import Backend, get_backend
from spiking_dqn.hardware_policy import InferenceStats
from spiking_dqn.rollouts import backend_reward
from spiking_dqn.search.studies import (
    HEARTBEAT_INTERVAL,
    SearchInterrupted,
    mask_url,
    open_storage,
    open_study,
    point_key,
    quiet_optuna,
    run_grid,
)

#: Stage-1 multipliers: half-octave steps from 0.35 to 4 (8 points, 1.0 included).
DEFAULT_STAGE1_GRID: tuple[float, ...] = tuple(2.0 ** (k / 2) for k in range(-3, 5))
#: Stage-2 factors around the stage-1 best, per hidden layer: quarter-octave steps.
DEFAULT_STAGE2_FACTORS: tuple[float, ...] = (2.0**-0.25, 1.0, 2.0**0.25)


def check_grid(values: Sequence[float] | None, name: str) -> list[float]:
    """A validated grid of positive finite multipliers, sorted and without repeats.

    :raises ValueError: empty, non-numeric, non-positive, NaN or infinite values
    """
    if values is None:
        raise ValueError(f"{name} must be a non-empty list of positive numbers, got None")
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
        raise ValueError(f"{name} must be a non-empty list of positive numbers, got {values!r}")
    out = []
    for v in list(values):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise ValueError(f"{name} must hold numbers, got {v!r}")
        if not math.isfinite(float(v)) or float(v) <= 0:
            raise ValueError(f"{name} must hold finite positive multipliers, got {float(v)!r}")
        out.append(float(v))
    if not out:
        raise ValueError(f"{name} is empty: give at least one positive multiplier")
    return sorted(set(out))


def n_hidden(program: ChipProgram) -> int:
    """Number of hidden populations of a program (every population but the output)."""
    return len(program.thresholds) - 1


def apply_multipliers(program: ChipProgram, base: ChipProgram, multipliers: Sequence[float]) -> ChipProgram:
    """``base`` with hidden thresholds ``base_k * multipliers[k]`` (the output threshold unchanged)."""
    hidden = [base.thresholds[k] * np.float32(m) for k, m in enumerate(multipliers)]
    return program.with_thresholds([*hidden, base.thresholds[-1]])


def program_fingerprint(program: ChipProgram) -> str:
    """SHA-256 of a program's contents (weights, neuron parameters, encoding)."""
    h = hashlib.sha256()
    for arrays in (program.weights, program.thresholds, program.alpha_decay, program.i_offset):
        for a in arrays:
            h.update(np.ascontiguousarray(a).tobytes())
            h.update(str(a.dtype).encode())
    h.update(program.obs_bound.tobytes())
    meta = (
        program.reset,
        program.v_reset,
        program.ticks,
        program.delay,
        program.encoding,
        program.seed,
        getattr(program, "centered_readout", False),
    )
    h.update(json.dumps([str(m) for m in meta]).encode())
    return h.hexdigest()


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
    """Outcome of :func:`threshold_search`.

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
        pd.DataFrame(self.rows()).to_csv(files["csv"], index=False)
        files["json"].write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        plot_search(self, files["plot"])
        self.program.save(files["program"])
        self.files = {k: str(v) for k, v in files.items()}
        return self.files


def _progress(enabled: bool, total: int, desc: str) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="point", leave=True)


def threshold_search(
    program: ChipProgram,
    env_id: str,
    *,
    backend: str | Backend = "emulator",
    stage1_grid: Sequence[float] | None = DEFAULT_STAGE1_GRID,
    stage2_factors: Sequence[float] | None = DEFAULT_STAGE2_FACTORS,
    n_episodes: int = 10,
    seed: int = 0,
    storage: str | optuna.storages.BaseStorage | None = None,
    study_name: str = "threshold-search",
    heartbeat_interval: int = HEARTBEAT_INTERVAL,
    progress_bar: bool = True,
    output_dir: str | os.PathLike | None = None,
    max_parallel: int | None = None,
    counter: InferenceStats | None = None,
) -> ThresholdSearchResult:
    """Two-stage threshold search of a chip program on a backend (see module docstring).

    :param program: the quantized program; its hidden thresholds are the base of the multipliers
    :param env_id: Gymnasium id of the task
    :param backend: ``"emulator"`` (default), ``"spinnaker2"``, or a backend object
    :param stage1_grid: global multipliers of stage 1 (positive)
    :param stage2_factors: per-layer factors of stage 2, applied to the stage-1 best (positive)
    :param n_episodes: episodes per point (k)
    :param seed: seed of the first episode of every evaluation
    :param storage: ``None`` (in memory), a database URL (``sqlite:///search.db``,
        ``postgresql://...``) or an Optuna storage
    :param study_name: prefix of the two study names
    :param heartbeat_interval: seconds between heartbeats of a running evaluation (database
        storages); a worker silent for twice that long counts as dead and its point is redone
    :param progress_bar: show a progress bar per stage
    :param output_dir: when given, write the CSV, JSON, plot and best program there
    :param max_parallel: at most this many episodes per backend batch
    :param counter: a counter to add this process's backend cost to
    :raises ValueError: empty or non-positive grid, ``n_episodes < 1``, a study of that
        name that belongs to another search
    :raises StorageUnavailableError: the storage URL cannot be reached (before any evaluation)
    :raises SearchInterrupted: the backend failed during an evaluation; the finished
        evaluations stay in the study, and the message says how to resume
    """
    if not isinstance(program, ChipProgram):
        raise TypeError(f"program must be a ChipProgram, got {type(program).__name__}")
    grid1 = check_grid(stage1_grid, "stage1_grid")
    factors = check_grid(stage2_factors, "stage2_factors")
    if isinstance(n_episodes, bool) or not isinstance(n_episodes, (int, np.integer)) or n_episodes < 1:
        raise ValueError(f"n_episodes must be a positive integer, got {n_episodes!r}")
    n_layers = n_hidden(program)
    if n_layers < 1:
        raise ValueError("the program has no hidden layer whose threshold could be searched")
    runner = get_backend(backend)
    opened = open_storage(storage, heartbeat_interval=heartbeat_interval)
    shown_storage = mask_url(storage) if isinstance(storage, str) else (None if storage is None else repr(storage))
    start = time.perf_counter()
    base = program
    base_thresholds = [float(np.mean(t)) for t in base.thresholds[:-1]]
    fingerprint_base = {
        "program": program_fingerprint(program),
        "env_id": env_id,
        "n_episodes": int(n_episodes),
        "seed": int(seed),
    }
    evaluated_here = 0
    own_counter = InferenceStats()

    def evaluate(multipliers: list[float]) -> tuple[float, dict[str, Any]]:
        nonlocal evaluated_here
        candidate = apply_multipliers(base, base, multipliers)
        result = backend_reward(
            candidate, env_id, n_episodes, seed=seed, backend=runner, max_parallel=max_parallel, counter=own_counter
        )
        evaluated_here += 1
        return result.mean_reward, {
            "multipliers": [float(m) for m in multipliers],
            "thresholds": [float(np.mean(t)) for t in candidate.thresholds[:-1]],
            "std_reward": result.std_reward,
            "rewards": [float(r) for r in result.rewards],
            "episodes": result.cost.episodes,
            "inferences": result.cost.inferences,
            "backend_calls": result.cost.backend_calls,
            "synaptic_events_per_inference": result.synaptic_events_per_inference,
            "hidden_spikes_per_inference": result.hidden_spikes_per_inference,
            "wall_time_s": result.cost.wall_time_s,
        }

    def run_stage(stage: int, points: list[dict[str, float]], to_multipliers: Any, extra: dict[str, Any]) -> list:
        name = f"{study_name}-stage{stage}"
        description = {**fingerprint_base, "stage": stage, **extra}
        fingerprint = hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()
        study = open_study(opened, name, points, fingerprint, description)
        bar = _progress(progress_bar, len(points), f"threshold search stage {stage}")
        try:
            complete = run_grid(study, points, lambda p: evaluate(to_multipliers(p)), progress=bar)
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            n_done = sum(1 for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE)
            if shown_storage is None:
                how = (
                    "the study was in memory, so its finished evaluations are only in this exception "
                    "(exc.study) and are lost with the process; pass storage='sqlite:///search.db' "
                    "(CLI: --storage sqlite:///search.db) to make the search resumable"
                )
            else:
                how = (
                    f"they are stored in study {name!r} at {shown_storage}; fix the backend and run the same "
                    f"search again with storage={shown_storage!r} and study_name={study_name!r} (CLI: the same "
                    "command) to resume: finished evaluations are not repeated"
                )
            err = SearchInterrupted(
                f"threshold search stage {stage} stopped: the backend failed during an evaluation "
                f"({type(exc).__name__}: {exc}). {n_done} evaluation(s) of this stage finished before; {how}.",
                study_name=name,
                storage=shown_storage,
                n_finished=n_done,
            )
            err.study = study  # type: ignore[attr-defined]
            raise err from exc
        finally:
            if bar is not None:
                bar.close()
        return [Evaluation.from_trial(stage, complete[point_key(p)]) for p in points]

    with quiet_optuna():
        stage1_points = [{"multiplier": m} for m in grid1]
        stage1 = run_stage(1, stage1_points, lambda p: [p["multiplier"]] * n_layers, {"grid": grid1})
        stage1_best = best_evaluation(stage1)
        center = stage1_best.multipliers[0]
        axes = [[center * f for f in factors] for _ in range(n_layers)]
        stage2_points = [
            {f"multiplier_{k}": float(m) for k, m in enumerate(combo)} for combo in itertools.product(*axes)
        ]
        stage2 = run_stage(
            2,
            stage2_points,
            lambda p: [p[f"multiplier_{k}"] for k in range(n_layers)],
            {"center": float(center), "factors": factors},
        )
    evaluations = stage1 + stage2
    best = best_evaluation(evaluations)
    if counter is not None:
        counter.add(own_counter)
    result = ThresholdSearchResult(
        program=apply_multipliers(base, base, best.multipliers),
        best=best,
        stage1_best=stage1_best,
        evaluations=evaluations,
        env_id=env_id,
        n_episodes=int(n_episodes),
        seed=int(seed),
        base_thresholds=base_thresholds,
        study_names=[f"{study_name}-stage1", f"{study_name}-stage2"],
        storage=shown_storage,
        wall_time_s=time.perf_counter() - start,
        evaluated_here=evaluated_here,
    )
    if output_dir is not None:
        result.save(output_dir)
    return result
