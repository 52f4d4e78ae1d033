"""Threshold calibration without a grid and without episodes.

:func:`calibrate_thresholds` sets the hidden-layer thresholds of a chip program from
statistics of a fixed set of recorded observations (states the float policy visits),
using only backend runs on that set:

1. **Firing rates.** The float network's mean spike count per neuron is computed for each
   hidden layer on the host. The backend then runs the program on the same observations,
   and every hidden layer's threshold multiplier ``m_l`` is updated so that its mean spike
   count matches the float one: a secant step on ``log m`` per layer (all layers at once,
   from the measured counts; the first step assumes count ~ 1 / threshold), for
   ``rate_iterations`` backend runs. This fixes the relative thresholds of the layers.
2. **Actions** (``objective="agreement"``, the default). The backend's greedy actions are
   compared with the float network's on the same observations, and one common scale ``s``
   of the rate-matched multipliers is chosen to maximise the fraction of agreeing actions,
   by golden-section search on ``log s`` in ``scale_range`` (``scale_evaluations``
   backend runs). Ties go to the scale closest to 1 (the rate-matched thresholds).
   ``objective="rates"`` stops after step 1, and so does a rate-matched program that
   already reproduces every float action.

Why step 2: after a coarse quantization (e.g. lambda = 3 on CartPole, where most weights
become -1, 0 or +1) the quantized network's layer rates can already match the float
ones while its Q-values, whose action gaps are tiny compared with their size, order the
actions differently; matching rates then leaves the reward where it was. The threshold
scale that best reproduces the float policy's decisions on visited states is what the
episode-based grid search finds too, at a fraction of the cost: ``rate_iterations +
scale_evaluations`` backend runs of ``n_observations`` inferences each, and no episodes.
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

from spiking_dqn.hardware import ChipProgram
from spiking_dqn.search.episodes import EvaluationCounter, q_network, record_observations, resolve_backend
from spiking_dqn.search.grid import apply_multipliers, n_hidden

_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0  # 0.618...
_EPS = 1e-2  # spikes per neuron per inference added to both sides of a rate ratio


@dataclass
class CalibrationStep:
    """One backend run of the calibration.

    :param phase: ``"rates"`` or ``"scale"``
    :param multipliers: threshold multiplier of each hidden layer
    :param chip_counts: mean spikes per neuron per inference of each hidden layer, on the backend
    :param agreement: fraction of observations where the backend's action equals the float one
    :param synaptic_events_per_inference: mean synaptic events per inference
    """

    phase: str
    multipliers: list[float]
    chip_counts: list[float]
    agreement: float
    synaptic_events_per_inference: float


@dataclass
class CalibrationResult:
    """Outcome of :func:`calibrate_thresholds`.

    :param program: the program with the calibrated thresholds
    :param multipliers: chosen multiplier of each hidden layer (relative to the input program)
    :param thresholds: chosen threshold of each hidden layer (chip units, layer mean)
    :param rate_multipliers: the multipliers that matched the float firing rates (step 1)
    :param scale: the common scale chosen in step 2 (1.0 with ``objective="rates"``)
    :param float_counts: mean spikes per neuron per inference of each hidden layer, float network
    :param chip_counts: the same on the backend, with the chosen thresholds
    :param agreement: action agreement with the float network at the chosen thresholds
    :param objective: ``"agreement"`` or ``"rates"``
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
        files["json"].write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        self.program.save(files["program"])
        return {k: str(v) for k, v in files.items()}


