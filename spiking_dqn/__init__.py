"""spiking-dqn: spiking deep Q-networks for Stable-Baselines3, made to run on SpiNNaker2."""

from spiking_dqn.callbacks import HardwareAwareFineTuning, SpikeActivityLogger
from spiking_dqn.encoding import SignedRateEncoder
from spiking_dqn.hardware_policy import HardwarePolicy
from spiking_dqn.network import SpikingQNetwork
from spiking_dqn.policies import SpikingDQNPolicy

__version__ = "0.1.0"

__all__ = [
    "HardwareAwareFineTuning",
    "HardwarePolicy",
    "SignedRateEncoder",
    "SpikeActivityLogger",
    "SpikingDQNPolicy",
    "SpikingQNetwork",
    "__version__",
]
