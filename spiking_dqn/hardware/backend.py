"""What every backend shares: its result, its protocol, the registry, and the program-side input.

* :class:`BackendResult`: what a backend returns for a batch of observations;
  :class:`InferenceStats`: running totals of such results (what a policy, an evaluation or a
  search spent).
* :class:`Backend`: the protocol of a backend (a ``name``, ``run(program, obs)`` and
  ``run_spikes(program, input_spikes)``).
* :func:`get_backend`: a backend from its name (classes are imported only when asked for,
  see :data:`BACKENDS`), or a backend object passed through unchanged.
* The input side of a chip program: the encoding of a batch for a program
  (:func:`encode_observations`, the rules of :mod:`spiking_dqn.semantics.encoding`) and the
  check of raw input spike trains (:func:`check_input_spikes`); and what backends count and
  report (:func:`synaptic_events`, :func:`warn_output_saturation`).

This module imports neither torch nor any backend.
"""

from __future__ import annotations

import importlib
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from spiking_dqn.semantics.encoding import encode_batch
from spiking_dqn.hardware.program import ChipProgram

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendResult",
    "InferenceStats",
    "check_input_spikes",
    "encode_observations",
    "get_backend",
    "run_observations",
    "synaptic_events",
    "warn_output_saturation",
]


@dataclass
class BackendResult:
    """What a backend returns for a batch of observations.

    :param voltages: output membrane voltages after the last tick, ``(batch, n_actions)``
        float32, in chip units (divide by ``program.lambdas[-1]`` for Q-values)
    :param actions: ``argmax`` of the voltages, ``(batch,)`` int64
    :param spike_counts: spikes emitted over the ticks, one ``(batch, n)`` int64 array per
        population: the input neurons (``2d``) first, then each hidden layer, then the output
    :param synaptic_events: ``(batch,)`` int64, the number of synaptic deliveries per
        observation: for every projection, every spike that arrives at the post population
        within the ticks counts once per nonzero outgoing weight of its neuron (its
        fan-out), i.e. ``sum_k sum_i arrived_k[i] * nnz(weights[k][:, i])``. Spikes emitted
        in the last ``delay`` ticks never arrive and are not counted.
    :param output_saturated: ``(batch,)`` bool, True where an output neuron crossed its
        threshold at some tick and was reset, so its voltage is no longer a plain sum
    :param ticks: ticks simulated
    :param wall_time_s: measured wall-clock time of the whole batch, in seconds
    :param backend: name of the backend that produced the result
    :param spike_trains: per-tick spikes, one ``(ticks, batch, n)`` bool array per
        population (input, each hidden layer, output); only when the backend was asked to
        record them (``run(..., record_trains=True)`` or ``run_spikes(..., record_trains=True)``
        on the emulator, the brian2 and the spinnaker2 backends), else None
    :param voltage_trace: output voltages after every tick (after any reset),
        ``(ticks, batch, n_actions)`` float32; only with ``record_voltages=True``, else None
    """

    voltages: np.ndarray
    actions: np.ndarray
    spike_counts: list[np.ndarray]
    synaptic_events: np.ndarray
    output_saturated: np.ndarray
    ticks: int
    wall_time_s: float | None = None
    backend: str = "emulator"
    spike_trains: list[np.ndarray] | None = None
    voltage_trace: np.ndarray | None = None

    @property
    def batch_size(self) -> int:
        """Number of observations."""
        return int(self.voltages.shape[0])

    def q_values(self, program: ChipProgram) -> np.ndarray:
        """Q-values in float units: the voltages divided by the output projection's lambda.

        For a program with ``centered_readout`` these are ``Q - mean over actions of Q``.

        :param program: the program that produced this result
        """
        return self.voltages / np.float32(program.lambdas[-1])


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


class Backend(Protocol):
    """An executor of chip programs: the emulator, a chip, or any object of this shape."""

    #: Short name, written into :attr:`BackendResult.backend`.
    name: str

    def run(self, program: ChipProgram, obs: Any) -> BackendResult:
        """Run ``program`` on observations ``(batch, d)`` (or one ``(d,)``).

        The backends here encode the observations (:func:`encode_observations`) and run
        the trains with :meth:`run_spikes`.

        :param program: the chip program
        :param obs: the observations
        """
        ...

    def run_spikes(self, program: ChipProgram, input_spikes: Any, record_voltages: bool = False) -> BackendResult:
        """Run ``program`` on raw input spike trains instead of encoded observations.

        :param program: the chip program
        :param input_spikes: ``(ticks, batch, n_inputs)`` bool (or 0/1 numbers), fed to the
            input population with the timing of encoded inputs (see :func:`check_input_spikes`)
        :param record_voltages: also return the output voltages after every tick
        """
        ...