def _check_positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def calibrate_thresholds(
    model: Any,
    program: ChipProgram,
    observations: np.ndarray | None = None,
    *,
    env_id: str | None = None,
    n_observations: int = 256,
    backend: Any = "emulator",
    objective: Literal["agreement", "rates"] = "agreement",
    rate_iterations: int = 3,
    scale_range: Sequence[float] = (0.35, 4.0),
    scale_evaluations: int = 6,
    seed: int = 10_000,
    counter: EvaluationCounter | None = None,
) -> CalibrationResult:
    """Calibrate the hidden thresholds of a chip program on recorded observations (see module docstring).

    :param model: the reference agent: an SB3 ``DQN`` with ``SpikingDQNPolicy``, its policy,
        or the ``SpikingQNetwork`` (its firing rates and greedy actions are the targets); after
        quantization-aware training, pass the fake-quantized network
        (:func:`spiking_dqn.qat.fake_quantized_copy`), the policy QAT trained
    :param program: the quantized program of that network; its thresholds are the start
    :param observations: the calibration set ``(n, d)``; when ``None``, ``n_observations``
        states are recorded from float-policy episodes on the host (needs ``env_id``)
    :param env_id: Gymnasium id, to record observations
    :param n_observations: size of the recorded set when ``observations`` is None
    :param backend: ``"emulator"`` (default), ``"spinnaker2"``, or a backend object
    :param objective: ``"agreement"`` (rates, then the action-agreement scale) or ``"rates"``
    :param rate_iterations: backend runs of the rate-matching step (>= 1)
    :param scale_range: range ``(low, high)`` of the common scale searched in step 2
    :param scale_evaluations: backend runs of step 2 (>= 2)
    :param seed: seed of the first recorded episode
    :param counter: a counter to add the backend cost to
    :raises ValueError: bad arguments, observations of the wrong width
    """
    start = time.perf_counter()
    if not isinstance(program, ChipProgram):
        raise TypeError(f"program must be a ChipProgram, got {type(program).__name__}")
    if objective not in ("agreement", "rates"):
        raise ValueError(f"objective must be 'agreement' or 'rates', got {objective!r}")
    rate_iterations = _check_positive_int(rate_iterations, "rate_iterations")
    scale_evaluations = _check_positive_int(scale_evaluations, "scale_evaluations", 2)
    low, high = (float(v) for v in scale_range)
    if not (0 < low < high) or not math.isfinite(high):
        raise ValueError(f"scale_range must be (low, high) with 0 < low < high, got {tuple(scale_range)}")
    net = q_network(model)
    if observations is None:
        if env_id is None:
            raise ValueError("give observations, or env_id to record them from float-policy episodes")
        observations = record_observations(net, env_id, _check_positive_int(n_observations, "n_observations"), seed)
    obs = np.asarray(observations, dtype=np.float32)
    if obs.ndim != 2 or obs.shape[1] != program.obs_dim or len(obs) == 0:
        raise ValueError(f"observations must have shape (n, {program.obs_dim}) with n >= 1, got {obs.shape}")
    if not np.all(np.isfinite(obs)):
        raise ValueError("observations contain NaN or infinite values")
    n_layers = n_hidden(program)
    if len(net.net_arch) != n_layers:
        raise ValueError(f"the network has {len(net.net_arch)} hidden layers but the program {n_layers}")

    device = next(net.parameters()).device
    with th.no_grad():
        q, counts = net(th.as_tensor(obs, device=device), return_activity=True)
    float_actions = q.argmax(1).cpu().numpy()
    float_counts = [float(c.float().mean()) for c in counts[1:]]

    runner = resolve_backend(backend)
    cost = EvaluationCounter()
    steps: list[CalibrationStep] = []
    cache: dict[tuple[float, ...], CalibrationStep] = {}

    def run(multipliers: Sequence[float], phase: str) -> CalibrationStep:
        key = tuple(float(f"{m:.10g}") for m in multipliers)
        if key in cache:
            return cache[key]
        t0 = time.perf_counter()
        result = runner.run(apply_multipliers(program, program, multipliers), obs)
        cost.add_result(result)
        cost.wall_time_s += time.perf_counter() - t0
        step = CalibrationStep(
            phase=phase,
            multipliers=[float(m) for m in multipliers],
            chip_counts=[float(c.mean()) for c in result.spike_counts[1:-1]],
            agreement=float(np.mean(result.actions == float_actions)),
            synaptic_events_per_inference=float(np.mean(result.synaptic_events)),
        )
        cache[key] = step
        steps.append(step)
        return step

    def rate_error(step: CalibrationStep) -> np.ndarray:
        return np.log((np.asarray(step.chip_counts) + _EPS) / (np.asarray(float_counts) + _EPS))

    # Step 1: per-layer rate matching, secant steps on log m.
    log_m = np.zeros(n_layers)
    previous: tuple[np.ndarray, np.ndarray] | None = None
    for it in range(rate_iterations):
        step = run(np.exp(log_m), "rates")
        err = rate_error(step)
        if np.max(np.abs(err)) < 0.02 or it == rate_iterations - 1:
            break
        slope = np.full(n_layers, -1.0)  # count ~ 1 / threshold
        if previous is not None:
            d_m = log_m - previous[0]
            d_c = np.log(np.asarray(step.chip_counts) + _EPS) - previous[1]
            ok = np.abs(d_m) > 1e-3
            slope[ok] = np.clip(d_c[ok] / d_m[ok], -3.0, -0.3)
        previous = (log_m.copy(), np.log(np.asarray(step.chip_counts) + _EPS))
        log_m = log_m + np.clip(-err / slope, -math.log(4.0), math.log(4.0))
    rate_step = min((s for s in steps if s.phase == "rates"), key=lambda s: float(np.max(np.abs(rate_error(s)))))
    rate_multipliers = list(rate_step.multipliers)

    chosen, scale = rate_step, 1.0
    if objective == "agreement" and rate_step.agreement < 1.0:  # all float actions reproduced: nothing to gain
        # Step 2: golden-section search of the common scale, maximising action agreement.
        def at(log_s: float) -> CalibrationStep:
            return run([m * math.exp(log_s) for m in rate_multipliers], "scale")

        def better(a: tuple[float, CalibrationStep], b: tuple[float, CalibrationStep]) -> bool:
            return (a[1].agreement, -abs(a[0])) > (b[1].agreement, -abs(b[0]))

        a, b = math.log(low), math.log(high)
        c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
        fc, fd = (c, at(c)), (d, at(d))
        for _ in range(scale_evaluations - 2):
            if better(fc, fd):
                b, d, fd = d, c, fc
                c = b - _GOLDEN * (b - a)
                fc = (c, at(c))
            else:
                a, c, fc = c, d, fd
                d = a + _GOLDEN * (b - a)
                fd = (d, at(d))
        candidates = [(0.0, rate_step)] + [
            (math.log(s.multipliers[0] / rate_multipliers[0]), s) for s in steps if s.phase == "scale"
        ]
        best = candidates[0]
        for cand in candidates[1:]:
            if better(cand, best):
                best = cand
        scale, chosen = math.exp(best[0]), best[1]

    if counter is not None:
        counter.add(cost)
    calibrated = apply_multipliers(program, program, chosen.multipliers)
    return CalibrationResult(
        program=calibrated,
        multipliers=list(chosen.multipliers),
        thresholds=[float(np.mean(t)) for t in calibrated.thresholds[:-1]],
        rate_multipliers=rate_multipliers,
        scale=float(scale),
        float_counts=float_counts,
        chip_counts=list(chosen.chip_counts),
        agreement=chosen.agreement,
        objective=objective,
        n_observations=int(len(obs)),
        backend_inferences=cost.inferences,
        backend_calls=cost.backend_calls,
        wall_time_s=time.perf_counter() - start,
        steps=steps,
    )
