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
