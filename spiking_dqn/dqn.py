"""``SpikingDQN``: SB3's ``DQN`` whose gradient step runs the spiking Q-network without autograd.

SB3's ``DQN.train`` builds an autograd graph for every gradient step: the online forward
(one node for the whole spiking network on the CPU, :mod:`spiking_dqn.fused`), the gather
of the taken actions' Q-values, the Huber loss, then the engine's backward through them.
On the small batches of the recipes those calls cost as much as the network's arithmetic.
:class:`SpikingDQN` computes the same update directly: the online forward keeps its tape
(:meth:`~spiking_dqn.network.SpikingQNetwork.compiled_forward`; the target
network's forward is one such call too), ``dL/dq`` comes from ATen's
own Huber-loss backward scattered to the taken actions (what autograd's gather backward
does), the compiled backward (:func:`spiking_dqn.fused.network_backward`) gives the
gradients, then SB3's gradient clipping (the same tensor operations as
``clip_grad_norm_``, without its per-call grouping, and no multiplication by a factor of
exactly 1) and the optimizer step. Where the optimizer takes ``foreach`` and the policy's
``optimizer_kwargs`` do not set it, it steps all parameters in one multi-tensor call
(``foreach=True``: the same arithmetic as the per-tensor loop that is PyTorch's default on
the CPU). The weights after training are bit-identical to ``DQN``'s with the same seed
(tested).

Where the gradient needs autograd (QAT's straight-through weights, the activity penalty,
a network on an accelerator, a policy that is not a ``SpikingDQNPolicy``) the gradient
step is ``DQN.train``'s. A ``SpikingDQN`` saves and loads as any SB3 model; ``DQN.load``
reads its files too.

Example::

    from spiking_dqn import SpikingDQN, SpikingDQNPolicy

    model = SpikingDQN(SpikingDQNPolicy, "CartPole-v1", policy_kwargs=dict(ticks=10))
    model.learn(10_000)
"""

from __future__ import annotations

import inspect

import numpy as np
import torch as th
from stable_baselines3 import DQN
from stable_baselines3.common.type_aliases import Schedule
from stable_baselines3.common.utils import LinearSchedule

from envs.bounds import registered_id
from spiking_dqn import fused
from spiking_dqn.network import SpikingQNetwork
from spiking_dqn.policies import SpikingDQNPolicy

#: ATen's code of the mean reduction (``torch.nn._reduction.get_enum("mean")``).
_MEAN = 1
#: How rl-zoo files write a learning rate that falls linearly to 0 over the training: ``lin_<initial value>``.
LINEAR_PREFIX = "lin_"


def learning_rate_schedule(value: float | str | Schedule) -> float | Schedule:
    """A ``learning_rate`` as SB3 takes it: anything but a string as given, rl-zoo's ``"lin_<value>"`` as a schedule.

    ``"lin_1e-3"`` falls linearly from 1e-3 at the start of the training to 0 at its end
    (rl-zoo's ``SimpleLinearSchedule``: ``progress_remaining * 1e-3``; here SB3's ``LinearSchedule``).

    :param value: a number, a callable of the remaining progress, or ``"lin_<positive number>"``
    :raises ValueError: another string
    """
    if isinstance(value, str):
        text = value.strip()
        try:
            initial = float(text[len(LINEAR_PREFIX):]) if text.startswith(LINEAR_PREFIX) else None
        except ValueError:
            initial = None
        if initial is None or not initial > 0 or not np.isfinite(initial):
            raise ValueError(f"learning_rate {value!r}: give a positive number or rl-zoo's linear schedule "
                             f"'{LINEAR_PREFIX}<positive number>' (e.g. '{LINEAR_PREFIX}1e-3')")
        return LinearSchedule(initial, 0.0, 1.0)
    return value


