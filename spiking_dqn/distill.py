"""Distillation fine-tuning for the chip: the quantized network learns the float network's Q-values.

The ``"distill"`` mode of :func:`~spiking_dqn.qat.quantization_aware_finetune` (which owns
the machinery it shares with the TD modes: the grid, the fake quantization, the backend
checks that keep the best weights, the report). Quantizing a trained network is a
supervised problem, not a reinforcement-learning one: the float network before fine-tuning
is the teacher, frozen, and the student is the same network with fake-quantized weights
(:meth:`~spiking_dqn.network.SpikingQNetwork.set_fake_quantization`: the chip's weights in
the forward pass, the gradient passed straight through to the float weights), trained to
answer as the teacher does on the states the agent meets. Unlike DQN's TD updates it has no
moving target and no exploration, so it cannot unlearn the policy: at worst it leaves the
weights where they were.

The states (:func:`distillation_set`) are those the float policy visits (greedy episodes
from a seed of their own, :func:`~spiking_dqn.rollouts.record_observations`) and, when the
model has a replay buffer, the buffer's observations. The loss (:func:`distillation_loss`)
on a minibatch of them is::

    MSE_WEIGHT * mean((q_student - q_teacher)^2) / scale^2
    + CE_WEIGHT * cross_entropy(q_student / gap, argmax q_teacher)

where ``scale`` is the standard deviation of the teacher's Q-values over the set (the MSE
is in units of the teacher's Q scale, whatever the task's rewards) and ``gap`` the teacher's
mean gap between its best and second-best Q-value (a student as sure of its action as the
teacher is on average has a logit margin of 1). The MSE keeps the Q-values, so that the
thresholds and the readout keep their meaning; the cross-entropy spends the network's
precision where the greedy action is decided, on states near a decision boundary, which
the chip must not flip. After every chunk of steps the weights are pulled toward their grid
point as in QAT (:meth:`~spiking_dqn.grid.Grid.pull`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch as th
import torch.nn.functional as F
from stable_baselines3 import DQN

from spiking_dqn.grid import Grid
from spiking_dqn.network import SpikingQNetwork
from spiking_dqn.rollouts import record_observations

#: Weight of the Q-value MSE (in units of the teacher's Q scale) in the distillation loss.
MSE_WEIGHT = 1.0
#: Weight of the cross-entropy to the teacher's greedy action (logits: Q over the teacher's mean gap).
CE_WEIGHT = 1.0
#: States of the float policy's greedy episodes distilled on, by default.
DISTILL_OBSERVATIONS = 4096
#: Replay-buffer states distilled on, at most (the most recent ones).
REPLAY_OBSERVATIONS = 16384


@dataclass(frozen=True)
class DistillationSet:
    """The states the student learns on and the frozen teacher's answers.

    :param states: ``(n, d)`` observations
    :param teacher_q: ``(n, actions)`` the float network's Q-values before fine-tuning
    :param scale: standard deviation of ``teacher_q`` (the MSE's unit)
    :param gap: the teacher's mean best-minus-second Q-value (the cross-entropy's temperature)
    :param from_policy: states from the float policy's episodes
    :param from_replay: states from the replay buffer
    """

    states: th.Tensor
    teacher_q: th.Tensor
    scale: float
    gap: float
    from_policy: int
    from_replay: int

    @property
    def teacher_actions(self) -> th.Tensor:
        """The teacher's greedy action in every state."""
        return self.teacher_q.argmax(1)


