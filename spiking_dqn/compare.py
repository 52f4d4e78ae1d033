"""On-chip versus float comparison of a trained spiking DQN.

:func:`compare` runs the same episodes (episode ``i`` uses env seed ``seed + i``) with the
float policy (the SB3 model's greedy ``predict`` on the torch device) and with the deployed
policy (:class:`~spiking_dqn.hardware_policy.HardwarePolicy` on the emulator or a
SpiNNaker2 chip), and collects into a :class:`~spiking_dqn.report.ComparisonReport`:

* reward of each policy (mean and standard deviation over the episodes);
* action agreement: the fraction of the float policy's own observations on which the
  deployed policy picks the float policy's action;
* latency per inference: the float forward pass timed on its device, the backend's wall
  time per single-observation call, and the chip latency (``ticks x tick``, an estimate,
  for the emulator; the measured wall time of a chip run for ``spinnaker2``);
* spikes per population and synaptic events per inference;
* energy per inference: on the chip from :mod:`spiking_dqn.hardware.energy` (estimated);
  on the float device only where its power can be read (see
  :func:`~spiking_dqn.measurement.measure_float_energy`), otherwise "not measured".

The episodes are played by :func:`spiking_dqn.rollouts.run_episodes`, one episode at a
time, so that every step is one single-observation inference (whose wall time is a chip
latency) and the float policy's observations are recorded in episode order.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3 import DQN
from tqdm.auto import tqdm

from spiking_dqn.hardware import BackendResult, ChipProgram, EmulatorBackend
from spiking_dqn.hardware.energy import estimate
from spiking_dqn.hardware.spinnaker2 import import_spinnaker2
from spiking_dqn.hardware_policy import HardwarePolicy
from spiking_dqn.measurement import LATENCY_CALLS, measure_float_energy, resolve_device, time_calls
from spiking_dqn.plots import RasterData
from spiking_dqn.quantization import LambdaSpec, check_program_model
from spiking_dqn.report import ComparisonReport
from spiking_dqn.rollouts import run_episodes
from spiking_dqn.semantics.checks import check_int
from spiking_dqn.thresholds import check_threshold_scale


def population_names(program: ChipProgram) -> list[str]:
    """``["input", "hidden1", ..., "output"]``.

    :param program: the chip program
    """
    return ["input"] + [f"hidden{k + 1}" for k in range(len(program.weights) - 1)] + ["output"]


def _load_model(model: DQN | str | os.PathLike, device: th.device) -> DQN:
    """The model itself, or the ``DQN`` loaded from its ``.zip`` onto ``device``."""
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.is_file():
            raise FileNotFoundError(f"no model file at {path}")
        return DQN.load(path, device=device)
    return model


def _load_program(program: ChipProgram | str | os.PathLike) -> tuple[ChipProgram, str]:
    """The program and where it came from."""
    if isinstance(program, ChipProgram):
        return program, "given ChipProgram"
    return ChipProgram.load(program), f"loaded from {program}"


def _quantized_source(model: DQN, lam: LambdaSpec) -> str:
    """Where a program quantized from the model came from: its lambda rule, or the model's own grid."""
    if lam is not None:
        return f"quantized from the float model (lam={lam!r})"
    if model.policy.q_net.q_net.grid is not None:
        return "quantized from the float model on its own grid (recorded by QAT)"
    return "quantized from the float model (lam='auto', the model has no grid of its own)"


def _check_env_fits(env_id: str, program: ChipProgram) -> None:
    """Raise ``ValueError`` unless the env's observations and actions fit the program."""
    env = gym.make(env_id)
    try:
        obs_shape = env.observation_space.shape
        if obs_shape is None or len(obs_shape) != 1 or obs_shape[0] != program.obs_dim:
            raise ValueError(
                f"{env_id} has observations of shape {obs_shape}, but the chip program takes observations of shape "
                f"({program.obs_dim},): is this the environment the model was trained on?"
            )
        space = env.action_space
        if not isinstance(space, gym.spaces.Discrete) or int(space.n) != program.n_actions:
            raise ValueError(f"{env_id} has action space {space}, but the chip program has {program.n_actions} outputs")
    finally:
        env.close()


def _play(act: Callable[[np.ndarray], np.ndarray], env_id: str, n_episodes: int, seed: int, bar: tqdm) -> list[float]:
    """Rewards of ``n_episodes`` episodes played one after the other, episode ``i`` with seed ``seed + i``."""
    rewards = []
    for i in range(n_episodes):
        episode_rewards, _ = run_episodes(act, env_id, 1, seed=seed + i)
        rewards.append(episode_rewards[0])
        bar.update()
    return rewards


