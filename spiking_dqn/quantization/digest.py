"""Which float model a chip program was built from: the model's digest, and the check of a pair.

:func:`quantize_network <spiking_dqn.quantization.build.quantize_network>` records
:func:`model_digest` of the network it quantizes in ``ChipProgram.model_digest``;
:func:`check_program_model` is what :func:`spiking_dqn.compare.compare` and
:class:`~spiking_dqn.hardware_policy.HardwarePolicy` run before they put a program beside
a model, so that a program left over from an earlier model in the same folder is refused
instead of compared (or deployed) without a word.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
from typing import Any

import numpy as np

from spiking_dqn.hardware.program import ChipProgram
from spiking_dqn.network import SpikingQNetwork

#: Options of :class:`~spiking_dqn.config.SpikingConfig` that shape training only (the
#: surrogate gradient, training-time threshold noise, the activity penalty): a network's
#: Q-values do not depend on them, so they are not part of its digest.
TRAINING_ONLY_OPTIONS = ("surrogate", "threshold_noise", "threshold_noise_seed", "activity_penalty")
#: Buffers that hold a neuron's state between calls (snnTorch's membrane), not the model.
STATE_BUFFERS = ("mem",)


def spiking_network(model: Any) -> SpikingQNetwork:
    """The float spiking Q-network of a ``DQN`` with a ``SpikingDQNPolicy``, of such a policy, or the network itself.

    :raises TypeError: anything else
    """
    if isinstance(model, SpikingQNetwork):
        return model
    policy = getattr(model, "policy", model)
    net = getattr(getattr(policy, "q_net", None), "q_net", None)
    if not isinstance(net, SpikingQNetwork):
        raise TypeError(f"expected a DQN with a SpikingDQNPolicy (or its network), got {type(model).__name__}")
    return net


def model_digest(model: Any) -> str:
    """SHA-256 (hex) of what defines a float spiking Q-network's outputs.

    Hashed: every parameter and buffer (name, dtype, shape, bytes; not the membrane state),
    the spiking options that act at inference (:class:`~spiking_dqn.config.SpikingConfig`
    less :data:`TRAINING_ONLY_OPTIONS`), the recorded grid and the membrane state levels.
    Not hashed: the device, ``threshold_scale`` (a runtime setting) and the training state.
    A model saved and loaded again (``DQN.save`` / ``DQN.load``) has the same digest.

    :param model: an SB3 ``DQN`` with a ``SpikingDQNPolicy``, its policy, or the network
    """
    net = spiking_network(model)
    h = hashlib.sha256(b"SpikingQNetwork")
    tensors = [*net.named_parameters(), *net.named_buffers()]
    for name, tensor in sorted(tensors, key=lambda item: item[0]):
        if name.rsplit(".", 1)[-1] in STATE_BUFFERS:
            continue
        array = np.ascontiguousarray(tensor.detach().cpu().numpy())
        h.update(f"|{name}:{array.dtype.str}{array.shape}:".encode())
        h.update(array.tobytes())
    options = {
        f.name: getattr(net.config, f.name)
        for f in dataclasses.fields(net.config)
        if f.name not in TRAINING_ONLY_OPTIONS
    }
    levels = net.state_levels
    extra = {
        "options": options,
        "n_actions": net.n_actions,
        "grid": None if net.grid is None else net.grid.to_dict(),
        "state_levels": None if levels is None else [None if lv is None else lv.tolist() for lv in levels],
    }
    h.update(json.dumps(extra, sort_keys=True, default=repr).encode())
    return h.hexdigest()


def check_program_model(
    program: ChipProgram, model: Any, allow_mismatch: bool = False, program_name: str = "the chip program"
) -> None:
    """Refuse a program that was built from another model than ``model``.

    :param program: the chip program
    :param model: the float model it is to be compared with or to stand for (see :func:`model_digest`)
    :param allow_mismatch: only warn (a ``UserWarning``) when the digests differ
    :param program_name: the program in the messages (e.g. its file)
    :raises ValueError: the program records another model's digest (one line naming both)

    A program that records no digest (built by hand, or saved before programs recorded one)
    gets a one-line ``UserWarning``: nothing says which model it came from.
    """
    if program.model_digest is None:
        warnings.warn(
            f"{program_name} records no model digest (saved before chip programs recorded one, or built by hand): "
            "nothing checks that it was built from this model",
            UserWarning,
            stacklevel=3,
        )
        return
    digest = model_digest(model)
    if digest == program.model_digest:
        return
    message = (
        f"{program_name} was built from model {program.model_digest[:12]}, not from this model ({digest[:12]}): "
        "rebuild it from this model (spiking-dqn deploy or export), or pass allow_mismatch=True (--allow-mismatch)"
    )
    if not allow_mismatch:
        raise ValueError(message)
    warnings.warn(message, UserWarning, stacklevel=3)
