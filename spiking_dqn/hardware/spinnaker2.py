"""SpiNNaker2 backend: run a chip program on a SpiNNaker2 chip through py-spinnaker2.

py-spinnaker2 (``from spinnaker2 import hardware, snn``) is not on PyPI; it is installed
from its own repository (see the ``spinnaker2`` extra of spiking-dqn) and is imported
lazily, only when a program is run, so the rest of the package works without it.

The translation follows the py-spinnaker2 API as used by its examples and by its NIR
converter (``spinnaker2/s2_nir.py``):

* input: ``snn.Population(size=2d, neuron_model="spike_list", params={i: [ticks]})``;
* every hidden layer and the output: ``snn.Population(size=n, neuron_model="lif_no_delay",
  params={"threshold", "alpha_decay", "i_offset", "v_reset", "reset"})`` where ``reset``
  is ``"reset_by_subtraction"`` or ``"reset_to_v_reset"``; hidden populations record
  ``["spikes"]``, the output records ``["v", "spikes"]`` (the voltages are the result;
  the spikes show an output that reached its threshold);
* ``snn.Projection(pre, post, connections=[[pre, post, weight, delay], ...])`` with the
  nonzero int8 weights only (8-bit programs as always; a program with narrower
  projections must fit the ``lif`` model's +-15, see :func:`check_chip_weights`);
* ``snn.Network`` with everything added, run by ``hardware.SpiNNaker2Chip(eth_ip=...)``
  as ``hw.run(net, ticks)``; ``get_voltages()`` gives, per neuron, one value per tick and
  the last one is the Q-value (in units of the output lambda).

Delay semantics. py-spinnaker2's connection delay counts the ticks *beyond the first*: a
spike sent over a connection written with delay 0 arrives at the next tick. The backend
therefore writes ``program.delay - 1``, i.e. 0 for the default one-tick delay, into every
connection (:func:`chip_connection_delay`), and refuses a ``delay=0`` program (spikes
arriving in the tick they are emitted), which the chip cannot run; ``connection_delay``
overrides the written value, for experiments only.

What was verified, and against what. The one external reference at hand is a trace that
the NIR paper's authors recorded with py-spinnaker2's own software backend (Brian2) of one
``lif_no_delay`` neuron fed over a delay-0 connection (``tests/data/lif_spinnaker2.csv``).
The emulator and the brian2 backend both reproduce it from a one-neuron program with
``delay = 1`` (every spike at the same tick, voltages to 1e-5 relative,
``tests/test_reference_trace.py``): that settles the update and reset order and that
delay 0 on py-spinnaker2 is the emulator's ``delay = 1``. The translation into
py-spinnaker2 objects (:func:`build_network`, the connection lists) is tested against a
stand-in ``snn`` module that applies that delay rule. Not verified: a real chip (none was
attached when this was written), and py-spinnaker2 itself (its source was not reachable):
if a chip differs, the on-chip threshold search is what absorbs it.
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
from spiking_dqn.hardware.mapping import require_fits_one_chip
from spiking_dqn.semantics.encoding import as_observation_batch
from spiking_dqn.hardware.program import ChipProgram
from spiking_dqn.semantics.widths import DEFAULT_WEIGHT_BITS, weight_limit

#: The narrow weight format of the chip as this project knows it (docs/DESIGN.md, "What is
#: known about SpiNNaker2"): the ``lif`` model stores a 4-bit magnitude and a sign, i.e. 5-bit
#: symmetric weights in [-15, 15].
LIF_WEIGHT_BITS = 5
LIF_WEIGHT_LIMIT = weight_limit(LIF_WEIGHT_BITS)

#: py-spinnaker2's names of the two reset mechanisms.
S2_RESET = {"subtract": "reset_by_subtraction", "zero": "reset_to_v_reset"}

_INSTALL_HINT = (
    "py-spinnaker2 (the 'spinnaker2' Python package) is needed for the SpiNNaker2 backend. It is not on "
    "PyPI: install it from its own repository (py-spinnaker2 of the SpiNNaker2 project, see the "
    "'spinnaker2' extra of spiking-dqn), or use the 'emulator' backend, which needs no chip"
)


class ChipConnectionError(RuntimeError):
    """The SpiNNaker2 chip could not be reached or did not complete a run."""


def import_spinnaker2() -> tuple[ModuleType, ModuleType]:
    """``(hardware, snn)`` from py-spinnaker2, imported on demand.

    :raises ImportError: py-spinnaker2 is not installed (the message says how to get it)
    """
    try:
        from spinnaker2 import hardware, snn  # type: ignore[import-not-found]
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    return hardware, snn


@dataclass
class S2Network:
    """The py-spinnaker2 objects built for one observation."""

    network: Any
    input_population: Any
    hidden_populations: list[Any]
    output_population: Any
    projections: list[Any]


def spike_list(train: np.ndarray) -> dict[int, list[int]]:
    """``{neuron: [ticks with a spike]}`` of one observation's input train ``(ticks, n)``."""
    train = np.asarray(train)
    return {i: [int(t) for t in np.flatnonzero(train[:, i])] for i in range(train.shape[1])}


