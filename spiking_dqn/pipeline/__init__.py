"""Fitting a trained spiking DQN to the chip: quantize -> (QAT) -> thresholds -> evaluate -> save.

:func:`fit_to_chip` is the one implementation of that pipeline; the
:class:`~spiking_dqn.callbacks.HardwareAwareFineTuning` callback, the ``search``,
``calibrate`` and ``deploy`` commands, the recipes' deployment and the threshold
benchmark all call it. Every block of episodes it plays starts at a seed named in one
:class:`Seeds` value, so that the search, the QAT checks, the calibration recording and
the held-out evaluation never share episodes, and two fits with the same seeds face the
same episodes.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3 import DQN

from spiking_dqn.files import atomic_write, atomic_write_text
from spiking_dqn.grid import Grid
from spiking_dqn.hardware.backend import Backend, get_backend
from spiking_dqn.hardware.energy import estimate
from spiking_dqn.hardware.program import ChipProgram
from spiking_dqn.network import SpikingQNetwork
from spiking_dqn.pipeline.result import Candidate, FitResult
from spiking_dqn.pipeline.settings import (
    EVAL_EPISODES,
    METHODS,
    ROBUST_QAT,
    SELECTIONS,
    CalibrationSettings,
    Method,
    QATSettings,
    SearchSettings,
    Seeds,
    Selection,
    StateSettings,
    as_settings,
    default_qat,
)
from spiking_dqn.pipeline.steps import Guard, Run, choose, finetune_step, quantize_step, threshold_candidates
from spiking_dqn.quantization import LambdaSpec, WeightBitsSpec, float_weights, resolve_lambdas
from spiking_dqn.rollouts import q_network
from spiking_dqn.search.storage import open_storage
from spiking_dqn.semantics.checks import check_int
from spiking_dqn.semantics.widths import DEFAULT_WEIGHT_BITS


def fit_to_chip(
    model: DQN | SpikingQNetwork,
    env_id: str | None,
    *,
    lam: LambdaSpec | Grid = None,
    weight_bits: WeightBitsSpec = None,
    program: ChipProgram | None = None,
    qat: QATSettings | None = None,
    state: StateSettings = StateSettings(),
    threshold_scale: float | Sequence[float] | None = None,
    method: Method = "grid",
    selection: Selection = "best",
    search: SearchSettings = SearchSettings(),
    calibration: CalibrationSettings = CalibrationSettings(),
    backend: str | Backend = "emulator",
    seeds: Seeds = Seeds(),
    eval_episodes: int = EVAL_EPISODES,
    encoder_seed: int = 0,
    out: str | Path | None = None,
    save_model: bool = False,
    progress: bool = False,
    labels: Mapping[str, Any] | None = None,
) -> FitResult:
    """Fit a trained spiking DQN to the chip: quantize, (QAT), choose thresholds, evaluate, save.

    1. Evaluate the float network on ``eval_episodes`` held-out episodes (``seeds.evaluation``).
    2. Quantize it on the grid of ``lam`` at ``weight_bits`` (or take ``program`` as given).
    3. With ``state.bits``: state levels for the hidden populations (``state.scheme``) over
       the membrane ranges the program reaches on observations the float policy visits
       (``seeds.calibration``); with QAT they are set on the model's networks first, so
       that QAT trains with them (SQUAT) and the model keeps them.
    4. With ``qat.steps > 0`` (by default for a ``DQN`` not fit yet: :data:`ROBUST_QAT`,
       distillation): quantization-aware fine-tuning on that grid (checked on the
       backend over ``seeds.qat_checks`` episodes, the best weights kept), then the kept
       weights are snapped to the grid (:func:`~spiking_dqn.quantization.snap.snap_model_to_grid`: the
       model is changed in place and becomes the float twin of its program; when the checks
       kept the weights before QAT, the grid is recorded on them) and requantized.
       Before it, the guard (:class:`~spiking_dqn.pipeline.steps.Guard`): the program quantized
       from the weights before fine-tuning, as it is (``"ptq_naive"``) and with calibrated
       thresholds (``"ptq"``, :func:`~spiking_dqn.search.calibrate_thresholds`), are candidates too
       (when the fit plays held-out episodes).
    5. With ``threshold_scale``: multiply the hidden thresholds (the naive program is that one).
    6. Thresholds: ``"grid"`` (two-stage search on ``seeds.search`` episodes), ``"calibrate"``
       (rates of the float network on observations it visits from ``seeds.calibration``),
       ``"both"`` or ``"none"``.
    7. Evaluate every candidate program on the held-out episodes and choose the best reward
       (fewest synaptic events on ties; with ``selection="significant"`` the network's own
       program unless another beats it by more than the noise of their paired difference:
       :func:`~spiking_dqn.pipeline.steps.choose`). So the returned program is never worse on the
       held-out episodes than the plain post-training program with calibration (``"ptq"``);
       when a guard candidate is chosen, the model's weights (and optimizer state) are put
       back to their values before fine-tuning and the program's grid is recorded on its
       networks (with thresholds calibrated per layer, ``calibration.granularity="layer"``,
       those thresholds set in its neurons: :class:`~spiking_dqn.pipeline.steps.Twin`), so
       that ``lam=None`` rebuilds the returned program from the model (per-neuron thresholds:
       the ``"ptq_naive"`` one), and ``result.qat.kept`` is False. The result gives the float reward (before
       fine-tuning), the chip reward and their gap on the same episodes with its noise
       (:attr:`FitResult.gap_noise`), and a ``UserWarning`` says when the gap is larger.
    8. With ``out``: write the search and calibration files, ``best_program.npz``,
       ``summary.json`` and, with ``save_model`` after QAT, ``model_qat.zip``.

    :param model: an SB3 ``DQN`` with ``SpikingDQNPolicy`` (QAT needs one), or its ``SpikingQNetwork``
    :param env_id: Gymnasium id (``None`` only for a fit that plays no episode: no QAT, method
        ``"none"``, ``eval_episodes=0``)
    :param lam: the grid or lambda specification (see :func:`~spiking_dqn.quantization.resolve_grid`;
        ``None``: the network's own grid, else ``"auto"``)
    :param weight_bits: bits per weight, 2..8, one for every projection or one per projection
        (e.g. 4, or ``[8, 4, 8]``; 2 is ternary): the widths of the grid, which QAT trains for
        and the program is quantized at (``None``: the network's own grid's, else 8; see
        :func:`~spiking_dqn.quantization.resolve_grid`)
    :param program: a ready chip program to fit instead of quantizing the model (no QAT then;
        its own widths, which ``weight_bits`` must not contradict)
    :param qat: quantization-aware fine-tuning settings (``None``: :func:`~spiking_dqn.pipeline.settings.default_qat`,
        :data:`ROBUST_QAT` for an SB3 ``DQN`` not fit to the chip yet with held-out episodes to
        guard it, else none; ``QATSettings()``: none)
    :param state: membrane state quantization (``StateSettings()``: float32 state, or the
        given program's and the network's own levels)
    :param threshold_scale: multiply the quantized program's hidden thresholds by this (one
        value, or one per hidden layer) before choosing thresholds
    :param method: threshold method: ``"grid"``, ``"calibrate"``, ``"both"`` or ``"none"``
    :param selection: how the program is chosen among the candidates: ``"best"`` (the best
        held-out reward) or ``"significant"`` (see step 7)
    :param search: grid-search settings
    :param calibration: calibration settings
    :param backend: backend name or object
    :param seeds: the episode seeds
    :param eval_episodes: held-out episodes per evaluation (0: no evaluation, only with method ``"none"``)
    :param encoder_seed: seed of the chip's Poisson encoder (when the network uses one)
    :param out: folder for the files (``None``: nothing is written)
    :param save_model: with ``out``, save the snapped model as ``model_qat.zip`` when QAT kept its weights
    :param progress: show progress bars
    :param labels: plain values recorded first in the summary and ``summary.json`` (e.g. the
        callback's stage tag and step)
    :raises ValueError: bad arguments (before any episode)
    :raises spiking_dqn.search.StorageUnavailableError: the search storage cannot be reached (before any episode)
    """
    start = time.perf_counter()
    if qat is None:
        check_int(eval_episodes, "eval_episodes", 0)
        qat = default_qat(model, program, eval_episodes)
    _check_fit(model, env_id, program, weight_bits, qat, state, method, search, eval_episodes)
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
    net = q_network(model)
    if program is None and lam is not None and not isinstance(lam, (Grid, str)):  # bad numbers: before any episode
        resolve_lambdas(lam, float_weights(net), DEFAULT_WEIGHT_BITS if weight_bits is None else weight_bits)
    run = Run(model, net, env_id, get_backend(backend), seeds, eval_episodes, encoder_seed, threshold_scale, progress)
    folder = Path(out) if out is not None else None
    was_training = net.training
    net.eval()
    guard: Guard | None = None
    try:
        float_before = run.evaluate_float()
        program, report, grid, naive = quantize_step(run, program, lam, weight_bits, state, squat=bool(qat.steps))
        qat_report, float_after, naive_before = None, None, None
        if qat.steps:
            naive_before, guard = naive, Guard.take(run, program, naive, calibration)
            qat_report, program, report, naive, float_after = finetune_step(run, grid, qat)
        candidates, search_result, calibration_result = threshold_candidates(
            run, program, naive, method, search, calibration, folder
        )
        candidates.update(guard.candidates if guard is not None else {})
        chosen = choose(candidates, selection)
        if guard is not None and chosen in guard.candidates:
            qat_report = guard.restore(run, qat_report, chosen)
    finally:
        if was_training:
            net.train()
    best = candidates[chosen]
    events = None if best.evaluation is None else best.evaluation.synaptic_events_per_inference
    result = FitResult(
        env_id=env_id,
        backend=getattr(run.runner, "name", type(run.runner).__name__),
        grid=grid,
        quantization=report,
        seeds=seeds,
        eval_episodes=eval_episodes,
        float_evaluation=float_before,
        candidates=candidates,
        chosen=chosen,
        energy=None if events is None else estimate(np.asarray([events]), best.program),
        qat=qat_report,
        float_evaluation_after_qat=float_after,
        naive_before_qat=naive_before,
        search=search_result,
        calibration=calibration_result,
        labels=dict(labels or {}),
    )
    result.wall_time_s = time.perf_counter() - start
    if result.gap_exceeds_noise:
        warnings.warn(result.gap_line(), UserWarning, stacklevel=2)
    if folder is not None:
        _save(result, model, folder, save_model)
    return result


def _check_fit(
    model: DQN | SpikingQNetwork,
    env_id: str | None,
    program: ChipProgram | None,
    weight_bits: WeightBitsSpec,
    qat: QATSettings,
    state: StateSettings,
    method: str,
    search: SearchSettings,
    eval_episodes: int,
) -> None:
    """Refuse a fit that cannot run, before any episode (see :func:`fit_to_chip`)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    check_int(eval_episodes, "eval_episodes", 0)
    if eval_episodes == 0 and method != "none":
        raise ValueError(f"method {method!r} chooses between programs by their reward: eval_episodes must be >= 1")
    if env_id is None and (qat.steps or method != "none" or eval_episodes or state.bits is not None):
        raise ValueError("this fit plays episodes: pass env_id")
    if program is not None and qat.steps:
        raise ValueError("QAT trains the model, so it cannot start from a given program")
    if program is not None and weight_bits is not None:
        Grid.of_program(program).check_weight_bits(weight_bits)
    if qat.steps and not isinstance(model, DQN):
        raise TypeError(f"QAT needs an SB3 DQN with SpikingDQNPolicy, got {type(model).__name__}")
    if method in ("grid", "both") and search.storage is not None:
        open_storage(search.storage)  # an unreachable storage fails now, before any episode


def _save(result: FitResult, model: DQN | SpikingQNetwork, folder: Path, save_model: bool) -> None:
    """Write a fit's files into ``folder`` (see :func:`fit_to_chip`) and record them in ``result.files``."""
    folder.mkdir(parents=True, exist_ok=True)
    if result.search is not None:
        result.files.update({f"search_{k}": v for k, v in result.search.files.items() if k != "program"})
    if result.calibration is not None:
        result.files.update({f"calibration_{k}": v for k, v in result.calibration.save(folder).items()})
    if save_model and result.qat is not None and result.qat.kept:
        with atomic_write(folder / "model_qat.zip") as tmp:
            model.save(tmp)
        result.files["model"] = str(folder / "model_qat.zip")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result.program.save(folder / "best_program.npz")
    result.files["program"] = str(folder / "best_program.npz")
    result.files["summary"] = str(folder / "summary.json")
    atomic_write_text(folder / "summary.json", json.dumps(result.summary(), indent=2, default=float) + "\n")


__all__ = [
    "EVAL_EPISODES",
    "METHODS",
    "ROBUST_QAT",
    "SELECTIONS",
    "Candidate",
    "CalibrationSettings",
    "FitResult",
    "QATSettings",
    "SearchSettings",
    "Seeds",
    "StateSettings",
    "as_settings",
    "default_qat",
    "fit_to_chip",
]
