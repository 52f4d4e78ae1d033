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
``<study_name>-<program key>-stage1`` and ``-stage2``, the key the first 12 hex digits of
:meth:`ChipProgram.digest() <spiking_dqn.hardware.program.ChipProgram.digest>` (every field
of the program), so a storage keeps one study per program and a search never takes another
program's evaluations for its own. Each point is evaluated exactly once
(see :mod:`spiking_dqn.search.studies`): in memory by default, resumable with
``storage="sqlite:///search.db"``, and shared by several processes, machines or chips
with a PostgreSQL URL (see :mod:`spiking_dqn.search.storage`). What the search found, and
the files it writes, is a :class:`~spiking_dqn.search.results.ThresholdSearchResult`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna

from spiking_dqn.hardware import ChipProgram
from spiking_dqn.hardware.backend import Backend, InferenceStats, get_backend
from spiking_dqn.rollouts import backend_reward
from spiking_dqn.search.results import Evaluation, ThresholdSearchResult, best_evaluation
from spiking_dqn.search.storage import HEARTBEAT_INTERVAL, mask_url, open_storage
from spiking_dqn.search.studies import SearchInterrupted, open_study, point_key, quiet_optuna, run_grid
from spiking_dqn.semantics.checks import check_int, is_real
from spiking_dqn.semantics.thresholds import scale_thresholds

#: Stage-1 multipliers: half-octave steps from 0.35 to 4 (8 points, 1.0 included).
DEFAULT_STAGE1_GRID: tuple[float, ...] = tuple(2.0 ** (k / 2) for k in range(-3, 5))
#: Stage-2 factors around the stage-1 best, per hidden layer: quarter-octave steps.
DEFAULT_STAGE2_FACTORS: tuple[float, ...] = (2.0**-0.25, 1.0, 2.0**0.25)
#: Hex digits of the program's digest in the study names.
STUDY_KEY_DIGITS = 12


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
        if not is_real(v):
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
    return program.with_thresholds(scale_thresholds(base.thresholds, multipliers))


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
    :param study_name: prefix of the two study names (``<study_name>-<program key>-stage1``, ``-stage2``)
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
    check_int(n_episodes, "n_episodes", minimum=1)
    n_layers = n_hidden(program)
    if n_layers < 1:
        raise ValueError("the program has no hidden layer whose threshold could be searched")
    search = _Search(
        program, env_id, get_backend(backend), int(n_episodes), int(seed), max_parallel, storage,
        f"{study_name}-{program.digest()[:STUDY_KEY_DIGITS]}", heartbeat_interval, progress_bar,
    )
    with quiet_optuna():
        stage1 = search.stage(1, [{"multiplier": m} for m in grid1], lambda p: [p["multiplier"]] * n_layers,
                              {"grid": grid1})
        stage1_best = best_evaluation(stage1)
        center = stage1_best.multipliers[0]
        axes = [[center * f for f in factors] for _ in range(n_layers)]
        stage2_points = [
            {f"multiplier_{k}": float(m) for k, m in enumerate(combo)} for combo in itertools.product(*axes)
        ]
        stage2 = search.stage(2, stage2_points, lambda p: [p[f"multiplier_{k}"] for k in range(n_layers)],
                              {"center": float(center), "factors": factors})
    if counter is not None:
        counter.add(search.counter)
    result = search.result(stage1 + stage2, stage1_best)
    if output_dir is not None:
        result.save(output_dir)
    return result