class _LazyBackends(Mapping[str, type]):
    """Backend classes by name, each imported from its module on first access."""

    def __init__(self, paths: dict[str, str]) -> None:
        self._paths = paths

    def __getitem__(self, name: str) -> type:
        module, _, attribute = self._paths[name].partition(":")
        return getattr(importlib.import_module(module), attribute)

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)

    def __repr__(self) -> str:
        return f"BACKENDS({', '.join(repr(name) for name in self._paths)})"


#: Backend classes by name (``BACKENDS["emulator"]`` imports and returns ``EmulatorBackend``).
BACKENDS: Mapping[str, type] = _LazyBackends(
    {
        "emulator": "spiking_dqn.hardware.emulator:EmulatorBackend",
        "spinnaker2": "spiking_dqn.hardware.spinnaker2:SpiNNaker2Backend",
        "brian2": "spiking_dqn.hardware.brian2:Brian2Backend",
    }
)


def get_backend(backend: str | Backend = "emulator", **options: Any) -> Backend:
    """A backend from its name, or the given backend object unchanged.

    :param backend: ``"emulator"`` (default), ``"spinnaker2"``, ``"brian2"``, or an object
        with a ``run(program, obs)`` method (returned as it is)
    :param options: keyword arguments of the named backend's constructor, e.g. ``eth_ip``
        for ``"spinnaker2"``; none with a backend object
    :raises ValueError: unknown name (the available ones are listed)
    :raises TypeError: neither a name nor an object with ``run``, or options given with an object
    """
    if isinstance(backend, str):
        if backend not in BACKENDS:
            names = ", ".join(repr(name) for name in BACKENDS)
            raise ValueError(f"unknown backend {backend!r}; available backends: {names}")
        return BACKENDS[backend](**options)
    if not callable(getattr(backend, "run", None)):
        raise TypeError(
            f"backend must be a backend name ({', '.join(repr(name) for name in BACKENDS)}) or an object "
            f"with a run(program, obs) method, got {type(backend).__name__}"
        )
    if options:
        raise TypeError(
            f"backend options {sorted(options)} configure a backend built by name; "
            f"the given {type(backend).__name__} object is used as it is"
        )
    return backend


# ---------------------------------------------------------------------- observations


def encode_observations(program: ChipProgram, obs: np.ndarray) -> np.ndarray:
    """Input spike trains of a validated batch for ``program``, ``(ticks, batch, 2d)`` float32 of 0/1.

    :func:`spiking_dqn.semantics.encoding.encode_batch` with the program's bounds, ticks,
    encoding, hybrid slope and seed.

    :param program: the chip program
    :param obs: observations ``(batch, d)``, validated (see
        :func:`spiking_dqn.semantics.encoding.as_observation_batch`)
    """
    return encode_batch(obs, program.obs_bound, program.ticks, program.encoding, program.encoding_alpha, program.seed)


def run_observations(
    backend: Backend, program: ChipProgram, obs: np.ndarray, record_trains: bool = False, record_voltages: bool = False
) -> BackendResult:
    """What every backend's ``run`` is: encode a validated batch, then ``backend.run_spikes``, timed over both.

    :param backend: the backend (its ``run_spikes``)
    :param program: the chip program
    :param obs: observations ``(batch, d)``, validated (see :func:`spiking_dqn.semantics.encoding.as_observation_batch`)
    :param record_trains: also return the per-tick spike trains of every population
    :param record_voltages: also return the output voltages after every tick
    """
    start = time.perf_counter()
    inputs = encode_observations(program, obs)  # all at once: one Poisson stream per batch
    result = backend.run_spikes(program, inputs, record_voltages=record_voltages, record_trains=record_trains)
    result.wall_time_s = time.perf_counter() - start
    return result


