"""Deployment of spiking Q-networks: chip programs, backends that run them, energy model.

* :class:`ChipProgram`: the frozen, plain-data description of a deployed network
  (int8 weights, neuron parameters, ticks, delay, encoding), saved without pickle.
* Backends (:class:`Backend`) run a program on a batch of observations and return a
  :class:`BackendResult`: ``"emulator"`` (:class:`EmulatorBackend`, embedded, the default)
  and ``"spinnaker2"`` (:class:`SpiNNaker2Backend`, needs py-spinnaker2, imported only when
  a program runs); :func:`get_backend` builds one by name.
* :class:`EnergyModel` and :func:`spiking_dqn.hardware.energy.estimate`: estimated energy
  and latency.

Nothing here imports torch: a deployed program runs with numpy and numba alone.
"""

from __future__ import annotations

from spiking_dqn.hardware.backend import BACKENDS, Backend, BackendResult, get_backend
from spiking_dqn.hardware.emulator import EmulatorBackend
from spiking_dqn.hardware.energy import EnergyEstimate, EnergyModel
from spiking_dqn.hardware.program import ChipProgram, ChipProgramError
from spiking_dqn.hardware.spinnaker2 import ChipConnectionError, SpiNNaker2Backend

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendResult",
    "ChipConnectionError",
    "ChipProgram",
    "ChipProgramError",
    "EmulatorBackend",
    "EnergyEstimate",
    "EnergyModel",
    "SpiNNaker2Backend",
    "get_backend",
]
