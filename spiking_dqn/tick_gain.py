"""Per-tick synaptic gains (TaWQ's temporal adaptation): the spiking network's forward with a learned gain per projection and tick.

With ternary or few-bit weights a projection's weights carry little magnitude; TaWQ
(``../shared/references/004_ef07cdbfa7d8b8e3.txt``) gives each projection a gain per
time step instead. Here projection ``k`` multiplies the synaptic input that arrives at
tick ``t`` by ``g_k[t]``: for a hidden layer ``m_t = beta * v + (g_k[t] * (W_k s_{t-d}) + b_k)``,
for the integrator readout ``q = W (sum_t g[t] s_{t-d}) + T b``. The chip program stores
the gains as ``ChipProgram.tick_gain`` (the emulator multiplies each tick's synaptic
input by them; SpiNNaker2's ``lif_no_delay`` cannot, and its backend refuses such a
program).

The forward runs tick by tick in torch ops under autograd (the spike function is the
layer's snnTorch surrogate, the reset detached, state levels straight-through), on any
device; the compiled CPU pass does not take gains. With every gain 1 it gives the
compiled pass's spikes (tested).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch as th
from stable_baselines3 import DQN

from spiking_dqn.layers import delay_spikes, integrator_readout, nearest_level_torch, neuron_params
from spiking_dqn.neuron import ChipLeaky, lif_tick_torch


def gained_forward(
    spikes: th.Tensor,
    weights: Sequence[th.Tensor],
    biases: Sequence[th.Tensor],
    neurons: Sequence[ChipLeaky],
    gains: th.Tensor,
    delay: int,
    scale: float = 1.0,
    levels: Sequence[np.ndarray | None] | None = None,
) -> tuple[th.Tensor, list[th.Tensor]]:
    """Q-values ``(batch, n_actions)`` and hidden spike trains of a network whose projections have per-tick gains.

    :param spikes: input spike trains ``(T, batch, n_0)``
    :param weights: the forward's weights, hidden layers then readout ``(n_out, n_in)``
    :param biases: their biases
    :param neurons: the hidden layers' neurons
    :param gains: ``(n_projections, T)``: ``gains[k, t]`` multiplies projection ``k``'s input arriving at tick ``t``
    :param delay: synaptic delay in ticks
    :param scale: factor on every hidden threshold
    :param levels: membrane state levels per hidden layer (``None`` entries: float32 state)
    """
    ticks = spikes.shape[0]
    levels = levels or [None] * len(neurons)
    trains = []
    x = spikes
    for k, (weight, bias, neuron, level) in enumerate(zip(weights[:-1], biases, neurons, levels)):
        beta, threshold, subtract = neuron_params(neuron, scale)
        current = gains[k][:, None, None] * th.nn.functional.linear(delay_spikes(x, delay), weight) + bias
        level_tensor = None if level is None else th.as_tensor(np.array(level), dtype=current.dtype, device=current.device)
        mem = th.zeros_like(current[0])
        out = []

        def fire(m: th.Tensor, neuron: ChipLeaky = neuron, threshold: float = threshold) -> th.Tensor:
            return neuron.spike_grad(m - threshold)

        for t in range(ticks):
            _, spike, mem = lif_tick_torch(mem, current[t], beta, threshold, subtract, fire)
            if level_tensor is not None:
                mem = mem + (nearest_level_torch(mem.detach(), level_tensor) - mem).detach()
            out.append(spike)
        x = th.stack(out)
        trains.append(x)
    arrived = delay_spikes(trains[-1], delay)
    summed = (gains[-1][:, None, None] * arrived).sum(0)
    return integrator_readout(summed, weights[-1], biases[-1], ticks), trains


def with_tick_gains(model: DQN) -> DQN:
    """The model with tick gains switched on (all 1, so the same outputs) and a new optimizer that trains them too.

    For fine-tuning a trained agent with TaWQ's temporal adaptation (e.g. under QAT on a
    ternary grid): the policy is rebuilt with ``tick_gain=True`` from the model's policy
    options and loads the current weights (grid, state levels and all); the replay buffer
    and the rest of the model are kept. A model whose network has gains is returned as is.

    :param model: a DQN with a ``SpikingDQNPolicy``
    """
    if model.policy.q_net.q_net.tick_gain is not None:
        return model
    state = model.policy.state_dict()
    model.policy_kwargs = {**model.policy_kwargs, "tick_gain": True}
    policy = model.policy_class(model.observation_space, model.action_space, model.lr_schedule, **model.policy_kwargs)
    policy.load_state_dict(state, strict=False)
    model.policy = policy.to(model.device)
    model._create_aliases()
    return model
