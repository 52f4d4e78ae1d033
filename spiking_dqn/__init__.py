"""spiking-dqn: spiking deep Q-networks for Stable-Baselines3, made to run on SpiNNaker2.

The public names below are imported on first use (PEP 562), so that importing a part of
the package that needs no torch, such as :mod:`spiking_dqn.hardware`, does not import it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public name -> module that defines it.
_LAZY_IMPORTS: dict[str, str] = {
    "HardwareAwareFineTuning": "spiking_dqn.callbacks",
    "HardwarePolicy": "spiking_dqn.hardware_policy",
    "SignedRateEncoder": "spiking_dqn.encoding",
    "SpikeActivityLogger": "spiking_dqn.callbacks",
    "SpikingDQNPolicy": "spiking_dqn.policies",
    "SpikingQNetwork": "spiking_dqn.network",
}

if TYPE_CHECKING:
    from spiking_dqn.callbacks import HardwareAwareFineTuning, SpikeActivityLogger
    from spiking_dqn.encoding import SignedRateEncoder
    from spiking_dqn.hardware_policy import HardwarePolicy
    from spiking_dqn.network import SpikingQNetwork
    from spiking_dqn.policies import SpikingDQNPolicy

__all__ = [
    "HardwareAwareFineTuning",
    "HardwarePolicy",
    "SignedRateEncoder",
    "SpikeActivityLogger",
    "SpikingDQNPolicy",
    "SpikingQNetwork",
    "__version__",
]


def __getattr__(name: str) -> Any:
    """Import a public name on first access, and keep it as a module attribute.

    :param name: the attribute asked for
    :raises AttributeError: not a public name of the package (nor a loaded submodule)
    """
    module = _LAZY_IMPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