def connection_list(weights: np.ndarray, delay: int) -> list[list[int]]:
    """``[[pre, post, weight, delay], ...]`` for the nonzero entries of ``weights`` ``(n_post, n_pre)``."""
    pre, post = np.nonzero(weights.T)
    return [[int(i), int(j), int(weights[j, i]), int(delay)] for i, j in zip(pre, post)]


def chip_connection_delay(program: ChipProgram, connection_delay: int | None = None) -> int:
    """The py-spinnaker2 delay to write into the connections of ``program``.

    :param program: the chip program
    :param connection_delay: an explicit value (experiments); ``program.delay - 1`` when None
    :raises ValueError: a ``delay=0`` program: the chip cannot propagate a spike within a tick
    """
    if program.delay < 1:
        raise ValueError(
            "this chip program has delay=0 (a spike reaches the next population in the tick it is emitted); "
            "SpiNNaker2 cannot propagate within a tick: a py-spinnaker2 connection with delay 0 already "
            "arrives one tick later. Deploy a program built with synaptic_delay=1 (the default), or run this "
            "one on the 'emulator' backend"
        )
    if connection_delay is not None:
        return int(connection_delay)
    return program.delay - 1


def neuron_params(program: ChipProgram, k: int) -> dict[str, Any]:
    """``lif_no_delay`` parameters of population ``k`` (hidden layers, then the output)."""
    return {
        "threshold": np.asarray(program.thresholds[k], dtype=np.float32).copy(),
        "alpha_decay": np.asarray(program.alpha_decay[k], dtype=np.float32).copy(),
        "i_offset": np.asarray(program.i_offset[k], dtype=np.float32).copy(),
        "v_reset": float(program.v_reset),
        "reset": S2_RESET[program.reset],
    }


def build_network(
    program: ChipProgram,
    spike_trains: np.ndarray,
    snn_module: Any,
    connection_delay: int | None = None,
) -> S2Network:
    """Translate a chip program and one observation's input spikes into py-spinnaker2 objects.

    :param program: the chip program
    :param spike_trains: the input spike train of one observation, ``(ticks, 2d)`` of 0/1
    :param snn_module: py-spinnaker2's ``snn`` module (or a stand-in with ``Population``,
        ``Projection`` and ``Network``)
    :param connection_delay: the delay written into every connection;
        ``program.delay - 1`` when None (see the module docstring on the delay semantics)
    :return: the network and its populations
    :raises ValueError: trains of the wrong shape; a ``delay=0`` program
    """
    spike_trains = np.asarray(spike_trains)
    n_in = program.layer_sizes[0]
    if spike_trains.shape != (program.ticks, n_in):
        raise ValueError(
            f"spike_trains must have shape (ticks, 2d) = {(program.ticks, n_in)}, got {spike_trains.shape}"
        )
    delay = chip_connection_delay(program, connection_delay)
    snn = snn_module
    inp = snn.Population(size=n_in, neuron_model="spike_list", params=spike_list(spike_trains), name="input")
    n_hidden = len(program.weights) - 1
    populations = [inp]
    for k, w in enumerate(program.weights):
        is_output = k == n_hidden
        populations.append(
            snn.Population(
                size=int(w.shape[0]),
                neuron_model="lif_no_delay",
                params=neuron_params(program, k),
                name="output" if is_output else f"hidden{k + 1}",
                record=["v", "spikes"] if is_output else ["spikes"],
            )
        )
    projections = [
        snn.Projection(pre=populations[k], post=populations[k + 1], connections=connection_list(w, delay))
        for k, w in enumerate(program.weights)
    ]
    net = snn.Network("spiking-dqn")
    net.add(*populations, *projections)
    return S2Network(
        network=net,
        input_population=inp,
        hidden_populations=populations[1:-1],
        output_population=populations[-1],
        projections=projections,
    )


