"""Brian2 backend: a chip program run by the Brian2 simulator, independently of the emulator.

py-spinnaker2 checks its chip against a software backend built on Brian2; this backend does
the same for the emulator: it runs a :class:`~spiking_dqn.hardware.program.ChipProgram`
with Brian2's own objects and scheduler, so that an agreement between the two is an
agreement between two executors that share no simulation code. It is slow (a Brian2 run
per chunk of observations, with Brian2's per-step overhead) and meant for cross-checks,
not for training. Brian2 is an optional dependency (``pip install 'spiking-dqn[brian2]'``),
imported only when a program runs; its ``numpy`` code generation target is used, so no
compiler is needed.

The network, one Brian2 time step per tick (``dt`` = 1 ms; only the step count matters),
``B`` copies of every population side by side (neuron ``b * n + j`` is neuron ``j`` of
observation ``b``):

* input: a ``SpikeGeneratorGroup`` of ``B * 2d`` neurons; a spike at tick ``t`` is emitted
  at step ``t``;
* every hidden layer and the output: a ``NeuronGroup`` with float32 variables ``v`` (the
  membrane), ``syn`` (the weights arrived since the last update), ``alpha``, ``i_offset``
  and ``thr``, and no differential equation: the ``lif_no_delay`` update is an explicit
  per-step rule (``run_regularly`` in the ``groups`` slot), one float32 operation per
  statement, in the chip's order: ``v = alpha * v``, ``v = v + i_offset``, ``v = v + syn``,
  ``syn = 0``; Brian2's threshold ``v > thr`` (strict) and reset ``v = v - thr`` or
  ``v = v_reset`` follow in its ``thresholds`` and ``resets`` slots;
* every projection: ``Synapses`` with ``on_pre: syn_post += w`` (float32 copies of the int8
  weights, nonzero ones only), Brian2 delay ``(program.delay - 1)`` ticks. Brian2 delivers a
  spike in its ``synapses`` slot, after that step's update, so it enters the next step's
  update: Brian2 delay 0 is a one-tick propagation, the emulator's ``delay = 1`` (and
  py-spinnaker2's delay 0). A ``delay=0`` program (same-tick propagation) cannot be built
  this way and is refused;
* ``SpikeMonitor`` on every population (counts, trains, synaptic events), a ``StateMonitor``
  of the output ``v`` at the end of every step, i.e. after that tick's reset.

The network is built once per program and chunk size and reset with ``store``/``restore``
between runs. Verified: identical spikes and float32-equal voltages to the emulator on
random and on the shipped programs (``tests/test_brian2_backend.py``), and the recorded
trace of py-spinnaker2's Brian2 backend (``tests/test_reference_trace.py``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from spiking_dqn.hardware.backend import (
    BackendResult,
    check_input_spikes,
    run_observations,
    synaptic_events,
    warn_output_saturation,
)
from spiking_dqn.hardware.program import ChipProgram
from spiking_dqn.semantics.checks import check_int
from spiking_dqn.semantics.encoding import as_observation_batch

_INSTALL_HINT = (
    "Brian2 is needed for the brian2 backend: pip install 'spiking-dqn[brian2]' (or pip install brian2), "
    "or use the 'emulator' backend, which needs nothing more"
)

#: The state variables of a population, all float32 like the chip's neuron state.
_NEURON_EQUATIONS = """
v : 1
syn : 1
alpha : 1 (constant)
i_offset : 1 (constant)
thr : 1 (constant)
v_reset : 1 (shared, constant)
"""
_FLOAT32 = {name: np.float32 for name in ("v", "syn", "alpha", "i_offset", "thr", "v_reset")}
#: The per-tick ``lif_no_delay`` update, one float32 operation per statement, in the chip's order.
_UPDATE = "v = alpha * v\nv = v + i_offset\nv = v + syn\nsyn = 0"
_RESET = {"subtract": "v = v - thr", "zero": "v = v_reset"}


def import_brian2() -> ModuleType:
    """The ``brian2`` module, imported on demand, with the ``numpy`` code generation target.

    :raises ImportError: Brian2 is not installed (the message says how to get it)
    """
    try:
        import brian2
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    brian2.prefs.codegen.target = "numpy"
    return brian2


@dataclass
class _Built:
    """The Brian2 objects of one program for a chunk of ``batch`` observations."""

    network: Any
    input_group: Any
    spike_monitors: list[Any]  # input, each hidden layer, output
    voltage_monitor: Any
    batch: int
    tick: Any  # the time step, a Brian2 quantity


def _build(b2: ModuleType, program: ChipProgram, batch: int) -> _Built:
    """Brian2 network of ``program`` for ``batch`` observations, stored as ``"initial"``.

    :param b2: the brian2 module
    :param program: the chip program (``delay >= 1``)
    :param batch: observations simulated side by side
    """
    tick = 1 * b2.ms
    sizes = program.layer_sizes
    offsets = np.arange(batch, dtype=np.int64)[:, None]
    source = b2.SpikeGeneratorGroup(
        batch * sizes[0], np.zeros(0, dtype=np.int64), np.zeros(0) * b2.second, dt=tick, name="input"
    )
    objects: list[Any] = [source]
    monitors = [b2.SpikeMonitor(source, name="input_spikes")]
    for k, w in enumerate(program.weights):
        n_post, n_pre = w.shape
        group = b2.NeuronGroup(
            batch * n_post,
            _NEURON_EQUATIONS,
            threshold="v > thr",
            reset=_RESET[program.reset],
            dtype=_FLOAT32,
            dt=tick,
            name=f"population{k + 1}",
        )
        group.alpha = np.tile(program.alpha_decay[k], batch)
        group.i_offset = np.tile(program.i_offset[k], batch)
        group.thr = np.tile(program.thresholds[k], batch)
        group.v_reset = np.float32(program.v_reset)
        group.run_regularly(_UPDATE, dt=tick, when="groups", name=f"population{k + 1}_update")
        post, pre = np.nonzero(w)
        synapses = b2.Synapses(
            source,
            group,
            "w : 1 (constant)",
            on_pre="syn_post += w",
            delay=(program.delay - 1) * tick,
            dtype={"w": np.float32},
            dt=tick,
            name=f"projection{k}",
        )
        synapses.connect(i=(offsets * n_pre + pre).ravel(), j=(offsets * n_post + post).ravel())
        synapses.w = np.tile(w[post, pre].astype(np.float32), batch)
        objects += [group, synapses]
        monitors.append(b2.SpikeMonitor(group, name=f"population{k + 1}_spikes"))
        source = group
    voltage = b2.StateMonitor(source, "v", record=True, when="end", dt=tick, name="output_voltage")
    network = b2.Network(*objects, *monitors, voltage)
    network.store("initial")
    return _Built(network, objects[0], monitors, voltage, batch, tick)


class Brian2Backend:
    """Run chip programs with the Brian2 simulator (slow; an independent check of the emulator).

    :param chunk: observations simulated together in one Brian2 network (networks are built
        once per program and chunk size, so a batch of any size uses at most two)
    :param warn_saturation: warn when an output neuron reaches its threshold
    :raises ValueError: a chunk size below 1
    """

    name = "brian2"

    def __init__(self, chunk: int = 32, warn_saturation: bool = True) -> None:
        self.chunk = check_int(chunk, "chunk", minimum=1)
        self.warn_saturation = warn_saturation
        self._program: ChipProgram | None = None
        self._built: dict[int, _Built] = {}

    def _network(self, b2: ModuleType, program: ChipProgram, batch: int) -> _Built:
        # Programs are frozen with read-only arrays, so identity is a safe cache key.
        if self._program is not program:
            self._program, self._built = program, {}
        if batch not in self._built:
            self._built[batch] = _build(b2, program, batch)
        return self._built[batch]

    def run(
        self, program: ChipProgram, obs: Any, record_trains: bool = False, record_voltages: bool = False
    ) -> BackendResult:
        """Run a batch of observations: encode them, then :meth:`run_spikes`.

        :param program: the chip program
        :param obs: observations ``(batch, d)``, or a single one ``(d,)``
        :param record_trains: also return the per-tick spike trains of every population
        :param record_voltages: also return the output voltages after every tick
        :raises ValueError: bad observations; a ``delay=0`` program
        :raises ImportError: Brian2 is not installed
        """
        obs = as_observation_batch(obs, program.obs_dim)
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
            (``BackendResult.spike_trains``, read from Brian2's spike monitors)
        :raises ValueError: bad trains; a ``delay=0`` program (same-tick propagation)
        :raises ImportError: Brian2 is not installed
        """
        start = time.perf_counter()
        inputs = check_input_spikes(program, input_spikes)
        if program.state_levels is not None or program.tick_gain is not None:
            raise ValueError(
                "the brian2 backend runs the chip's float32 lif_no_delay neurons: it does not execute membrane state "
                "levels (state_levels) or per-tick gains (tick_gain); use the 'emulator' backend for this program"
            )
        if program.delay < 1:
            raise ValueError(
                "the brian2 backend runs the chip's one-tick propagation (Brian2 delivers a spike after the "
                "update of the step it is emitted in), so it cannot run a delay=0 program; use the 'emulator' "
                "backend for it"
            )
        b2 = import_brian2()
        ticks, batch = program.ticks, inputs.shape[1]
        sizes = program.layer_sizes
        trains = [np.zeros((ticks, batch, n), dtype=np.float32) for n in sizes]
        trace = np.zeros((ticks, batch, program.n_actions), dtype=np.float32)
        for first in range(0, batch, self.chunk):
            part = inputs[:, first : first + self.chunk]
            n_obs = part.shape[1]
            built = self._network(b2, program, n_obs)
            built.network.restore("initial")
            t, b, i = np.nonzero(part)
            built.input_group.set_spikes(b * sizes[0] + i, t * built.tick)
            built.network.run(ticks * built.tick, namespace={})
            for k, (monitor, n) in enumerate(zip(built.spike_monitors, sizes)):
                step = np.rint(np.asarray(monitor.t_) / float(built.tick)).astype(np.int64)
                index = np.asarray(monitor.i, dtype=np.int64)
                trains[k][step, first + index // n, index % n] = 1.0
            # StateMonitor.v: (neurons, steps), neuron b * n_actions + a.
            v = np.asarray(built.voltage_monitor.v, dtype=np.float32)
            trace[:, first : first + n_obs] = v.T.reshape(ticks, n_obs, program.n_actions)
        counts = [train.sum(0).astype(np.int64) for train in trains]
        saturated = counts[-1].any(axis=1)
        if self.warn_saturation:
            warn_output_saturation(saturated, program)
        voltages = trace[-1].copy()
        return BackendResult(
            voltages=voltages,
            actions=np.argmax(voltages, axis=1).astype(np.int64),
            spike_counts=counts,
            synaptic_events=synaptic_events(program, trains[:-1]),
            output_saturated=saturated,
            ticks=ticks,
            wall_time_s=time.perf_counter() - start,
            backend=self.name,
            spike_trains=[train.astype(bool) for train in trains] if record_trains else None,
            voltage_trace=trace if record_voltages else None,
        )