def compare(
    model: DQN | str | os.PathLike,
    env_id: str,
    backend: str = "emulator",
    lam: LambdaSpec = "auto",
    program: ChipProgram | str | os.PathLike | None = None,
    n_episodes: int = 100,
    seed: int = 0,
    device: str | th.device = "auto",
    tick_s: float = 1e-3,
    progress: bool = True,
    backend_options: dict[str, Any] | None = None,
    threshold_scale: float = 1.0,
    allow_mismatch: bool = False,
) -> ComparisonReport:
    """Run the float policy and the deployed policy on the same episodes and compare them.

    :param model: a trained SB3 ``DQN`` with a ``SpikingDQNPolicy`` (or the path of its
        ``.zip``); its policy is moved to ``device`` for the float runs and moved back after
    :param env_id: Gymnasium id of the environment
    :param backend: ``"emulator"`` (default) or ``"spinnaker2"``
    :param lam: lambda specification used to quantize the model (ignored with ``program``)
    :param program: a ready chip program (or the path of one) to deploy instead of
        quantizing the model
    :param n_episodes: episodes per policy; episode ``i`` uses env seed ``seed + i`` for both
    :param seed: env seed of the first episode
    :param device: torch device of the float policy; ``"auto"``: CUDA when available, else CPU
    :param tick_s: chip tick duration, for the latency and energy estimates
    :param progress: show a progress bar over the episodes
    :param backend_options: options of the backend (e.g. ``{"eth_ip": ...}`` for ``"spinnaker2"``)
    :param threshold_scale: runtime factor on every hidden threshold, of the float policy and
        of the deployed one alike (see :mod:`spiking_dqn.thresholds`); the program keeps its own
    :param allow_mismatch: compare a ``program`` built from another model than ``model``
        (its ``model_digest`` is another's) with a warning instead of refusing it
    :return: the report (write it with :meth:`~spiking_dqn.report.ComparisonReport.write`)
    :raises TypeError: no ``program`` given and the model's policy is not a ``SpikingDQNPolicy``
    :raises ValueError: the environment does not fit the program, bad ``n_episodes``, a
        ``program`` built from another model (see
        :func:`~spiking_dqn.quantization.digest.check_program_model`; one that records no
        model gets a warning)
    :raises ImportError: ``backend="spinnaker2"`` without py-spinnaker2 (raised before any episode)

    With ``backend="spinnaker2"`` every inference is one chip run: the episodes and the
    agreement batch (one run per recorded observation) take ``ticks x tick`` plus overhead
    each, and the chip latency reported is the measured wall time of the episode steps.
    """
    check_int(n_episodes, "n_episodes", minimum=1)
    if not np.isfinite(tick_s) or tick_s <= 0:
        raise ValueError(f"tick_s must be positive, got {tick_s}")
    threshold_scale = check_threshold_scale(threshold_scale)
    dev = resolve_device(device)
    options = dict(backend_options or {})
    if backend == "spinnaker2":  # fail before any episode runs when py-spinnaker2 is missing
        import_spinnaker2()
    model = _load_model(model, dev)
    if program is None:
        hardware = HardwarePolicy.from_model(model, backend=backend, lam=lam, threshold_scale=threshold_scale, **options)
        source = _quantized_source(model, lam)
    else:
        chip_program, source = _load_program(program)
        name = "the given chip program" if isinstance(program, ChipProgram) else f"chip program {program}"
        check_program_model(chip_program, model, allow_mismatch=allow_mismatch, program_name=name)
        hardware = HardwarePolicy(chip_program, backend=backend, threshold_scale=threshold_scale, **options)
    if threshold_scale != 1.0:
        source += f"; hidden thresholds x {threshold_scale:g} at run time (float policy and chip)"
    policy = model.policy
    original_device, original_scale = policy.device, policy.threshold_scale
    policy.to(dev)
    policy.threshold_scale = threshold_scale
    try:
        return _compare(model, env_id, hardware, source, n_episodes, seed, dev, tick_s, progress)
    finally:
        policy.to(original_device)
        policy.threshold_scale = original_scale


def _compare(
    model: DQN,
    env_id: str,
    hardware: HardwarePolicy,
    source: str,
    n_episodes: int,
    seed: int,
    dev: th.device,
    tick_s: float,
    progress: bool,
) -> ComparisonReport:
    """:func:`compare` once the policies are set up (the float policy already on ``dev``).

    The steps: both policies play the same episodes; the deployed one answers, in one
    batch, every observation the float one saw (agreement, Q-value error); both are timed;
    a typical observation's spike raster is recorded on the emulator.
    """
    chip_program = hardware.program
    policy = model.policy
    _check_env_fits(env_id, chip_program)
    bar = tqdm(total=2 * n_episodes, desc=f"compare {env_id}", unit="episode", disable=not progress)
    bar.set_postfix_str("float")
    float_rewards, observations, float_actions = _play_float(model, env_id, n_episodes, seed, bar)
    bar.set_postfix_str(hardware.backend_name)
    chip_rewards, step_events, step_walls = _play_deployed(hardware, env_id, n_episodes, seed, bar)
    bar.close()
    stats = hardware.stats.per_inference()
    obs_batch = np.stack(observations)
    batch_result, agreement, q_mae = _agreement(hardware, policy, obs_batch, float_actions, dev)
    float_latency, backend_latency, float_energy, float_energy_note = _latencies(
        hardware, policy, observations, step_walls, dev
    )
    raster = _typical_raster(hardware, observations, batch_result)
    return ComparisonReport(
        env_id=env_id,
        backend=hardware.backend_name,
        float_device=str(dev),
        seed=int(seed),
        float_rewards=float_rewards,
        chip_rewards=chip_rewards,
        agreement=agreement,
        n_agreement_obs=int(obs_batch.shape[0]),
        q_value_mae=q_mae,
        float_latency_s=float_latency,
        backend_latency_s=backend_latency,
        tick_s=float(tick_s),
        population_names=population_names(chip_program),
        spikes_per_population=[float(s) for s in stats["spikes_per_population"]],
        synaptic_events=float(stats["synaptic_events"]),
        saturated_fraction=float(stats["saturated_fraction"]),
        chip_energy=estimate(np.asarray(step_events), chip_program, tick_s=tick_s),
        float_energy_j=float_energy,
        float_energy_note=float_energy_note,
        program=chip_program,
        quantization=hardware.quantization_report,
        program_source=source,
        raster=raster,
    )


