"""Threshold calibration without a grid and without episodes.

:func:`calibrate_thresholds` sets the hidden-layer thresholds of a chip program from
statistics of a fixed set of recorded observations (states the float policy visits),
using only backend runs on that set:

1. **Firing rates.** The float network's mean spike count per neuron is computed for each
   hidden layer on the host. The backend then runs the program on the same observations,
   and the thresholds are updated so that the chip's spike counts match the float ones: a
   Newton step on the log of each threshold multiplier assuming count ~ 1 / threshold
   (for the first hidden layer, whose input is the same in every run, a secant through
   the last two runs instead), for at most ``rate_iterations`` backend runs; the run
   closest to the float counts is kept.
   With ``granularity="neuron"`` (the default) every hidden neuron gets its own multiplier
   and matches its own mean count; with ``"layer"`` one multiplier per layer matches the
   layer's mean count. Per-neuron matching is what repairs clipping: a neuron whose large
   weights were clipped by a too-large lambda receives a smaller current than in float and
   needs a lower threshold than its neighbours, which a per-layer multiplier cannot give it
   (the figures are in the README, from ``benchmarks/threshold_search.py``).
2. **Actions** (``objective="agreement"``; the default ``"rates"`` stops after step 1).
   The backend's greedy actions are compared with the float network's on the same
   observations, and one common scale ``s`` of the rate-matched thresholds is chosen to
   maximise the fraction of agreeing actions, by golden-section search on ``log s`` in
   ``scale_range`` (``scale_evaluations`` backend runs). Ties go to the scale closest to 1
   (the rate-matched thresholds). A rate-matched program that already reproduces every
   float action skips it.

Step 2 was written for the per-layer calibration: after a coarse quantization (e.g.
lambda = 3 on CartPole, where most weights become -1, 0 or +1) the layers' rates can match
the float ones while the Q-values, whose action gaps are tiny compared with their size,
order the actions differently. Measured on the shipped agents it does not bring such
programs back either (agreement on recorded states does not track the closed-loop reward
there), costs ``scale_evaluations`` more runs, and so is not the default.

What the calibration can and cannot repair: thresholds compensate a systematic change of
the synaptic currents (clipping by a too-large lambda shrinks them). They do not undo the
rounding noise of a too-small lambda; there the float firing rates are already matched
and the programs that do well in closed loop (found by the episode-based grid search, if
any) are not distinguished by any statistic of the recorded states.

Cost: at most ``rate_iterations`` (+ ``scale_evaluations``) backend runs of
``n_observations`` inferences each, and no episodes.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch as th
from stable_baselines3 import DQN
from tqdm.auto import tqdm

from spiking_dqn.files import atomic_write_text
from spiking_dqn.hardware import ChipProgram
from spiking_dqn.hardware.backend import Backend, InferenceStats, get_backend
from spiking_dqn.network import SpikingQNetwork
from spiking_dqn.rollouts import q_network, record_observations
from spiking_dqn.search.grid import n_hidden
from spiking_dqn.semantics.checks import check_int

_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0  # 0.618...
#: Spikes per inference added to both sides of a rate ratio: of a layer's mean count, and
#: (larger, as single neurons are often silent on the whole set) of one neuron's count.
_EPS = {"layer": 1e-2, "neuron": 5e-2}
_MAX_STEP = {"layer": math.log(4.0), "neuron": math.log(2.0)}  # largest change of log m per run
_TOLERANCE = 0.02  # mean |log count ratio| per layer at which rate matching stops


@dataclass
class CalibrationStep:
    """One backend run of the calibration.

    :param phase: ``"rates"`` or ``"scale"``
    :param multipliers: threshold multiplier of each hidden layer (per-neuron calibration: the
        geometric mean over the layer's neurons)
    :param chip_counts: mean spikes per neuron per inference of each hidden layer, on the backend
    :param agreement: fraction of observations where the backend's action equals the float one
    :param synaptic_events_per_inference: mean synaptic events per inference
    :param rate_error: per hidden layer, the mean over its neurons (per-neuron calibration) of
        ``|log((chip + eps) / (float + eps))|`` of the mean spike counts, or that of the
        layer's mean count (per-layer calibration)
    """

    phase: str
    multipliers: list[float]
    chip_counts: list[float]
    agreement: float
    synaptic_events_per_inference: float
    rate_error: list[float]


@dataclass
class CalibrationResult:
    """Outcome of :func:`calibrate_thresholds`.

    :param program: the program with the calibrated thresholds (per neuron with
        ``granularity="neuron"``)
    :param multipliers: chosen multiplier of each hidden layer relative to the input program
        (per-neuron calibration: the geometric mean over the layer's neurons)
    :param thresholds: chosen threshold of each hidden layer (chip units, layer mean)
    :param rate_multipliers: the multipliers that matched the float firing rates (step 1)
    :param scale: the common scale chosen in step 2 (1.0 with ``objective="rates"``)
    :param float_counts: mean spikes per neuron per inference of each hidden layer, float network
    :param chip_counts: the same on the backend, with the chosen thresholds
    :param agreement: action agreement with the float network at the chosen thresholds
    :param objective: ``"rates"`` or ``"agreement"``
    :param granularity: ``"neuron"`` or ``"layer"``: what one threshold multiplier covers
    :param n_observations: observations in the calibration set
    :param backend_inferences: backend inferences spent (observations x runs)
    :param backend_calls: backend runs
    :param wall_time_s: wall time, recording the observations included
    :param steps: every backend run, in order
    """

    program: ChipProgram
    multipliers: list[float]
    thresholds: list[float]
    rate_multipliers: list[float]
    scale: float
    float_counts: list[float]
    chip_counts: list[float]
    agreement: float
    objective: str
    granularity: str
    n_observations: int
    backend_inferences: int
    backend_calls: int
    wall_time_s: float
    steps: list[CalibrationStep] = field(default_factory=list)

    @property
    def backend_episodes(self) -> int:
        """Backend episodes spent: none, the calibration runs on recorded observations."""
        return 0

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON), without the program."""
        data = asdict(self)
        data.pop("program")
        data["backend_episodes"] = 0
        return data

    def save(self, directory: str | os.PathLike, prefix: str = "calibration") -> dict[str, str]:
        """Write ``<prefix>.json`` and ``calibrated_program.npz``; return the paths."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        files = {"json": directory / f"{prefix}.json", "program": directory / "calibrated_program.npz"}
        atomic_write_text(files["json"], json.dumps(self.to_dict(), indent=2) + "\n")
        self.program.save(files["program"])
        return {k: str(v) for k, v in files.items()}


def calibrate_thresholds(
    model: DQN | SpikingQNetwork,
    program: ChipProgram,
    observations: np.ndarray | None = None,
    *,
    env_id: str | None = None,
    n_observations: int = 128,
    backend: str | Backend = "emulator",
    objective: Literal["rates", "agreement"] = "rates",
    granularity: Literal["neuron", "layer"] = "neuron",
    rate_iterations: int = 6,
    scale_range: Sequence[float] = (0.35, 4.0),
    scale_evaluations: int = 6,
    seed: int = 10_000,
    counter: InferenceStats | None = None,
    progress_bar: bool = False,
) -> CalibrationResult:
    """Calibrate the hidden thresholds of a chip program on recorded observations (see module docstring).

    :param model: the reference agent: an SB3 ``DQN`` with ``SpikingDQNPolicy``, its policy,
        or the ``SpikingQNetwork`` (its firing rates and greedy actions are the targets); after
        quantization-aware training, pass the fake-quantized network
        (:func:`spiking_dqn.quantization.snap.fake_quantized_copy`), the policy QAT trained
    :param program: the quantized program of that network; its thresholds are the start
    :param observations: the calibration set ``(n, d)``; when ``None``, ``n_observations``
        states are recorded from float-policy episodes on the host (needs ``env_id``)
    :param env_id: Gymnasium id, to record observations
    :param n_observations: size of the recorded set when ``observations`` is None
    :param backend: ``"emulator"`` (default), ``"spinnaker2"``, or a backend object
    :param objective: ``"rates"`` (default: rate matching only) or ``"agreement"`` (rate
        matching, then the action-agreement scale)
    :param granularity: ``"neuron"`` (default: one multiplier per hidden neuron, matching its
        own spike count) or ``"layer"`` (one per hidden layer, matching the layer's mean count)
    :param rate_iterations: at most this many backend runs of the rate-matching step (>= 1);
        it stops earlier once every layer's rate error is under 0.02
    :param scale_range: range ``(low, high)`` of the common scale searched in step 2
    :param scale_evaluations: backend runs of step 2 (>= 2)
    :param seed: seed of the first recorded episode
    :param counter: a counter to add the backend cost to
    :param progress_bar: show a progress bar over the backend runs
    :raises ValueError: bad arguments, observations of the wrong width
    """
    start = time.perf_counter()
    low, high = _check_arguments(program, objective, granularity, scale_range)
    rate_iterations = check_int(rate_iterations, "rate_iterations", 1)
    scale_evaluations = check_int(scale_evaluations, "scale_evaluations", 2)
    net = q_network(model)
    obs = _observations(net, program, observations, env_id, n_observations, seed)
    most_runs = rate_iterations + (scale_evaluations if objective == "agreement" else 0)
    with tqdm(total=most_runs, desc="calibrate", unit="run", disable=not progress_bar) as bar:
        calibration = _Calibration(net, program, obs, granularity, get_backend(backend), bar)
        rate_step = calibration.match_rates(rate_iterations)
        chosen, chosen_log_m, scale = rate_step, calibration.runs[id(rate_step)][0], 1.0
        if objective == "agreement" and rate_step.agreement < 1.0:  # all float actions reproduced: nothing to gain
            chosen, chosen_log_m, scale = calibration.search_scale(rate_step, low, high, scale_evaluations)
    if counter is not None:
        counter.add(calibration.cost)
    calibrated = calibration.with_log_m(chosen_log_m)
    return CalibrationResult(
        program=calibrated,
        multipliers=list(chosen.multipliers),
        thresholds=[float(np.mean(t)) for t in calibrated.thresholds[:-1]],
        rate_multipliers=list(rate_step.multipliers),
        scale=float(scale),
        float_counts=calibration.float_counts,
        chip_counts=list(chosen.chip_counts),
        agreement=chosen.agreement,
        objective=objective,
        granularity=granularity,
        n_observations=int(len(obs)),
        backend_inferences=calibration.cost.inferences,
        backend_calls=calibration.cost.backend_calls,
        wall_time_s=time.perf_counter() - start,
        steps=calibration.steps,
    )


def _check_arguments(
    program: ChipProgram, objective: str, granularity: str, scale_range: Sequence[float]
) -> tuple[float, float]:
    """The scale range ``(low, high)``, once the program, objective and granularity are valid."""
    if not isinstance(program, ChipProgram):
        raise TypeError(f"program must be a ChipProgram, got {type(program).__name__}")
    if objective not in ("agreement", "rates"):
        raise ValueError(f"objective must be 'agreement' or 'rates', got {objective!r}")
    if granularity not in ("neuron", "layer"):
        raise ValueError(f"granularity must be 'neuron' or 'layer', got {granularity!r}")
    low, high = (float(v) for v in scale_range)
    if not (0 < low < high) or not math.isfinite(high):
        raise ValueError(f"scale_range must be (low, high) with 0 < low < high, got {tuple(scale_range)}")
    return low, high


def _observations(
    net: SpikingQNetwork, program: ChipProgram, observations: np.ndarray | None, env_id: str | None,
    n_observations: int, seed: int,
) -> np.ndarray:
    """The calibration set ``(n, d)`` as float32: the given one, or one recorded from float-policy episodes."""
    if observations is None:
        if env_id is None:
            raise ValueError("give observations, or env_id to record them from float-policy episodes")
        observations = record_observations(net, env_id, check_int(n_observations, "n_observations", 1), seed)
    obs = np.asarray(observations, dtype=np.float32)
    if obs.ndim != 2 or obs.shape[1] != program.obs_dim or len(obs) == 0:
        raise ValueError(f"observations must have shape (n, {program.obs_dim}) with n >= 1, got {obs.shape}")
    if not np.all(np.isfinite(obs)):
        raise ValueError("observations contain NaN or infinite values")
    n_layers = n_hidden(program)
    if len(net.net_arch) != n_layers:
        raise ValueError(f"the network has {len(net.net_arch)} hidden layers but the program {n_layers}")
    return obs


class _Calibration:
    """The backend runs of one calibration: the float targets, every run (cached) and its cost."""

    def __init__(
        self, net: SpikingQNetwork, program: ChipProgram, obs: np.ndarray, granularity: str, runner: Backend, bar: Any
    ) -> None:
        device = next(net.parameters()).device
        with th.no_grad():
            q, counts = net(th.as_tensor(obs, device=device), return_activity=True)
        self.program, self.obs, self.granularity, self.runner, self.bar = program, obs, granularity, runner, bar
        self.float_actions = q.argmax(1).cpu().numpy()
        self.eps, self.max_step = _EPS[granularity], _MAX_STEP[granularity]
        float_neuron_counts = [c.float().cpu().numpy() for c in counts[1:]]
        self.target = self.matched(float_neuron_counts)
        self.float_counts = [float(c.mean()) for c in float_neuron_counts]
        self.base = [np.asarray(t, dtype=np.float64) for t in program.thresholds[:-1]]
        self.cost = InferenceStats()
        self.steps: list[CalibrationStep] = []
        self.cache: dict[bytes, CalibrationStep] = {}
        #: id(step) -> (its log m, its mean count per multiplier): what the secant steps start from.
        self.runs: dict[int, tuple[list[np.ndarray], list[np.ndarray]]] = {}

    def matched(self, layer_counts: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Mean spike count of what one multiplier covers: each neuron, or the whole layer."""
        per_neuron = [np.asarray(c, dtype=np.float64).mean(0) for c in layer_counts]
        return per_neuron if self.granularity == "neuron" else [c.mean(keepdims=True) for c in per_neuron]

    def with_log_m(self, log_m: Sequence[np.ndarray]) -> ChipProgram:
        """The program with hidden thresholds ``base * exp(log m)``."""
        hidden = [(b * np.exp(lm)).astype(np.float32) for b, lm in zip(self.base, log_m)]
        return self.program.with_thresholds([*hidden, self.program.thresholds[-1]])

    def run(self, log_m: Sequence[np.ndarray], phase: str) -> CalibrationStep:
        """One backend run at these log multipliers (a repeated point is not run again)."""
        key = np.concatenate([np.round(lm, 10) for lm in log_m]).tobytes()
        if key in self.cache:
            return self.cache[key]
        t0 = time.perf_counter()
        result = self.runner.run(self.with_log_m(log_m), self.obs)
        self.cost.add_result(result)
        self.cost.wall_time_s += time.perf_counter() - t0
        self.bar.update()
        got = self.matched(result.spike_counts[1:-1])
        eps = self.eps
        step = CalibrationStep(
            phase=phase,
            multipliers=[float(np.exp(np.mean(lm))) for lm in log_m],
            chip_counts=[float(c.mean()) for c in result.spike_counts[1:-1]],
            agreement=float(np.mean(result.actions == self.float_actions)),
            synaptic_events_per_inference=float(np.mean(result.synaptic_events)),
            rate_error=[float(np.mean(np.abs(np.log((g + eps) / (t + eps))))) for g, t in zip(got, self.target)],
        )
        self.cache[key] = step
        self.runs[id(step)] = ([lm.copy() for lm in log_m], got)
        self.steps.append(step)
        return step

    def match_rates(self, rate_iterations: int) -> CalibrationStep:
        """Step 1: rate matching, Newton or secant steps on log m (per neuron or per layer).

        :return: the run whose neurons (or layers) are closest to their float counts, on average
        """
        target, eps, max_step = self.target, self.eps, self.max_step
        log_m = [np.zeros(len(t)) for t in target]
        previous: tuple[list[np.ndarray], list[np.ndarray]] | None = None
        for it in range(rate_iterations):
            step = self.run(log_m, "rates")
            if max(step.rate_error) < _TOLERANCE or it == rate_iterations - 1:
                break
            got = self.runs[id(step)][1]
            new_log_m = []
            for k in range(len(target)):
                err = np.log((got[k] + eps) / (target[k] + eps))
                slope = np.full(len(err), -1.0)  # count ~ 1 / threshold
                # Per neuron, a secant only for the first hidden layer: its input spikes are the
                # same in every run. A deeper neuron's count also moved because the layers before
                # it changed, and a secant through that misjudges its slope (the counts then
                # oscillate). A layer's mean count is smooth enough for the secant.
                if previous is not None and (k == 0 or self.granularity == "layer"):
                    d_m = log_m[k] - previous[0][k]
                    d_c = np.log(got[k] + eps) - np.log(previous[1][k] + eps)
                    ok = np.abs(d_m) > 1e-3
                    slope[ok] = np.clip(d_c[ok] / d_m[ok], -3.0, -0.3)
                new_log_m.append(log_m[k] + np.clip(-err / slope, -max_step, max_step))
            previous = (log_m, got)
            log_m = new_log_m
        weights = np.array([len(t) for t in target], dtype=np.float64)
        return min(
            (s for s in self.steps if s.phase == "rates"),
            key=lambda s: float(np.dot(weights, s.rate_error) / weights.sum()),
        )

    def search_scale(
        self, rate_step: CalibrationStep, low: float, high: float, scale_evaluations: int
    ) -> tuple[CalibrationStep, list[np.ndarray], float]:
        """Step 2: golden-section search of the common scale, maximising action agreement.

        :return: the chosen run, its log multipliers and its scale
        """
        rate_log_m = self.runs[id(rate_step)][0]

        def scaled(log_s: float) -> list[np.ndarray]:
            return [lm + log_s for lm in rate_log_m]

        def at(log_s: float) -> tuple[float, CalibrationStep]:
            return log_s, self.run(scaled(log_s), "scale")

        def better(x: tuple[float, CalibrationStep], y: tuple[float, CalibrationStep]) -> bool:
            return (x[1].agreement, -abs(x[0])) > (y[1].agreement, -abs(y[0]))

        a, b = math.log(low), math.log(high)
        c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
        fc, fd = at(c), at(d)
        tried = [(0.0, rate_step), fc, fd]
        for _ in range(scale_evaluations - 2):
            if better(fc, fd):
                b, d, fd = d, c, fc
                c = b - _GOLDEN * (b - a)
                fc = at(c)
                tried.append(fc)
            else:
                a, c, fc = c, d, fd
                d = a + _GOLDEN * (b - a)
                fd = at(d)
                tried.append(fd)
        best = tried[0]
        for cand in tried[1:]:
            if better(cand, best):
                best = cand
        return best[1], scaled(best[0]), math.exp(best[0])
