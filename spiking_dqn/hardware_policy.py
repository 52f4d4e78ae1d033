"""``HardwarePolicy``: SB3-style ``predict`` that runs a chip program on a hardware backend."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from stable_baselines3 import DQN

from spiking_dqn.hardware import BackendResult, ChipProgram
from spiking_dqn.hardware.backend import Backend, InferenceStats, get_backend
from spiking_dqn.policies import SpikingDQNPolicy
from spiking_dqn.grid import Grid
from spiking_dqn.quantization import LambdaSpec, QuantizationReport, check_program_model, quantize_network
from spiking_dqn.thresholds import AdaptiveThresholds, ThresholdAdaptation, check_threshold_scale, scaled_thresholds


class HardwarePolicy:
    """A deployed spiking Q-network: greedy actions from a chip program run on a backend.

    Follows SB3's ``predict`` signature, so it works with ``evaluate_policy`` on single and
    vectorised environments.

    :param program: the chip program
    :param backend: backend name (``"emulator"``, the default, or ``"spinnaker2"``)
    :param quantization_report: report of the quantization that built the program, if any
    :param threshold_scale: runtime factor on every hidden threshold (see :attr:`threshold_scale`)
    :param adaptive_thresholds: NeuEdge's runtime adaptation,
        ``dict(target_rate=..., gain=..., window=10)`` (see
        :class:`~spiking_dqn.thresholds.AdaptiveThresholds`), or ``None`` (off). The host
        rewrites each hidden layer's thresholds between inferences from that episode's
        recent firing rates; each episode (a row of a batch) keeps its own state, so a
        batch runs one backend call per row. An episode's state starts afresh where
        ``predict``'s ``episode_start`` is True, for a new episode id in :meth:`run`, and
        at :meth:`reset_adaptation`.
    :param model: the float model the program stands for (an SB3 ``DQN`` with a
        ``SpikingDQNPolicy``, its policy or its network), or ``None`` (no check): a program
        whose ``model_digest`` is another model's is refused (``ValueError``), one that
        records none is taken with a warning (see
        :func:`~spiking_dqn.quantization.digest.check_program_model`)
    :param allow_mismatch: with ``model``, take a program built from another model (a warning)
    :param backend_options: options of the backend (e.g. ``eth_ip`` for ``"spinnaker2"``)
    """

    def __init__(
        self,
        program: ChipProgram,
        backend: str | Backend = "emulator",
        quantization_report: QuantizationReport | None = None,
        threshold_scale: float = 1.0,
        adaptive_thresholds: dict[str, Any] | AdaptiveThresholds | None = None,
        model: Any = None,
        allow_mismatch: bool = False,
        **backend_options: Any,
    ) -> None:
        if not isinstance(program, ChipProgram):
            raise TypeError(f"program must be a ChipProgram, got {type(program).__name__}")
        if model is not None:
            check_program_model(program, model, allow_mismatch=allow_mismatch)
        self.program = program
        self.backend = get_backend(backend, **backend_options)
        self.backend_name = self.backend.name
        self.quantization_report = quantization_report
        self.stats = InferenceStats()
        self.last_result: BackendResult | None = None
        self._running: tuple[ChipProgram, float, ChipProgram] | None = None
        self.threshold_scale = threshold_scale
        self.adaptive_thresholds = AdaptiveThresholds.from_spec(adaptive_thresholds)
        self._adaptation: dict[Any, ThresholdAdaptation] = {}

    @classmethod
    def from_model(
        cls,
        model: DQN | SpikingDQNPolicy,
        backend: str | Backend = "emulator",
        lam: LambdaSpec | Grid = None,
        seed: int = 0,
        **backend_options: Any,
    ) -> HardwarePolicy:
        """Quantize a trained SB3 model with ``SpikingDQNPolicy`` into a chip program.

        :param model: an SB3 ``DQN`` (or its policy) whose policy is a ``SpikingDQNPolicy``
        :param backend: backend name
        :param lam: the grid, or a lambda specification: ``None`` (default: the network's own
            grid, recorded when it was fine-tuned and snapped, else ``"auto"``), ``"auto"``, a
            float, or one float per projection (see :func:`spiking_dqn.quantization.resolve_grid`)
        :param seed: seed of the chip's Poisson encoder (when the network uses one)
        :param backend_options: options of the backend
        :raises TypeError: the model's policy is not a ``SpikingDQNPolicy``
        """
        policy = getattr(model, "policy", model)
        if not isinstance(policy, SpikingDQNPolicy):
            raise TypeError(
                "HardwarePolicy.from_model supports models whose policy is spiking_dqn.SpikingDQNPolicy "
                f"(e.g. DQN(SpikingDQNPolicy, env)); got {type(policy).__name__}"
            )
        program, report = quantize_network(policy.q_net.q_net, lam, seed=seed)
        return cls(program, backend=backend, quantization_report=report, **backend_options)

    # ------------------------------------------------------------------ inference

    @property
    def threshold_scale(self) -> float:
        """Runtime factor on every hidden threshold (default 1.0), on any backend.

        The backend runs the program with its hidden thresholds times this factor
        (``float32(threshold) * float32(scale)``, as ``model.policy.threshold_scale`` does in
        the float network); ``program`` and its file keep the nominal thresholds.
        """
        return self._threshold_scale

    @threshold_scale.setter
    def threshold_scale(self, value: float) -> None:
        self._threshold_scale = check_threshold_scale(value)

    @property
    def running_program(self) -> ChipProgram:
        """The program the backend runs: ``program`` with the threshold scale applied."""
        if self._threshold_scale == 1.0:
            return self.program
        if self._running is None or self._running[0] is not self.program or self._running[1] != self._threshold_scale:
            scaled = self.program.with_thresholds(scaled_thresholds(self.program.thresholds, self._threshold_scale))
            self._running = (self.program, self._threshold_scale, scaled)
        return self._running[2]

    def run(self, obs: ArrayLike, episodes: Sequence[Any] | None = None) -> BackendResult:
        """Run the program on a batch ``(n, d)`` (or one observation ``(d,)``) and keep its statistics.

        :param obs: the observations
        :param episodes: with adaptive thresholds, the episode of each row (any hashable id;
            default: the row index). A row whose id has no state starts afresh, and the
            states of ids not in the batch are dropped (their episodes ended).
        """
        if self.adaptive_thresholds is None:
            result = self.backend.run(self.running_program, obs)
        else:
            result = self._run_adaptive(np.asarray(obs, dtype=np.float32), episodes)
        self.stats.add_result(result)
        self.last_result = result
        return result

    def reset_adaptation(self) -> None:
        """Forget every episode's adaptation state (the next inference uses the base thresholds)."""
        self._adaptation.clear()

    def adapted_thresholds(self, episode: Any = 0) -> list[np.ndarray]:
        """The thresholds the next inference of ``episode`` runs with (hidden layers, then the output).

        :param episode: the episode id (the row index when ``run`` was given none)
        """
        factors = None
        if self.adaptive_thresholds is not None and episode in self._adaptation:
            factors = self._adaptation[episode].factors()
        return scaled_thresholds(self.program.thresholds, self._threshold_scale, factors)

    def _run_adaptive(self, obs: np.ndarray, episodes: Sequence[Any] | None) -> BackendResult:
        """One backend call per row, each with its episode's adapted thresholds; the results as one."""
        rule = self.adaptive_thresholds
        assert rule is not None
        batch = obs[None] if obs.ndim == 1 else obs
        ids = list(range(len(batch))) if episodes is None else list(episodes)
        if len(ids) != len(batch):
            raise ValueError(f"episodes has {len(ids)} ids for {len(batch)} observations")
        self._adaptation = {i: self._adaptation[i] for i in ids if i in self._adaptation}
        sizes = self.program.layer_sizes[1:-1]
        results = []
        for row, episode in zip(batch, ids):
            state = self._adaptation.setdefault(episode, ThresholdAdaptation(rule, len(sizes)))
            program = self.program.with_thresholds(
                scaled_thresholds(self.program.thresholds, self._threshold_scale, state.factors())
            )
            result = self.backend.run(program, row[None])
            rates = [int(c.sum()) / (n * self.program.ticks) for c, n in zip(result.spike_counts[1:-1], sizes)]
            state.record(np.array(rates))
            results.append(result)
        return _concatenate(results)

    def q_values(self, obs: ArrayLike) -> np.ndarray:
        """Q-values in float units (output voltages divided by the output lambda), ``(n, n_actions)``."""
        return self.run(obs).q_values(self.program)

    def predict(
        self,
        observation: ArrayLike,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """Greedy actions of the deployed network (SB3 signature).

        The chip policy is always greedy: ``deterministic`` is accepted for compatibility
        (randomness, if any, comes from a Poisson encoder).

        :param observation: one observation ``(d,)`` or a batch ``(n, d)``
        :param state: unused (no recurrent state), returned unchanged
        :param episode_start: where True, that row's episode starts (its threshold
            adaptation starts afresh); SB3's ``evaluate_policy`` passes it
        :param deterministic: accepted for SB3 compatibility (the policy is greedy)
        :return: the action (a 0-d array for one observation, ``(n,)`` for a batch) and ``None``
        """
        obs = np.asarray(observation, dtype=np.float32)
        if self.adaptive_thresholds is not None and episode_start is not None:
            for row, start in enumerate(np.atleast_1d(episode_start)):
                if start:
                    self._adaptation.pop(row, None)
        actions = self.run(obs).actions
        return (actions[0] if obs.ndim == 1 else actions), state

    # ------------------------------------------------------------------ thresholds

    @property
    def thresholds(self) -> list[np.ndarray]:
        """Nominal thresholds per population (hidden layers, then the output), in chip units (before ``threshold_scale``)."""
        return [t.copy() for t in self.program.thresholds]

    @thresholds.setter
    def thresholds(self, values: Sequence[ArrayLike]) -> None:
        self.program = self.program.with_thresholds(values)

    def set_threshold(self, population: int, value: ArrayLike) -> None:
        """Set the threshold of one population (index into hidden layers then output)."""
        values: list[ArrayLike] = list(self.program.thresholds)
        if not -len(values) <= population < len(values):
            raise IndexError(f"population {population} out of range: the program has {len(values)} populations")
        values[population] = value
        self.thresholds = values

    # ------------------------------------------------------------------ files

    def save(self, path: str | os.PathLike) -> None:
        """Save the chip program (pickle-free, see :meth:`ChipProgram.save`)."""
        self.program.save(path)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        backend: str | Backend = "emulator",
        model: Any = None,
        allow_mismatch: bool = False,
        **backend_options: Any,
    ) -> HardwarePolicy:
        """Load a chip program saved by :meth:`save` and attach a backend.

        :param path: the program file
        :param backend: backend name
        :param model: the float model the program must have been built from (see the class), or ``None``
        :param allow_mismatch: take a program built from another model (a warning)
        :param backend_options: options of the backend
        """
        program = ChipProgram.load(path)
        if model is not None:
            check_program_model(program, model, allow_mismatch=allow_mismatch, program_name=f"chip program {path}")
        return cls(program, backend=backend, **backend_options)


def _concatenate(results: Sequence[BackendResult]) -> BackendResult:
    """Results of consecutive backend calls on parts of one batch, as the result of the whole batch."""
    first = results[0]
    stack = np.concatenate
    trains = None
    if all(r.spike_trains is not None for r in results):
        trains = [stack([r.spike_trains[k] for r in results], axis=1) for k in range(len(first.spike_trains))]  # type: ignore[index]
    trace = None
    if all(r.voltage_trace is not None for r in results):
        trace = stack([r.voltage_trace for r in results], axis=1)  # type: ignore[misc]
    return BackendResult(
        voltages=stack([r.voltages for r in results]),
        actions=stack([r.actions for r in results]),
        spike_counts=[stack([r.spike_counts[k] for r in results]) for k in range(len(first.spike_counts))],
        synaptic_events=stack([r.synaptic_events for r in results]),
        output_saturated=stack([r.output_saturated for r in results]),
        ticks=first.ticks,
        wall_time_s=sum(float(r.wall_time_s or 0.0) for r in results),
        backend=first.backend,
        spike_trains=trains,
        voltage_trace=trace,
    )
