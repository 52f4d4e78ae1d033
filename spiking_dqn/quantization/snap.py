"""Snapping a network onto its grid: the float twin of a chip program.

After quantization-aware training the float weights sit near, not on, the grid; the
network that was trained is the fake-quantized one. Snapping sets the float weights to
the fake-quantized ones and records the grid in the network (``net.grid``, saved with the
model), so that the plain float network computes exactly what the chip program quantized
from it computes, and ``lam=None`` deploys it on that grid from then on.
"""

from __future__ import annotations

import copy

import torch as th
from stable_baselines3 import DQN

from spiking_dqn.grid import Grid
from spiking_dqn.network import SpikingQNetwork


def fake_quantized_copy(net: SpikingQNetwork, grid: Grid) -> SpikingQNetwork:
    """A copy of ``net`` with fake quantization on the grid switched on (for checks).

    :param net: the network (left untouched)
    :param grid: the grid
    """
    twin = copy.deepcopy(net)
    twin.set_fake_quantization(grid)
    return twin


def snap_to_grid(net: SpikingQNetwork, grid: Grid) -> None:
    """Set the float weights to the fake-quantized ones (in place) and record the grid on the network.

    After QAT the float weights sit near, not on, the grid; the network that was trained
    is the fake-quantized one. Snapping makes the plain float network compute exactly
    that network, so it is the float twin of the chip program quantized from it on the
    same grid (a two-action centred readout snaps exactly). The grid is recorded in the
    network (``net.grid``, saved with the model), and ``lam=None`` deploys it from then on.

    :param net: the network to change
    :param grid: the grid (e.g. ``QATReport.grid``)
    """
    twin = fake_quantized_copy(net, grid)
    with th.no_grad():
        for layer, weight in zip(net.linear_layers(), twin.forward_weights()):
            layer.weight.copy_(weight.detach())
    net.grid = grid


def snap_model_to_grid(model: DQN, grid: Grid) -> None:
    """:func:`snap_to_grid` for an SB3 ``DQN``: snap the Q-network and make the target network a copy of it.

    What the recipes, the pipeline and the CLI do with the weights QAT kept: the saved
    model is then the float twin of the chip program, target network included.

    :param model: an SB3 ``DQN`` with ``SpikingDQNPolicy``
    :param grid: the grid (e.g. ``QATReport.grid``)
    """
    policy = model.policy
    snap_to_grid(policy.q_net.q_net, grid)
    policy.q_net_target.load_state_dict(policy.q_net.state_dict())