def check_input_spikes(program: ChipProgram, input_spikes: Any) -> np.ndarray:
    """Raw input spike trains for ``program`` as a validated float32 array of 0/1.

    Row ``t`` holds the spikes the input neurons emit at tick ``t``, exactly as the encoder's
    trains (:func:`encode_observations`): with ``delay = 1`` they reach the first hidden
    population at tick ``t + 1``. Neuron ``i < d`` is the positive half of observation
    dimension ``i``, neuron ``d + i`` the negative half.

    :param program: the program the trains are for (its ticks and input neurons)
    :param input_spikes: ``(ticks, batch, n_inputs)``: bool, or integer / float numbers
        that are all 0 or 1; a torch tensor is moved to the CPU
    :return: ``(ticks, batch, n_inputs)`` float32 of 0/1 (a new array)
    :raises ValueError: not a 3-D array, a tick count or input width other than the
        program's, a non-numeric dtype, NaN, or a value other than 0 and 1
    """
    if hasattr(input_spikes, "detach"):  # a torch tensor
        input_spikes = input_spikes.detach().cpu().numpy()
    spikes = np.asarray(input_spikes)
    n_in = program.layer_sizes[0]
    expected = f"(ticks, batch, n_inputs) = ({program.ticks}, batch, {n_in})"
    if spikes.ndim != 3:
        raise ValueError(f"input_spikes must have shape {expected}, got {spikes.ndim}-D shape {spikes.shape}")
    if spikes.shape[0] != program.ticks:
        raise ValueError(
            f"input_spikes has {spikes.shape[0]} ticks but the program runs {program.ticks}: "
            f"expected shape {expected}, got {spikes.shape}"
        )
    if spikes.shape[2] != n_in:
        raise ValueError(
            f"input_spikes has {spikes.shape[2]} input neurons but the program has {n_in} (2 x obs_dim, "
            f"signed two-neuron code): expected shape {expected}, got {spikes.shape}"
        )
    if spikes.dtype == np.bool_:
        return spikes.astype(np.float32)
    if not (np.issubdtype(spikes.dtype, np.integer) or np.issubdtype(spikes.dtype, np.floating)):
        raise ValueError(f"input_spikes must be bool or 0/1 numbers, got dtype {spikes.dtype}")
    if np.issubdtype(spikes.dtype, np.floating) and np.isnan(spikes).any():
        raise ValueError("input_spikes contains NaN; spikes must be bool or 0/1")
    binary = (spikes == 0) | (spikes == 1)
    if not binary.all():
        bad = np.unique(spikes[~binary])
        raise ValueError(
            f"input_spikes must be bool or 0/1, got other values {bad[:5].tolist()}"
            f"{' ...' if bad.size > 5 else ''} ({int((~binary).sum())} entries)"
        )
    return spikes.astype(np.float32)


# ---------------------------------------------------------------------- counts and warnings


def synaptic_events(program: ChipProgram, trains: list[np.ndarray]) -> np.ndarray:
    """Synaptic deliveries per observation (see :class:`BackendResult`).

    :param program: the program
    :param trains: emitted spike trains ``(ticks, batch, n)`` of the populations that send
        a projection: the input, then each hidden layer
    :return: ``(batch,)`` int64
    """
    batch = trains[0].shape[1]
    events = np.zeros(batch, dtype=np.int64)
    last = program.ticks - program.delay  # spikes emitted at t < last arrive within the ticks
    for train, weights in zip(trains, program.weights):
        fan_out = np.count_nonzero(weights, axis=0).astype(np.int64)
        arrived = train[:last].sum(0).astype(np.int64)
        events += arrived @ fan_out
    return events


def warn_output_saturation(saturated: np.ndarray, program: ChipProgram) -> None:
    """Warn (``UserWarning``) when some observations drove an output neuron past its threshold.

    :param saturated: ``(batch,)`` bool, see :attr:`BackendResult.output_saturated`
    :param program: the program that was run
    """
    if not saturated.any():
        return
    warnings.warn(
        f"{int(saturated.sum())} of {saturated.size} observations drove an output neuron past its threshold "
        f"({float(program.thresholds[-1].min()):g}); those voltages were reset and are not plain Q-value sums "
        "(see BackendResult.output_saturated); use a smaller lambda or smaller readout weights",
        UserWarning,
        stacklevel=3,
    )
