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
  nonzero int8 weights only;
* ``snn.Network`` with everything added, run by ``hardware.SpiNNaker2Chip(eth_ip=...)``
  as ``hw.run(net, ticks)``; ``get_voltages()`` gives, per neuron, one value per tick and
  the last one is the Q-value (in units of the output lambda).

Delay semantics. The connection delay written is ``program.delay`` unless
``connection_delay`` overrides it. py-spinnaker2 documents, for its ``lif`` model, that
the delay on the hardware is the given delay plus one tick; ``lif_no_delay`` has no delay
buffer, and its own examples pass delay 0, so on the chip a spike is expected to arrive
at the next tick whatever the field says. Programs with ``delay=1`` (the default) should
therefore match the emulator, and a ``delay=0`` program will probably see one extra tick
per layer on the chip. Such an off-by-one (or any other difference between the chip and
the emulated semantics) is what the on-chip threshold search exists to absorb.

This path has not been run on a chip here: no SpiNNaker2 was attached when it was
written. The translation itself (:func:`build_network`) is tested against a fake ``snn``
module.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from spiking_dqn.hardware.backend import (
    BackendResult,
    as_observation_batch,
    encode_observations,
    synaptic_events,
    warn_output_saturation,
)
from spiking_dqn.hardware.program import ChipProgram

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
    :param connection_delay: the delay written into every connection; ``program.delay``
        when None (see the module docstring on the chip's delay semantics)
    :return: the network and its populations
    """
    spike_trains = np.asarray(spike_trains)
    n_in = program.layer_sizes[0]
    if spike_trains.shape != (program.ticks, n_in):
        raise ValueError(
            f"spike_trains must have shape (ticks, 2d) = {(program.ticks, n_in)}, got {spike_trains.shape}"
        )
    delay = program.delay if connection_delay is None else int(connection_delay)
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


class SpiNNaker2Backend:
    """Run chip programs on a SpiNNaker2 chip, one observation per chip run.

    :param eth_ip: IP address of the chip's Ethernet interface (required; a keyword
        with no default value only so that leaving it out gets a clear error)
    :param connection_delay: delay written into the connections; ``program.delay`` when
        None (see the module docstring)
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

    def run(self, program: ChipProgram, obs: Any) -> BackendResult:
        """Run a batch of observations on the chip, one chip run per observation.

        :param program: the chip program
        :param obs: observations ``(batch, d)``, or a single one ``(d,)``
        :raises ImportError: py-spinnaker2 is not installed
        :raises ChipConnectionError: the chip cannot be reached or the run fails
        """
        obs = as_observation_batch(obs, program.obs_dim)
        hardware, snn = import_spinnaker2()
        start = time.perf_counter()
        inputs = encode_observations(program, obs)  # (ticks, batch, 2d)
        ticks, batch = program.ticks, obs.shape[0]
        sizes = program.layer_sizes
        voltages = np.zeros((batch, program.n_actions), dtype=np.float32)
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
            voltages[b] = [np.asarray(v[i], dtype=np.float32).ravel()[-1] for i in range(program.n_actions)]
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
        )