def _spike_train(spike_times: dict[int, Any], n: int, ticks: int) -> np.ndarray:
    train = np.zeros((ticks, n), dtype=np.float32)
    for i, times in spike_times.items():
        for t in np.asarray(times, dtype=np.int64).ravel():
            if 0 <= t < ticks:
                train[t, int(i)] = 1.0
    return train


def check_chip_weights(program: ChipProgram) -> None:
    """Refuse a program whose low-precision weights the chip cannot store.

    What the project believes the chip stores: the ``lif`` model, a 4-bit magnitude and a
    sign (:data:`LIF_WEIGHT_LIMIT` = 15). The rule, per projection ``k``:

    * ``weight_bits[k] == 8``: accepted, as before weight widths existed. The backend writes
      the int8 weights into ``lif_no_delay`` connections unchanged; that this model holds
      them at full int8 range is an assumption that has not been verified on a chip (only
      against the stand-in ``snn`` module);
    * ``weight_bits[k] <= 5``: accepted: every weight is inside +-15 (the program checks its
      widths), so it fits the ``lif`` format;
    * ``weight_bits[k]`` 6 or 7: a width the chip lacks; refused when a weight lies outside
      +-15, accepted when all happen to fit.

    :param program: the chip program
    :raises ValueError: the first projection that does not fit, with its width and largest weight
    """
    for k, (w, bits) in enumerate(zip(program.weights, program.weight_bits)):
        if bits >= DEFAULT_WEIGHT_BITS:
            continue
        peak = int(np.abs(w.astype(np.int16)).max())
        if peak > LIF_WEIGHT_LIMIT:
            raise ValueError(
                f"projection {k} has weight_bits={bits} with weights up to +-{peak}, which SpiNNaker2 cannot store: "
                f"its lif model keeps a 4-bit magnitude and a sign (+-{LIF_WEIGHT_LIMIT}, {LIF_WEIGHT_BITS} bits), "
                "and the chip has no 6- or 7-bit weight format. Deploy with weight_bits <= 5 (e.g. "
                "--weight-bits 5) or 8 (int8), or run this program on the 'emulator' backend"
            )


