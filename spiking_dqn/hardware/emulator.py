"""Embedded emulator of the SpiNNaker2 ``lif_no_delay`` neuron model (the default backend).

It executes a :class:`~spiking_dqn.hardware.program.ChipProgram` on a batch of
observations (``run``), or on raw input spike trains (``run_spikes``, which ``run`` calls
with the encoded observations), with exactly the semantics of ``DESIGN.md`` ("Chip
semantics"), in float32:

* encoding: ``x = clip(obs / bound, -1, 1)``, rates ``concat(max(x, 0), max(-x, 0))``,
  deterministic accumulator trains or seeded Bernoulli (Poisson) draws;
* per tick ``t`` and population, in order: ``syn`` is the sum of the int8 weights of the
  spikes that arrive at ``t`` (emitted by the previous population at ``t - delay``);
  ``v = alpha_decay * v + i_offset + syn``; spike when ``v > threshold``; then
  ``v -= threshold`` (``"subtract"``) or ``v = v_reset`` (``"zero"``);
* the output population obeys the same rule with its own (high) threshold; its voltages
  after the last tick are the result. An output neuron that crosses its threshold is
  reported in ``output_saturated`` (and warned about), never hidden.

For speed the batch is run population by population rather than tick by tick: the
synaptic input of a population for all ticks is one float32 matrix product of the 0/1
spike trains with the weights (exact, since the sums are small integers), and only the
elementwise neuron update loops over the ticks. A population's input at tick ``t`` only
depends on the previous population's spikes at ticks ``<= t``, so the order of the
updates, and every float32 operation, is the same as in a tick-by-tick loop.

Memory: a run holds every population's trains of one chunk of observations for all ticks,
and the recordings of the whole batch. Before it allocates anything, a run whose estimate
(:meth:`EmulatorBackend.memory_needed`) exceeds the backend's budget
(:data:`MEMORY_BUDGET_BYTES` by default) is refused with the figure, so a long program on a
large batch fails at once instead of exhausting the machine's memory.

Checked against the one external reference at hand, py-spinnaker2's own Brian2 backend on
one ``lif_no_delay`` neuron (``tests/data/lif_spinnaker2.csv``, ``tests/test_reference_trace.py``):
every spike at the same tick, voltages to 1e-5 relative. No chip has been run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from spiking_dqn.semantics import lif as kernels
from spiking_dqn.hardware.backend import (
    BackendResult,
    check_input_spikes,
    encode_observations,
    run_observations,
    warn_output_saturation,
)
from spiking_dqn.hardware.program import ChipProgram
from spiking_dqn.semantics.checks import check_int
from spiking_dqn.semantics.encoding import as_observation_batch

#: Default memory budget of one emulator run, in bytes (2 GiB): well inside the memory of
#: the machines this runs on (CI runners have 7 GiB and more), and about 100 times what the
#: shipped programs need for a batch of 10_000 observations. Runs estimated to need more are
#: refused before anything is allocated (see ``EmulatorBackend.memory_needed``).
MEMORY_BUDGET_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class _Layer:
    weights_t: np.ndarray  # (n_pre, n_post) float32
    fan_out: np.ndarray  # (n_pre,) int64: nonzero outgoing weights of each pre neuron
    alpha: np.ndarray  # (n,) float32
    i_offset: np.ndarray
    threshold: np.ndarray
    levels: np.ndarray  # state levels of the population (kernels.NO_LEVELS: float32 state)
    gain: np.ndarray | None  # (ticks, 1, 1) per-tick gain of the projection's input, or None


class _Compiled:
    """Float32 views of a program, prepared once and reused for every batch."""

    def __init__(self, program: ChipProgram) -> None:
        self.program = program
        self.layers = [
            _Layer(
                weights_t=np.ascontiguousarray(w.T, dtype=np.float32),
                fan_out=np.count_nonzero(w, axis=0).astype(np.int64),
                alpha=np.asarray(a, dtype=np.float32),
                i_offset=np.asarray(i, dtype=np.float32),
                threshold=np.asarray(t, dtype=np.float32),
                levels=kernels.NO_LEVELS if lv is None else np.array(lv, dtype=np.float32),
                gain=None if g is None else np.array(g, dtype=np.float32).reshape(-1, 1, 1),
            )
            for w, a, i, t, lv, g in zip(
                program.weights,
                program.alpha_decay,
                program.i_offset,
                program.thresholds,
                program.state_levels or [None] * len(program.weights),
                program.tick_gain or [None] * len(program.weights),
            )
        ]
        self.v_reset = np.float32(program.v_reset)


class EmulatorBackend:
    """Run chip programs on the CPU with the chip's neuron model, vectorised over the batch.

    :param warn_saturation: warn when an output neuron reaches its threshold
    :param memory_budget_bytes: refuse runs estimated to need more memory than this
        (:data:`MEMORY_BUDGET_BYTES` by default; see :meth:`memory_needed`)
    """

    name = "emulator"
    #: Observations simulated together (see ``run_spikes``).
    CHUNK = 256

    def __init__(self, warn_saturation: bool = True, memory_budget_bytes: int = MEMORY_BUDGET_BYTES) -> None:
        budget = check_int(memory_budget_bytes, "memory_budget_bytes", what="an integer number of bytes")
        if budget <= 0:
            raise ValueError(f"memory_budget_bytes must be positive, got {memory_budget_bytes}")
        self.warn_saturation = warn_saturation
        self.memory_budget_bytes = budget
        self._compiled: _Compiled | None = None

    def _compile(self, program: ChipProgram) -> _Compiled:
        # Programs are frozen with read-only arrays, so identity is a safe cache key.
        if self._compiled is None or self._compiled.program is not program:
            self._compiled = _Compiled(program)
        return self._compiled

    def memory_needed(
        self, program: ChipProgram, batch: int, record_trains: bool = False, record_voltages: bool = False
    ) -> int:
        """Estimated peak memory of a run, in bytes (float32 = 4 bytes, bool = 1).

        ``T`` ticks, ``B`` observations, ``c = min(B, CHUNK)``, population sizes ``n_k``
        (input first), ``N = sum n_k``, ``A`` actions:

        * the input trains of the batch, float32: ``4 T B n_0``;
        * one chunk's working set: every population's trains ``4 T c N``, plus the synaptic
          input and the membranes of the largest layer ``8 T c max n_k``;
        * recordings of the whole batch: trains ``2 T B N`` (per chunk, then joined), voltage
          traces ``8 T B A``.

        :param program: the program
        :param batch: observations in the run
        :param record_trains: the run records the spike trains
        :param record_voltages: the run records the output voltage traces
        """
        ticks, sizes = program.ticks, program.layer_sizes
        chunk = max(min(batch, self.CHUNK), 1)
        total = 4 * ticks * batch * sizes[0]
        total += 4 * ticks * chunk * sum(sizes) + 8 * ticks * chunk * max(sizes[1:])
        if record_trains:
            total += 2 * ticks * batch * sum(sizes)
        if record_voltages:
            total += 8 * ticks * batch * program.n_actions
        return int(total)

    def _check_memory(self, program: ChipProgram, batch: int, record_trains: bool, record_voltages: bool) -> None:
        needed = self.memory_needed(program, batch, record_trains, record_voltages)
        if needed > self.memory_budget_bytes:
            gib = 1024**3
            raise ValueError(
                f"this run would need about {needed / gib:.2f} GiB ({program.ticks} ticks x {batch} observations x "
                f"populations {program.layer_sizes}"
                f"{', recording trains' if record_trains else ''}{', recording voltages' if record_voltages else ''}), "
                f"over the emulator's memory budget of {self.memory_budget_bytes / gib:.2f} GiB: run fewer "
                "observations at a time, record less, or raise EmulatorBackend(memory_budget_bytes=...)"
            )

    def _simulate(
        self,
        compiled: _Compiled,
        program: ChipProgram,
        inputs: np.ndarray,
        record_voltages: bool,
        ranges: list[list[float]] | None = None,
    ) -> tuple[np.ndarray, list[np.ndarray], np.ndarray, list[np.ndarray], np.ndarray | None]:
        """Simulate one chunk of input spike trains ``(T, chunk, 2d)``.

        :param ranges: when given, ``[min, max]`` per population of the membrane kept after
            each tick (after reset and state levels), widened in place by this chunk's
        :return: output voltages, spike counts per population, synaptic events, spike
            trains per population, output voltage trace (or None)
        """
        trains = [inputs]
        ticks, delay, batch = program.ticks, program.delay, inputs.shape[1]
        subtract = program.reset == "subtract"
        trace = np.empty((ticks, batch, program.n_actions), dtype=np.float32) if record_voltages else None
        last_layer = compiled.layers[-1]
        for layer in compiled.layers:
            pre = trains[-1]
            n_pre, n_post = layer.weights_t.shape
            syn = np.empty((ticks, batch, n_post), dtype=np.float32)
            syn[:delay] = 0.0
            if ticks > delay:
                # What arrives at tick t was emitted at t - delay.
                np.matmul(pre[: ticks - delay].reshape(-1, n_pre), layer.weights_t, out=syn[delay:].reshape(-1, n_post))
            if layer.gain is not None:
                syn *= layer.gain  # the projection's gain of each arrival tick (TaWQ), in float32
            # Per tick and neuron: v = alpha * v + i_offset + syn_t; spike if v > threshold;
            # reset (subtract the threshold, or set to v_reset), in this float32 order; then
            # the kept membrane becomes its nearest state level, where the population has levels.
            keep_pre = (trace is not None and layer is last_layer) or ranges is not None
            pre_v, out, v = kernels.lif_forward(
                syn, layer.alpha, layer.i_offset, layer.threshold, subtract, compiled.v_reset, keep_pre, layer.levels
            )
            if keep_pre:
                # Membrane after each tick's reset: pre - threshold where fired (exactly the
                # kernel's float32 value), else pre; to v_reset where fired; then its level.
                kept = np.where(out > 0, pre_v - layer.threshold if subtract else compiled.v_reset, pre_v)
                if layer.levels.size:
                    kept = kernels.nearest_levels(layer.levels, kept)
                if trace is not None and layer is last_layer:
                    trace[:] = kept
                if ranges is not None and kept.size:
                    k = len(trains) - 1
                    ranges[k] = [min(ranges[k][0], float(kept.min())), max(ranges[k][1], float(kept.max()))]
            trains.append(out)
        # Spikes emitted before tick ``ticks - delay`` arrive within the ticks (synaptic
        # events, see ``synaptic_events``); the rest only add to the counts. Sums of 0/1
        # float32 over the ticks are exact.
        last = ticks - delay
        events = np.zeros(batch, dtype=np.int64)
        counts = []
        for train, layer in zip(trains[:-1], compiled.layers):
            arrived = train[:last].sum(0)
            events += arrived.astype(np.int64) @ layer.fan_out
            if last < ticks:
                arrived += train[last:].sum(0)
            counts.append(arrived.astype(np.int64))
        counts.append(trains[-1].sum(0).astype(np.int64))
        return v, counts, events, trains, trace

    def membrane_ranges(self, program: ChipProgram, obs: Any) -> list[tuple[float, float]]:
        """``(min, max)`` of every population's kept membrane (after reset) over all ticks of a batch of observations.

        The range the state levels of :mod:`spiking_dqn.quantization.levels` span (SQUAT:
        clipping below the range reached in full precision hurts); the output's is its
        integrator voltage.

        :param program: the chip program (with or without state levels)
        :param obs: observations ``(batch, d)``
        :raises ValueError: bad observations; a run over the memory budget
        """
        obs = as_observation_batch(obs, program.obs_dim)
        self._check_memory(program, min(obs.shape[0], self.CHUNK), True, True)
        inputs = encode_observations(program, obs)
        compiled = self._compile(program)
        ranges = [[np.inf, -np.inf] for _ in program.weights]
        for i in range(0, max(inputs.shape[1], 1), self.CHUNK):
            self._simulate(compiled, program, inputs[:, i : i + self.CHUNK], False, ranges)
        return [(lo, hi) for lo, hi in ranges]

    def run(
        self, program: ChipProgram, obs: Any, record_trains: bool = False, record_voltages: bool = False
    ) -> BackendResult:
        """Run a batch of observations: encode them, then :meth:`run_spikes`.

        :param program: the chip program
        :param obs: observations ``(batch, d)``, or a single one ``(d,)``
        :param record_trains: also return the per-tick spike trains of every population
            (``BackendResult.spike_trains``)
        :param record_voltages: also return the output voltages after every tick
            (``BackendResult.voltage_trace``)
        :return: output voltages, actions and activity; ``wall_time_s`` includes the encoding
        :raises ValueError: observations of the wrong width, or with NaN / inf entries; a
            run over the memory budget
        """
        obs = as_observation_batch(obs, program.obs_dim)
        self._check_memory(program, obs.shape[0], record_trains, record_voltages)
        return run_observations(self, program, obs, record_trains, record_voltages)

    def run_spikes(
        self, program: ChipProgram, input_spikes: Any, record_voltages: bool = False, record_trains: bool = False
    ) -> BackendResult:
        """Run raw input spike trains, fed to the input population in place of encoded observations.

        :param program: the chip program
        :param input_spikes: ``(ticks, batch, 2d)`` bool or 0/1 numbers; row ``t`` is what the
            input neurons emit at tick ``t`` (see :func:`~spiking_dqn.hardware.backend.check_input_spikes`)
        :param record_voltages: also return the output voltages after every tick
            (``BackendResult.voltage_trace``)
        :param record_trains: also return the per-tick spike trains of every population
            (``BackendResult.spike_trains``; the input's is ``input_spikes`` as bool)
        :return: output voltages, actions and activity
        :raises ValueError: trains of the wrong shape, tick count or values; a run over the
            memory budget
        """
        start = time.perf_counter()
        shape = np.shape(input_spikes)
        if len(shape) == 3:  # refuse before the validated copy is made; a bad shape is named below
            self._check_memory(program, shape[1], record_trains, record_voltages)
        inputs = check_input_spikes(program, input_spikes)
        compiled = self._compile(program)
        # Chunks of CHUNK observations keep each tick's (chunk, n) arrays in the CPU cache.
        parts = []
        for i in range(0, max(inputs.shape[1], 1), self.CHUNK):
            v, counts, events, trains, trace = self._simulate(
                compiled, program, inputs[:, i : i + self.CHUNK], record_voltages
            )
            parts.append((v, counts, events, [t.astype(bool) for t in trains] if record_trains else None, trace))
        voltages = np.concatenate([part[0] for part in parts])
        counts = [np.concatenate([part[1][k] for part in parts]) for k in range(len(parts[0][1]))]
        events = np.concatenate([part[2] for part in parts])
        trains = (
            [np.concatenate([part[3][k] for part in parts], axis=1) for k in range(len(parts[0][3]))]
            if record_trains
            else None
        )
        trace = np.concatenate([part[4] for part in parts], axis=1) if record_voltages else None
        saturated = counts[-1].any(axis=1)
        if self.warn_saturation:
            warn_output_saturation(saturated, program)
        return BackendResult(
            voltages=voltages,
            actions=np.argmax(voltages, axis=1).astype(np.int64),
            spike_counts=counts,
            synaptic_events=events,
            output_saturated=saturated,
            ticks=program.ticks,
            wall_time_s=time.perf_counter() - start,
            backend=self.name,
            spike_trains=trains,
            voltage_trace=trace,
        )