def _play_float(
    model: DQN, env_id: str, n_episodes: int, seed: int, bar: tqdm
) -> tuple[np.ndarray, list[np.ndarray], list[int]]:
    """The float policy's episodes: its rewards, every observation it saw and its action there."""
    observations: list[np.ndarray] = []
    float_actions: list[int] = []

    def float_act(obs: np.ndarray) -> np.ndarray:
        actions, _ = model.predict(obs, deterministic=True)
        observations.append(obs[0].copy())
        float_actions.append(int(actions[0]))
        return actions

    return _play(float_act, env_id, n_episodes, seed, bar), observations, float_actions


def _play_deployed(
    hardware: HardwarePolicy, env_id: str, n_episodes: int, seed: int, bar: tqdm
) -> tuple[np.ndarray, list[int], list[float]]:
    """The deployed policy's episodes (same seeds): its rewards, synaptic events and wall time per step."""
    step_events: list[int] = []
    step_walls: list[float] = []

    def chip_act(obs: np.ndarray) -> np.ndarray:
        result = hardware.run(obs)
        step_events.append(int(result.synaptic_events[0]))
        step_walls.append(float(result.wall_time_s or 0.0))
        return result.actions

    return _play(chip_act, env_id, n_episodes, seed, bar), step_events, step_walls


def _agreement(
    hardware: HardwarePolicy, policy: Any, obs_batch: np.ndarray, float_actions: list[int], dev: th.device
) -> tuple[BackendResult, float, float]:
    """One batched backend call over the float policy's observations: the result, action agreement, Q-value MAE."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # saturation was already warned about during the episodes
        batch_result = hardware.backend.run(hardware.running_program, obs_batch)
    agreement = float(np.mean(batch_result.actions == np.asarray(float_actions)))
    with th.no_grad():
        q_float = policy.q_net(th.as_tensor(obs_batch, device=dev)).cpu().numpy()
    q_mae = float(np.mean(np.abs(q_float - batch_result.q_values(hardware.program))))
    return batch_result, agreement, q_mae


def _latencies(
    hardware: HardwarePolicy, policy: Any, observations: list[np.ndarray], step_walls: list[float], dev: th.device
) -> tuple[np.ndarray, np.ndarray, float | None, str]:
    """Float forward passes on the device (latency, measured energy); single-observation backend calls.

    On a chip no extra runs are made: its latencies are the wall times of the episode steps.
    """
    timing_obs = [observations[i % len(observations)] for i in range(LATENCY_CALLS)]
    float_inputs = [th.as_tensor(o[None], device=dev) for o in timing_obs]

    def float_call(i: int) -> th.Tensor:  # greedy action of the float policy: argmax of its Q-values
        return policy.q_net(float_inputs[i % len(float_inputs)]).argmax(dim=1)

    with th.no_grad():
        float_latency = time_calls(float_call, LATENCY_CALLS, device=dev)
        float_energy, float_energy_note = measure_float_energy(float_call, dev)
    if hardware.backend_name == "emulator":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            running = hardware.running_program
            backend_latency = time_calls(lambda i: hardware.backend.run(running, timing_obs[i]), LATENCY_CALLS)
    else:
        backend_latency = np.asarray(step_walls)
    return float_latency, backend_latency, float_energy, float_energy_note


def _typical_raster(
    hardware: HardwarePolicy, observations: list[np.ndarray], batch_result: BackendResult
) -> RasterData:
    """Spike raster of a typical observation (median hidden activity), from the emulator."""
    hidden = sum(c.sum(1) for c in batch_result.spike_counts[1:-1])
    typical = int(np.argmin(np.abs(hidden - np.median(hidden))))
    raster_result = EmulatorBackend(warn_saturation=False).run(
        hardware.running_program, observations[typical], record_trains=True, record_voltages=True
    )
    return RasterData(
        observation=observations[typical],
        spike_trains=[t[:, 0] for t in raster_result.spike_trains],
        voltage_trace=raster_result.voltage_trace[:, 0],
        source="emulator",
    )
