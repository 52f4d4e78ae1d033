"""Deployment of spiking Q-networks: chip programs, backends that run them, energy model.

* :class:`ChipProgram`: the frozen, plain-data description of a deployed network
  (int8 weights, neuron parameters, ticks, delay, encoding), saved without pickle.
* Backends (:class:`Backend`) run a program on a batch of observations (``run``) or on raw
  input spike trains (``run_spikes``) and return a :class:`BackendResult`: ``"emulator"``
  (:class:`EmulatorBackend`, embedded, the default), ``"spinnaker2"``
  (:class:`SpiNNaker2Backend`, needs py-spinnaker2) and ``"brian2"`` (:class:`Brian2Backend`,
  the Brian2 simulator as an independent check, needs the ``brian2`` extra); the optional
  packages are imported only when a program runs; :func:`get_backend` builds one by name.
* :class:`EnergyModel` and :func:`spiking_dqn.hardware.energy.estimate`: estimated energy
  and latency.

Nothing here imports torch: a deployed program runs with numpy and numba alone.
"""

from __future__ import annotations

from spiking_dqn.hardware.backend import BACKENDS, Backend, BackendResult, get_backend
from spiking_dqn.hardware.brian2 import Brian2Backend
from spiking_dqn.hardware.emulator import EmulatorBackend
from spiking_dqn.hardware.energy import EnergyEstimate, EnergyModel
from spiking_dqn.hardware.program import ChipProgram
from spiking_dqn.hardware.program_file import ChipProgramError
from spiking_dqn.hardware.spinnaker2 import ChipConnectionError, SpiNNaker2Backend

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendResult",
    "Brian2Backend",
    "ChipConnectionError",
    "ChipProgram",
    "ChipProgramError",
    "EmulatorBackend",
    "EnergyEstimate",
    "EnergyModel",
    "SpiNNaker2Backend",
    "get_backend",
]
