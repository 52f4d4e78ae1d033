"""spiking-dqn: spiking deep Q-networks for Stable-Baselines3, made to run on SpiNNaker2.

The public names below are imported on first use (PEP 562), so that importing a part of
the package that needs no torch, such as :mod:`spiking_dqn.hardware`, does not import it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from spiking_dqn.lazy_imports import lazy_attributes

__version__ = "0.1.0"

#: Public name -> module that defines it.
_LAZY_IMPORTS: dict[str, str] = {
    "HardwareAwareFineTuning": "spiking_dqn.callbacks",
    "HardwarePolicy": "spiking_dqn.hardware_policy",
    "SignedRateEncoder": "spiking_dqn.encoding",
    "SpikeActivityLogger": "spiking_dqn.callbacks",
    "SpikingDQN": "spiking_dqn.dqn",
    "SpikingDQNPolicy": "spiking_dqn.policies",
    "SpikingQNetwork": "spiking_dqn.network",
}

if TYPE_CHECKING:
    from spiking_dqn.callbacks import HardwareAwareFineTuning, SpikeActivityLogger
    from spiking_dqn.dqn import SpikingDQN
    from spiking_dqn.encoding import SignedRateEncoder
    from spiking_dqn.hardware_policy import HardwarePolicy
    from spiking_dqn.network import SpikingQNetwork
    from spiking_dqn.policies import SpikingDQNPolicy

__all__ = [
    "HardwareAwareFineTuning",
    "HardwarePolicy",
    "SignedRateEncoder",
    "SpikeActivityLogger",
    "SpikingDQN",
    "SpikingDQNPolicy",
    "SpikingQNetwork",
    "__version__",
]


__getattr__, __dir__ = lazy_attributes(globals(), _LAZY_IMPORTS)