class SpikingDQN(DQN):
    """Deep Q-Network (SB3's ``DQN``, the same arguments) with a compiled gradient step for spiking Q-networks.

    See the module docstring; every argument is ``stable_baselines3.DQN``'s, and ``learning_rate``
    also takes rl-zoo's ``"lin_<value>"`` (:func:`learning_rate_schedule`).
    """

    def _setup_lr_schedule(self) -> None:
        """SB3's, with rl-zoo's ``"lin_<value>"`` learning rates made a schedule first."""
        self.learning_rate = learning_rate_schedule(self.learning_rate)
        super()._setup_lr_schedule()

    def _setup_model(self) -> None:
        """SB3's, with the env's id as the encoder bounds' source where the policy would only see its space.

        A ``SpikingDQNPolicy`` without ``obs_bound`` on a registered env whose space has
        unbounded dimensions (CartPole) gets ``obs_bound=<env id>`` (the same bounds, named;
        see ``envs.bounds.choose_bounds``); the saved ``policy_kwargs`` stay as given.
        """
        given = self.policy_kwargs
        env_id = registered_id(self.env)
        low, high = getattr(self.observation_space, "low", 0.0), getattr(self.observation_space, "high", 0.0)
        if (env_id is not None and "obs_bound" not in given and issubclass(self.policy_class, SpikingDQNPolicy)
                and not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)))):
            self.policy_kwargs = {**given, "obs_bound": env_id}
        try:
            super()._setup_model()
        finally:
            self.policy_kwargs = given
        optimizer = self.policy.optimizer
        if "foreach" not in self.policy_kwargs.get("optimizer_kwargs", {}) and "foreach" in inspect.signature(
                type(optimizer).__init__).parameters:
            for group in optimizer.param_groups:
                group["foreach"] = True

    def _compiled_network(self) -> SpikingQNetwork | None:
        """The online spiking network when its gradient step can run compiled, else ``None``."""
        net = getattr(self.policy.q_net, "q_net", None)
        if isinstance(net, SpikingQNetwork) and net.supports_compiled_step:
            return net
        return None

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        """``DQN.train``'s update, ``gradient_steps`` times: sample, TD target, Huber loss, clipped optimizer step.

        :param gradient_steps: gradient steps to take
        :param batch_size: minibatch size
        """
        net, target_net = self._compiled_network(), getattr(self.policy.q_net_target, "q_net", None)
        if net is None or not isinstance(target_net, SpikingQNetwork) or not target_net.supports_compiled_step:
            return super().train(gradient_steps, batch_size)
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        q_net, target = self.policy.q_net, self.policy.q_net_target
        params = [p for layer in net.linear_layers() for p in (layer.weight, layer.bias)]
        one = th.ones(())
        losses = []
        for _ in range(gradient_steps):
            replay_data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            discounts = replay_data.discounts if replay_data.discounts is not None else self.gamma
            with th.no_grad():
                features = target.extract_features(replay_data.next_observations, target.features_extractor)
                next_q_values = th.from_numpy(target_net.compiled_forward(features)[0])
                next_q_values, _ = next_q_values.max(dim=1)
                next_q_values = next_q_values.reshape(-1, 1)
                target_q_values = replay_data.rewards + (1 - replay_data.dones) * discounts * next_q_values
                # The online forward, keeping its tape instead of a graph.
                features = q_net.extract_features(replay_data.observations, q_net.features_extractor)
                q, tape, weights, plan = net.compiled_forward(features, keep_tape=True)
                q_values = th.from_numpy(q)
                actions = replay_data.actions.long()
                current_q_values = th.gather(q_values, dim=1, index=actions)
                loss = th.nn.functional.smooth_l1_loss(current_q_values, target_q_values)
                losses.append(loss.item())
                # dL/dq: the Huber loss's backward (ATen's kernel), then the gather's (a scatter-add into zeros).
                grad_current = th.ops.aten.smooth_l1_loss_backward(one, current_q_values, target_q_values, _MEAN, 1.0)
                grad_q = th.zeros_like(q_values).scatter_add_(1, actions, grad_current)
            self.policy.optimizer.zero_grad()
            _, grads = fused.network_backward(tape, weights, plan, np.ascontiguousarray(grad_q.numpy()))
            del tape  # its arrays go back to the kernels' workspace
            tensors = [None if grad is None else th.from_numpy(grad) for grad in grads]
            for param, grad in zip(params, tensors):
                param.grad = grad
            self._clip_gradients([grad for grad in tensors if grad is not None])
            self.policy.optimizer.step()
        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/loss", np.mean(losses))
        return None

    def _clip_gradients(self, grads: list[th.Tensor]) -> None:
        """``clip_grad_norm_(policy.parameters(), max_grad_norm)`` on the gradients (in place), bit for bit.

        ``DQN.train`` clips over ``policy.parameters()``, of which only the online network's
        weights and biases have gradients: these, in the same order. The operations are
        ``clip_grad_norm_``'s on CPU tensors (per-tensor norms, the norm of the norms, the
        clamped factor); the multiplication is left out when the factor is exactly 1.

        :param grads: the gradients, CPU float tensors
        """
        total = th.linalg.vector_norm(th.stack(th._foreach_norm(grads, 2.0)), 2.0)
        factor = th.clamp(float(self.max_grad_norm) / (total + 1e-6), max=1.0)
        if factor.item() != 1.0:
            th._foreach_mul_(grads, factor)