class _Search:
    """One threshold search: its backend evaluations and its studies (see :func:`threshold_search`)."""

    def __init__(
        self, program: ChipProgram, env_id: str, runner: Backend, n_episodes: int, seed: int,
        max_parallel: int | None, storage: str | optuna.storages.BaseStorage | None, prefix: str,
        heartbeat_interval: int, progress_bar: bool,
    ) -> None:
        self.program, self.env_id, self.runner = program, env_id, runner
        self.n_episodes, self.seed, self.max_parallel = n_episodes, seed, max_parallel
        self.storage = open_storage(storage, heartbeat_interval=heartbeat_interval)
        self.start = time.perf_counter()
        self.shown_storage = (
            mask_url(storage) if isinstance(storage, str) else (None if storage is None else repr(storage))
        )
        self.prefix, self.progress_bar = prefix, progress_bar
        #: what every study of this search is for: the whole program, the task, the episodes
        self.description = {"program": program.digest(), "env_id": env_id, "n_episodes": n_episodes, "seed": seed}
        self.evaluated_here = 0
        self.counter = InferenceStats()

    def evaluate(self, multipliers: list[float]) -> tuple[float, dict[str, Any]]:
        """Mean reward of the program at these hidden-threshold multipliers, and what to record with it."""
        candidate = apply_multipliers(self.program, self.program, multipliers)
        result = backend_reward(
            candidate, self.env_id, self.n_episodes, seed=self.seed, backend=self.runner,
            max_parallel=self.max_parallel, counter=self.counter,
        )
        self.evaluated_here += 1
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

    def stage(self, stage: int, points: list[dict[str, float]], to_multipliers: Any, extra: dict[str, Any]) -> list:
        """Evaluate a stage's grid (each point once, in its study) and return its evaluations in grid order."""
        name = f"{self.prefix}-stage{stage}"
        description = {**self.description, "stage": stage, **extra}
        fingerprint = hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()
        study = open_study(self.storage, name, points, fingerprint, description)
        bar = _progress(self.progress_bar, len(points), f"threshold search stage {stage}")
        try:
            complete = run_grid(study, points, lambda p: self.evaluate(to_multipliers(p)), progress=bar)
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            raise self._interrupted(stage, name, study, exc) from exc
        finally:
            if bar is not None:
                bar.close()
        return [Evaluation.from_trial(stage, complete[point_key(p)]) for p in points]

    def _interrupted(self, stage: int, name: str, study: optuna.Study, exc: Exception) -> SearchInterrupted:
        """The error of a stage stopped by its backend, saying how to resume (``exc.study``: the study)."""
        n_done = sum(1 for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE)
        if self.shown_storage is None:
            how = (
                "the study was in memory, so its finished evaluations are only in this exception "
                "(exc.study) and are lost with the process; pass storage='sqlite:///search.db' "
                "(CLI: --storage sqlite:///search.db) to make the search resumable"
            )
        else:
            study_name = self.prefix[: -STUDY_KEY_DIGITS - 1]
            how = (
                f"they are stored in study {name!r} at {self.shown_storage}; fix the backend and run the same "
                f"search again with storage={self.shown_storage!r} and study_name={study_name!r} (CLI: the same "
                "command) to resume: finished evaluations are not repeated"
            )
        err = SearchInterrupted(
            f"threshold search stage {stage} stopped: the backend failed during an evaluation "
            f"({type(exc).__name__}: {exc}). {n_done} evaluation(s) of this stage finished before; {how}.",
            study_name=name,
            storage=self.shown_storage,
            n_finished=n_done,
        )
        err.study = study  # type: ignore[attr-defined]
        return err

    def result(self, evaluations: list[Evaluation], stage1_best: Evaluation) -> ThresholdSearchResult:
        """What the search found: the best point's program, every evaluation and the search's cost."""
        best = best_evaluation(evaluations)
        return ThresholdSearchResult(
            program=apply_multipliers(self.program, self.program, best.multipliers),
            best=best,
            stage1_best=stage1_best,
            evaluations=evaluations,
            env_id=self.env_id,
            n_episodes=self.n_episodes,
            seed=self.seed,
            base_thresholds=[float(np.mean(t)) for t in self.program.thresholds[:-1]],
            study_names=[f"{self.prefix}-stage1", f"{self.prefix}-stage2"],
            storage=self.shown_storage,
            wall_time_s=time.perf_counter() - self.start,
            evaluated_here=self.evaluated_here,
        )