class SpiNNaker2Backend:
    """Run chip programs on a SpiNNaker2 chip, one observation per chip run.

    :param eth_ip: IP address of the chip's Ethernet interface (required; a keyword
        with no default value only so that leaving it out gets a clear error)
    :param connection_delay: delay written into the connections; ``program.delay - 1``
        when None (see the module docstring); for experiments
    :raises ValueError: no ``eth_ip``, or one that is not a non-empty string
    """

    name = "spinnaker2"

    def __init__(self, eth_ip: str | None = None, connection_delay: int | None = None) -> None:
        if eth_ip is None:
            raise ValueError(
                "the spinnaker2 backend needs the address of the chip: pass eth_ip=... "
                "(e.g. get_backend('spinnaker2', eth_ip='192.168.1.25'), or "
                "HardwarePolicy.from_model(model, backend='spinnaker2', eth_ip='192.168.1.25')); "
                "without a chip, use the 'emulator' backend"
            )
        if not isinstance(eth_ip, str) or not eth_ip:
            raise ValueError(f"eth_ip must be the chip's IP address as a string, got {eth_ip!r}")
        self.eth_ip = eth_ip
        self.connection_delay = connection_delay

    def _chip_error(self, exc: BaseException) -> ChipConnectionError:
        return ChipConnectionError(
            f"the SpiNNaker2 chip at eth_ip={self.eth_ip!r} did not answer or failed to run the network "
            f"({type(exc).__name__}: {exc}). Check that the board is powered and booted, that this machine "
            "reaches it over Ethernet (ping it), that the IP address is right, and that no other experiment "
            "is using the chip"
        )

    def _preflight(self, program: ChipProgram) -> None:
        """Refuse a program the chip cannot run, before py-spinnaker2 is imported or the chip contacted.

        The one place for pre-flight checks of :meth:`run_spikes` (and so of :meth:`run`):

        * the delay (a ``delay=0`` program, see :func:`chip_connection_delay`);
        * the weight widths (:func:`check_chip_weights`): a projection narrower than 8 bits
          must fit the ``lif`` model's sign-and-magnitude format, +-15; 8-bit projections
          are accepted as they always were;
        * the size (:func:`spiking_dqn.hardware.mapping.require_fits_one_chip`): a program
          that needs more cores (or more synapse memory per core) than one chip has is
          refused with the cores it needs;
        * membrane state levels and per-tick gains: ``lif_no_delay`` keeps a float32
          membrane and has no per-tick synaptic scaling.

        :param program: the chip program
        :raises ValueError: the program cannot run on the chip (the message says why)
        """
        if program.state_levels is not None:
            raise ValueError(
                "this program quantizes membrane state (state_levels); SpiNNaker2's lif_no_delay keeps a float32 "
                "membrane and cannot: run it on the 'emulator' backend"
            )
        if program.tick_gain is not None:
            raise ValueError(
                "this program scales synaptic input per tick (tick_gain); SpiNNaker2's lif_no_delay has no per-tick "
                "gain: run it on the 'emulator' backend"
            )
        chip_connection_delay(program, self.connection_delay)
        check_chip_weights(program)
        require_fits_one_chip(program)

    def run(
        self, program: ChipProgram, obs: Any, record_trains: bool = False, record_voltages: bool = False
    ) -> BackendResult:
        """Run a batch of observations on the chip: encode them, then :meth:`run_spikes`.

        :param program: the chip program
        :param obs: observations ``(batch, d)``, or a single one ``(d,)``
        :param record_trains: also return the per-tick spike trains of every population
        :param record_voltages: also return the output voltages after every tick
        :raises ValueError: bad observations; a program the chip cannot run
        :raises ImportError: py-spinnaker2 is not installed
        :raises ChipConnectionError: the chip cannot be reached or the run fails
        """
        obs = as_observation_batch(obs, program.obs_dim)
        return run_observations(self, program, obs, record_trains, record_voltages)

    def run_spikes(
        self, program: ChipProgram, input_spikes: Any, record_voltages: bool = False, record_trains: bool = False
    ) -> BackendResult:
        """Run raw input spike trains on the chip, one chip run per observation.

        :param program: the chip program
        :param input_spikes: ``(ticks, batch, 2d)`` bool or 0/1 numbers; row ``t`` is what the
            input neurons emit at tick ``t`` (see :func:`~spiking_dqn.hardware.backend.check_input_spikes`)
        :param record_voltages: also return the output voltages after every tick
            (``BackendResult.voltage_trace``, from ``get_voltages()``)
        :param record_trains: also return the per-tick spike trains of every population
        :raises ValueError: bad trains; a program the chip cannot run (:meth:`_preflight`)
        :raises ImportError: py-spinnaker2 is not installed
        :raises ChipConnectionError: the chip cannot be reached or the run fails
        """
        start = time.perf_counter()
        inputs = check_input_spikes(program, input_spikes)  # (ticks, batch, 2d)
        self._preflight(program)
        hardware, snn = import_spinnaker2()
        ticks, batch = program.ticks, inputs.shape[1]
        sizes = program.layer_sizes
        voltages = np.zeros((batch, program.n_actions), dtype=np.float32)
        trace = np.zeros((ticks, batch, program.n_actions), dtype=np.float32) if record_voltages else None
        trains = [inputs] + [np.zeros((ticks, batch, n), dtype=np.float32) for n in sizes[1:]]
        for b in range(batch):
            built = build_network(program, inputs[:, b], snn, self.connection_delay)
            try:
                hw = hardware.SpiNNaker2Chip(eth_ip=self.eth_ip)
                hw.run(built.network, ticks)
            except (ImportError, KeyboardInterrupt):
                raise
            except Exception as exc:
                raise self._chip_error(exc) from exc
            v = built.output_population.get_voltages()
            per_tick = [np.asarray(v[i], dtype=np.float32).ravel() for i in range(program.n_actions)]
            voltages[b] = [values[-1] for values in per_tick]
            if trace is not None:
                if any(values.size < ticks for values in per_tick):
                    raise ChipConnectionError(
                        f"the chip recorded {min(values.size for values in per_tick)} output voltages per neuron, "
                        f"fewer than the {ticks} ticks run"
                    )
                trace[:, b] = np.stack([values[-ticks:] for values in per_tick], axis=1)
            recorded = [*built.hidden_populations, built.output_population]
            for k, pop in enumerate(recorded):
                trains[k + 1][:, b] = _spike_train(pop.get_spikes(), sizes[k + 1], ticks)
        counts = [train.sum(0).astype(np.int64) for train in trains]
        saturated = counts[-1].any(axis=1)
        warn_output_saturation(saturated, program)
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
            voltage_trace=trace,
        )
