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

A chunk of observations runs as one compiled call,
:func:`~spiking_dqn.semantics.chip_kernels.chip_forward`, through the loop nest the float
network's layers run (:func:`~spiking_dqn.semantics.network_kernels.layer_ticks`) with the
chip's options, population by population rather than tick by tick: event-driven, the
synaptic input of a tick is the sum of the weight rows of the spikes that arrive (exact,
since the weights are integers; a narrow population such as the output sums all its inputs
densely, which is as exact), and the neuron update is
:func:`~spiking_dqn.semantics.lif.lif_tick`. A population's input at tick ``t`` only
depends on the previous population's spikes at ticks ``<= t``, so the order of the
updates, and every float32 operation, is the same as in a tick-by-tick loop.

Threads: with ``EmulatorBackend(threads=n)`` (``None``: the CPUs the process may use), a batch
of at least ``2 x PER_THREAD`` observations runs on up to ``n`` threads at once (the kernels
release the GIL): its observations are cut into pieces that the calling thread and worker
threads take one at a time (:func:`~spiking_dqn.semantics.chip_kernels.chip_range`), each
writing its own observations' results. Every observation is computed alone, so the results
do not depend on the thread count, bit for bit. The default is one thread, the calling one:
on idle cores two threads ran a batch of 1024 about 1.5 times as fast (best rounds of
``benchmarks/emulator_throughput.py``), but on a machine whose other work already keeps
every core busy they ran it slower than one (a thread held back by the machine holds
back the run), so more threads are the user's choice.

Memory: a run holds every population's trains of one chunk of observations per thread for all ticks,
and the recordings of the whole batch. Before it allocates anything, a run whose estimate
(:meth:`EmulatorBackend.memory_needed`) exceeds the backend's budget
(:data:`MEMORY_BUDGET_BYTES` by default) is refused with the figure, so a long program on a
large batch fails at once instead of exhausting the machine's memory.

Checked against the one external reference at hand, py-spinnaker2's own Brian2 backend on
one ``lif_no_delay`` neuron (``tests/data/lif_spinnaker2.csv``, ``tests/test_reference_trace.py``):
every spike at the same tick, voltages to 1e-5 relative. No chip has been run.
"""

from __future__ import annotations

import itertools
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from spiking_dqn.hardware.backend import (
    BackendResult,
    check_input_spikes,
    encode_observations,
    warn_output_saturation,
)
from spiking_dqn.hardware.program import ChipProgram
from spiking_dqn.semantics.chip_kernels import ChipArrays, ChipRun, chip_forward, chip_outputs, chip_range, scratch_size
from spiking_dqn.semantics.checks import check_int
from spiking_dqn.semantics.encoding import as_observation_batch

#: Default memory budget of one emulator run, in bytes (2 GiB): well inside the memory of
#: the machines this runs on (CI runners have 7 GiB and more), and about 100 times what the
#: shipped programs need for a batch of 10_000 observations. Runs estimated to need more are
#: refused before anything is allocated (see ``EmulatorBackend.memory_needed``).
MEMORY_BUDGET_BYTES = 2 * 1024**3


def available_cpus() -> int:
    """Logical CPUs this process may run on (its affinity), the emulator's default thread count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    """The process's worker threads for the parts of a batch (made at the first threaded run)."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=max(available_cpus(), 2) - 1, thread_name_prefix="spiking-dqn-emulator")
    return _POOL