def distillation_set(
    model: DQN,
    net: SpikingQNetwork,
    env_id: str | None,
    n_observations: int = DISTILL_OBSERVATIONS,
    seed: int = 10_000,
) -> DistillationSet:
    """The distillation states of ``model`` and the answers of ``net`` (its float Q-network, the teacher) on them.

    :param model: the DQN (its replay buffer, when it has one, gives states)
    :param net: its Q-network, in float mode (no fake quantization)
    :param env_id: Gymnasium id of the float policy's episodes (``None``: replay states only)
    :param n_observations: states of the float policy's episodes
    :param seed: seed of the first of those episodes
    :raises ValueError: no states at all
    """
    parts: list[np.ndarray] = []
    if env_id is not None and n_observations > 0:
        parts.append(record_observations(net, env_id, n_observations, seed=seed))
    from_policy = len(parts[0]) if parts else 0
    buffer = getattr(model, "replay_buffer", None)
    if buffer is not None and buffer.size() > 0:
        end = buffer.buffer_size if buffer.full else buffer.pos
        replay = buffer.observations[:end].reshape(-1, net.obs_dim)[-REPLAY_OBSERVATIONS:]
        parts.append(np.asarray(replay, dtype=np.float32))
    if not parts:
        raise ValueError("distillation needs states: pass env_id, or give the model a replay buffer")
    states = th.as_tensor(np.concatenate(parts), device=next(net.parameters()).device)
    was_training = net.training
    net.eval()
    with th.no_grad():
        teacher_q = th.cat([net(batch) for batch in states.split(1024)])
    net.train(was_training)
    top2 = teacher_q.topk(2, dim=1).values if teacher_q.shape[1] > 1 else None
    gap = float((top2[:, 0] - top2[:, 1]).mean()) if top2 is not None else 0.0
    scale = float(teacher_q.std())
    return DistillationSet(
        states, teacher_q, scale if scale > 0 else 1.0, gap if gap > 0 else 1.0, from_policy, len(states) - from_policy
    )


def distillation_loss(student_q: th.Tensor, teacher_q: th.Tensor, scale: float, gap: float) -> th.Tensor:
    """The loss of the module docstring on a batch: Q-value MSE over ``scale**2`` plus cross-entropy at ``gap``."""
    mse = ((student_q - teacher_q) / scale).pow(2).mean()
    cross_entropy = F.cross_entropy(student_q / gap, teacher_q.argmax(1))
    return MSE_WEIGHT * mse + CE_WEIGHT * cross_entropy


def set_loss(net: SpikingQNetwork, data: DistillationSet) -> float:
    """The distillation loss of ``net`` (as it computes now: fake-quantized or not) over the whole set."""
    was_training = net.training
    net.eval()
    with th.no_grad():
        student_q = th.cat([net(batch) for batch in data.states.split(1024)])
    net.train(was_training)
    return float(distillation_loss(student_q, data.teacher_q, data.scale, data.gap))


def distill_steps(
    net: SpikingQNetwork,
    grid: Grid,
    data: DistillationSet,
    steps: int,
    learning_rate: float,
    batch_size: int,
    grid_pull: float,
    chunk: int,
    seed: int,
    on_progress: Callable[[int], None],
) -> None:
    """``steps`` Adam steps of the distillation loss on minibatches of ``data``, pulled to the grid between chunks.

    The network must already be fake-quantized on ``grid``; it is in training mode during
    the steps (surrogate gradients) and back in its mode after. The optimizer is a fresh
    Adam over the network's parameters (the DQN's own optimizer state is left alone).
    """
    weights = [layer.weight for layer in net.linear_layers()]
    optimizer = th.optim.Adam(net.parameters(), lr=learning_rate)
    generator = th.Generator().manual_seed(int(seed))
    was_training = net.training
    net.train()
    try:
        done = 0
        while done < steps:
            n = min(chunk, steps - done)
            for _ in range(n):
                pick = th.randint(len(data.states), (batch_size,), generator=generator).to(data.states.device)
                loss = distillation_loss(net(data.states[pick]), data.teacher_q[pick], data.scale, data.gap)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            grid.pull(weights, 1.0 - (1.0 - grid_pull) ** n)
            done += n
            on_progress(done)
    finally:
        net.train(was_training)


def quantized_loss(net: SpikingQNetwork, grid: Grid, data: DistillationSet) -> float:
    """The distillation loss of ``net`` fake-quantized on ``grid`` (its fake quantization is restored after)."""
    saved = net.fake_quantization
    net.set_fake_quantization(grid)
    try:
        return set_loss(net, data)
    finally:
        net.set_fake_quantization(saved)
