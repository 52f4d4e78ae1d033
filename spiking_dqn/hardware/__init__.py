"""Deployment of spiking Q-networks: chip programs, backends that run them, energy model.

* :class:`ChipProgram`: the frozen, plain-data description of a deployed network
  (int8 weights, neuron parameters, ticks, delay, encoding), saved without pickle.
* Backends run a program on a batch of observations and return a :class:`BackendResult`:
  ``"emulator"`` (:class:`EmulatorBackend`, embedded, the default) and ``"spinnaker2"``
  (:class:`SpiNNaker2Backend`, needs py-spinnaker2, imported only when a program runs).
* :class:`EnergyModel` and :func:`estimate_energy`: estimated energy and latency.
"""

from __future__ import annotations

from typing import Any

from spiking_dqn.hardware.emulator import BackendResult, EmulatorBackend
from spiking_dqn.hardware.energy import EnergyEstimate, EnergyModel, estimate_energy
from spiking_dqn.hardware.program import ChipProgram, ChipProgramError
from spiking_dqn.hardware.spinnaker2 import ChipConnectionError, SpiNNaker2Backend

#: Backend classes by name.
BACKENDS: dict[str, type] = {"emulator": EmulatorBackend, "spinnaker2": SpiNNaker2Backend}


def get_backend(name: str = "emulator", **options: Any) -> EmulatorBackend | SpiNNaker2Backend:
    """A backend by name.

    :param name: ``"emulator"`` (default) or ``"spinnaker2"``
    :param options: keyword arguments of the backend's constructor, e.g. ``eth_ip`` for
        ``"spinnaker2"``
    :raises ValueError: unknown name (the available ones are listed)
    """
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; available backends: {', '.join(repr(b) for b in BACKENDS)}")
    return BACKENDS[name](**options)


__all__ = [
    "BACKENDS",
    "BackendResult",
    "ChipConnectionError",
    "ChipProgram",
    "ChipProgramError",
    "EmulatorBackend",
    "EnergyEstimate",
    "EnergyModel",
    "SpiNNaker2Backend",
    "estimate_energy",
    "get_backend",
]