class _Compiled:
    """A program's arrays as :func:`chip_forward` takes them, prepared once and reused for every batch."""

    #: Working memory kept between runs, at most this many float32 entries (16 MiB).
    KEEP_SCRATCH = 4 * 1024**2
    #: Observations a thread of a threaded run takes at a time (at most).
    PIECE = 128

    def __init__(self, program: ChipProgram) -> None:
        self.program = program
        self.arrays = ChipArrays.of(
            program.weights,
            program.alpha_decay,
            program.i_offset,
            program.thresholds,
            program.state_levels,
            program.tick_gain,
            program.ticks,
        )
        self.options = (program.reset == "subtract", np.float32(program.v_reset), int(program.delay))
        self._spare: list[np.ndarray] = []
        starts = np.cumsum([0, *program.layer_sizes]).tolist()
        #: Where each population starts and ends in the populations' concatenation.
        self.bounds = list(zip(starts[:-1], starts[1:]))

    def _scratch(self, size: int) -> np.ndarray:
        """Working memory of at least ``size`` float32 entries: a spare one, or new."""
        try:
            scratch = self._spare.pop()  # atomic: a buffer serves one run at a time
        except IndexError:
            return np.empty(size, dtype=np.float32)
        return scratch if scratch.size >= size else np.empty(size, dtype=np.float32)

    def _release(self, scratch: np.ndarray) -> None:
        if scratch.size <= self.KEEP_SCRATCH:
            self._spare.append(scratch)

    def run(
        self, inputs: np.ndarray, chunk: int, record_trains: bool = False, record_ranges: bool = False, parts: int = 1
    ) -> ChipRun:
        """:func:`chip_forward` on input trains ``(T, batch, n_0)``, ``chunk`` observations at a time.

        With ``parts > 1`` the batch is cut into pieces of about :data:`PIECE` observations
        that this thread and ``parts - 1`` worker threads take one at a time and run with
        :func:`chip_range` (the kernels release the GIL), so that a thread the machine
        holds back delays the run by one piece at most; each observation is computed alone,
        so the results are the same bit for bit. The working memory is reused from run to run (fresh pages cost more
        than the arithmetic); concurrent runs and parts each take their own.
        """
        ticks, batch = inputs.shape[0], inputs.shape[1]
        if parts <= 1:
            scratch = self._scratch(scratch_size(self.arrays.sizes, ticks, batch, chunk, record_ranges))
            try:
                outputs = chip_forward(inputs, *self.arrays, *self.options, chunk, record_trains, record_ranges, scratch)
                return ChipRun(*outputs)
            finally:
                self._release(scratch)
        outputs = chip_outputs(self.arrays.sizes, ticks, batch, record_trains)
        pieces = -(-batch // self.PIECE)
        cuts = [batch * k // pieces for k in range(pieces + 1)]
        taken = itertools.count()  # next() on it is atomic: each piece is run once
        size = scratch_size(self.arrays.sizes, ticks, -(-batch // pieces), chunk, record_ranges)  # the longest piece

        def work(ranges: np.ndarray) -> np.ndarray:
            scratch = self._scratch(size)
            try:
                while (k := next(taken)) < pieces:
                    chip_range(inputs, *self.arrays, *self.options, chunk, record_trains, record_ranges, scratch,
                               cuts[k], cuts[k + 1], *outputs[:5], ranges)
            finally:
                self._release(scratch)
            return ranges

        helpers = [_pool().submit(work, np.copy(outputs[5])) for _ in range(parts - 1)]
        ranges = work(outputs[5])
        for helper in helpers:
            if helper.cancel():  # not started: this thread ran its pieces
                continue
            other = helper.result()  # min and max are exact in any order
            np.minimum(ranges[:, 0], other[:, 0], out=ranges[:, 0])
            np.maximum(ranges[:, 1], other[:, 1], out=ranges[:, 1])
        return ChipRun(*outputs)

    def blocks(self, flat: np.ndarray, lead: tuple[int, ...]) -> list[np.ndarray]:
        """Each population's block of one of :class:`ChipRun`'s flat arrays, shaped ``(*lead, n_p)``."""
        size = 1
        for n in lead:
            size *= n
        return [flat[size * a : size * b].reshape(*lead, b - a) for a, b in self.bounds]


class EmulatorBackend:
    """Run chip programs on the CPU with the chip's neuron model, vectorised over the batch.

    :param warn_saturation: warn when an output neuron reaches its threshold
    :param memory_budget_bytes: refuse runs estimated to need more memory than this
        (:data:`MEMORY_BUDGET_BYTES` by default; see :meth:`memory_needed`)
    :param threads: threads a large batch runs on, at least :data:`PER_THREAD`
        observations each (default 1; ``None``: the CPUs this process may use,
        :func:`available_cpus`); the results do not depend on it
    """

    name = "emulator"
    #: Observations simulated together (see ``run_spikes``).
    CHUNK = 256
    #: Fewest observations a thread of a run takes (a smaller part costs more to hand over than it saves).
    PER_THREAD = 128

    def __init__(
        self, warn_saturation: bool = True, memory_budget_bytes: int = MEMORY_BUDGET_BYTES, threads: int | None = 1
    ) -> None:
        budget = check_int(memory_budget_bytes, "memory_budget_bytes", what="an integer number of bytes")
        if budget <= 0:
            raise ValueError(f"memory_budget_bytes must be positive, got {memory_budget_bytes}")
        threads = available_cpus() if threads is None else check_int(threads, "threads", minimum=1)
        self.warn_saturation = warn_saturation
        self.memory_budget_bytes = budget
        self.threads = threads
        self._compiled: _Compiled | None = None

    def parts(self, batch: int) -> int:
        """Threads a run of ``batch`` observations takes: ``threads``, or fewer so that each has :data:`PER_THREAD`."""
        return max(1, min(self.threads, batch // self.PER_THREAD))

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
        (input first), ``N = sum n_k``, ``A`` actions, ``h`` threads (:meth:`parts`):

        * the input trains of the batch, float32: ``4 T B n_0``;
        * one chunk's working set per thread: every population's trains ``4 T c N``, plus
          membranes and counts, at most ``8 T c max n_k``;
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
        total += self.parts(batch) * (4 * ticks * chunk * sum(sizes) + 8 * ticks * chunk * max(sizes[1:]))
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
        run = self._compile(program).run(inputs, self.CHUNK, record_ranges=True, parts=self.parts(obs.shape[0]))
        return [(float(lo), float(hi)) for lo, hi in run.ranges]

    def run(
        self, program: ChipProgram, obs: Any, record_trains: bool = False, record_voltages: bool = False
    ) -> BackendResult:
        """Run a batch of observations: encode them, then run the trains as :meth:`run_spikes` does.

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
        # As run_observations, without check_input_spikes' passes over trains that the
        # encoder makes 0/1 (the float model does not check them either).
        start = time.perf_counter()
        return self._execute(program, encode_observations(program, obs), record_trains, record_voltages, start)

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
        return self._execute(program, check_input_spikes(program, input_spikes), record_trains, record_voltages, start)

    def _execute(
        self, program: ChipProgram, inputs: np.ndarray, record_trains: bool, record_voltages: bool, start: float
    ) -> BackendResult:
        """Run validated input trains ``(T, batch, 2d)``, ``CHUNK`` observations at a time; timed from ``start``."""
        compiled = self._compile(program)
        run = compiled.run(inputs, self.CHUNK, record_trains, parts=self.parts(inputs.shape[1]))
        counts = compiled.blocks(run.counts, (run.events.size,))
        saturated = counts[-1].any(axis=1)
        if self.warn_saturation:
            warn_output_saturation(saturated, program)
        return BackendResult(
            voltages=run.voltages,
            actions=np.argmax(run.voltages, axis=1).astype(np.int64, copy=False),
            spike_counts=counts,
            synaptic_events=run.events,
            output_saturated=saturated,
            ticks=program.ticks,
            wall_time_s=time.perf_counter() - start,
            backend=self.name,
            spike_trains=compiled.blocks(run.trains, (program.ticks, run.events.size)) if record_trains else None,
            voltage_trace=run.trace if record_voltages else None,
        )

