"""``HardwarePolicy``: SB3-style ``predict`` that runs a chip program on a hardware backend."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from stable_baselines3 import DQN

from spiking_dqn.hardware import BackendResult, ChipProgram
from spiking_dqn.hardware.backend import Backend, get_backend
from spiking_dqn.policies import SpikingDQNPolicy
from spiking_dqn.quantization import Grid, LambdaSpec, QuantizationReport, quantize_network
from spiking_dqn.thresholds import check_threshold_scale, scaled_thresholds


@dataclass
class InferenceStats:
    """Running totals of inferences run on a backend: what a policy, an evaluation or a search spent.

    :param inferences: observations run
    :param backend_calls: backend calls (batches)
    :param episodes: episodes played (when counted by an episode loop)
    :param spikes: spikes per population summed over inferences (input, hidden..., output)
    :param synaptic_events: synaptic events summed over inferences
    :param saturated: inferences in which an output neuron reached its threshold
    :param backend_time_s: backend wall time reported by the backend, summed over calls
    :param wall_time_s: wall-clock time of what was counted (backend and environment), when timed
    """

    inferences: int = 0
    backend_calls: int = 0
    episodes: int = 0
    spikes: list[int] = field(default_factory=list)
    synaptic_events: int = 0
    saturated: int = 0
    backend_time_s: float = 0.0
    wall_time_s: float = 0.0

    @property
    def hidden_spikes(self) -> int:
        """Hidden-layer spikes summed over inferences."""
        return int(sum(self.spikes[1:-1]))

    def add_result(self, result: BackendResult) -> None:
        """Count one backend call.

        :param result: the call's result
        """
        self.inferences += result.batch_size
        self.backend_calls += 1
        self.backend_time_s += float(result.wall_time_s or 0.0)
        counts = [int(c.sum()) for c in result.spike_counts]
        self.spikes = [a + b for a, b in zip(self.spikes, counts)] if self.spikes else counts
        self.synaptic_events += int(np.asarray(result.synaptic_events).sum())
        self.saturated += int(np.asarray(result.output_saturated).sum())

    def add(self, other: InferenceStats) -> None:
        """Add another counter's totals to this one.

        :param other: the other counter
        """
        self.inferences += other.inferences
        self.backend_calls += other.backend_calls
        self.episodes += other.episodes
        if other.spikes:
            self.spikes = [a + b for a, b in zip(self.spikes, other.spikes)] if self.spikes else list(other.spikes)
        self.synaptic_events += other.synaptic_events
        self.saturated += other.saturated
        self.backend_time_s += other.backend_time_s
        self.wall_time_s += other.wall_time_s

    def to_dict(self) -> dict[str, Any]:
        """Plain data (the totals, with ``hidden_spikes``)."""
        return {**asdict(self), "hidden_spikes": self.hidden_spikes}

    def per_inference(self) -> dict[str, Any]:
        """Averages per inference (empty when nothing ran)."""
        if self.inferences == 0:
            return {}
        n = self.inferences
        return {
            "inferences": n,
            "wall_time_per_call_s": self.backend_time_s / self.backend_calls,
            "spikes_per_population": [s / n for s in self.spikes],
            "hidden_spikes": self.hidden_spikes / n,
            "synaptic_events": self.synaptic_events / n,
            "saturated_fraction": self.saturated / n,
        }


class HardwarePolicy:
    """A deployed spiking Q-network: greedy actions from a chip program run on a backend.

    Follows SB3's ``predict`` signature, so it works with ``evaluate_policy`` on single and
    vectorised environments.

    :param program: the chip program
    :param backend: backend name (``"emulator"``, the default, or ``"spinnaker2"``)
    :param quantization_report: report of the quantization that built the program, if any
    :param threshold_scale: runtime factor on every hidden threshold (see :attr:`threshold_scale`)
    :param backend_options: options of the backend (e.g. ``eth_ip`` for ``"spinnaker2"``)
    """

    def __init__(
        self,
        program: ChipProgram,
        backend: str | Backend = "emulator",
        quantization_report: QuantizationReport | None = None,
        threshold_scale: float = 1.0,
        **backend_options: Any,
    ) -> None:
        if not isinstance(program, ChipProgram):
            raise TypeError(f"program must be a ChipProgram, got {type(program).__name__}")
        self.program = program
        self.backend = get_backend(backend, **backend_options)
        self.backend_name = self.backend.name
        self.quantization_report = quantization_report
        self.stats = InferenceStats()
        self.last_result: BackendResult | None = None
        self._running: tuple[ChipProgram, float, ChipProgram] | None = None
        self.threshold_scale = threshold_scale

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

    def run(self, obs: ArrayLike) -> BackendResult:
        """Run the program on a batch ``(n, d)`` (or one observation ``(d,)``) and keep its statistics."""
        result = self.backend.run(self.running_program, obs)
        self.stats.add_result(result)
        self.last_result = result
        return result

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
        :return: the action (a 0-d array for one observation, ``(n,)`` for a batch) and ``None``
        """
        obs = np.asarray(observation, dtype=np.float32)
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
    def load(cls, path: str | os.PathLike, backend: str | Backend = "emulator", **backend_options: Any) -> HardwarePolicy:
        """Load a chip program saved by :meth:`save` and attach a backend."""
        return cls(ChipProgram.load(path), backend=backend, **backend_options)
