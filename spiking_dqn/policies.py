"""Stable-Baselines3 glue: a DQN policy whose Q-network is a ``SpikingQNetwork``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, FlattenExtractor
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from stable_baselines3.dqn.policies import DQNPolicy, QNetwork
from torch import nn

from envs.bounds import bounds_for_space
from spiking_dqn.network import SpikingQNetwork


class SpikingQNet(QNetwork):
    """SB3 ``QNetwork`` whose ``q_net`` is a :class:`SpikingQNetwork`.

    :param observation_space: a 1-D ``Box`` space
    :param action_space: a ``Discrete`` space
    :param features_extractor: SB3 features extractor (a flatten by default)
    :param features_dim: its output dimension (the observation dimension)
    :param net_arch: hidden layer sizes
    :param obs_bound: encoder bounds (array, registered env id, or ``None`` to infer)
    :param spiking_kwargs: the remaining ``SpikingQNetwork`` arguments
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Discrete,
        features_extractor: BaseFeaturesExtractor,
        features_dim: int,
        net_arch: list[int] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        normalize_images: bool = True,
        obs_bound: np.ndarray | list[float] | str | None = None,
        **spiking_kwargs: Any,
    ) -> None:
        BasePolicy.__init__(
            self,
            observation_space,
            action_space,
            features_extractor=features_extractor,
            normalize_images=normalize_images,
        )
        self.net_arch = list(net_arch) if net_arch is not None else [64, 64]
        self.activation_fn = activation_fn
        self.features_dim = features_dim
        self.obs_bound = obs_bound
        self.spiking_kwargs = spiking_kwargs
        bound = bounds_for_space(observation_space, obs_bound)
        self.q_net: SpikingQNetwork = SpikingQNetwork(
            bound, int(action_space.n), net_arch=self.net_arch, **spiking_kwargs
        )

    def forward(self, obs: PyTorchObs) -> th.Tensor:
        return self.q_net(self.extract_features(obs, self.features_extractor))

    def forward_with_activity(self, obs: PyTorchObs) -> tuple[th.Tensor, list[th.Tensor]]:
        """Q-values and per-population spike counts (input, then each hidden layer)."""
        return self.q_net(self.extract_features(obs, self.features_extractor), return_activity=True)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(dict(obs_bound=self.obs_bound, **self.spiking_kwargs))
        return data


class SpikingDQNPolicy(DQNPolicy):
    """DQN policy with a rate-coded spiking Q-network, for the unchanged SB3 ``DQN``.

    ``DQN(SpikingDQNPolicy, env, policy_kwargs=dict(net_arch=[64, 64], ticks=10))``

    :param observation_space: a 1-D ``Box`` observation space
    :param action_space: a ``Discrete`` action space
    :param lr_schedule: learning rate schedule
    :param net_arch: hidden layer sizes (default ``[64, 64]``)
    :param obs_bound: encoder bounds: an array, a registered env id (see ``envs.bounds``), or
        ``None`` to take them from the space or the registered env with this space
    :param ticks: simulation ticks per inference (default 10)
    :param beta: membrane decay of the hidden LIF neurons, in [0, 1] (default 0.9)
    :param threshold: hidden firing threshold (default 1.0)
    :param surrogate: surrogate gradient name or snnTorch surrogate (default ``"atan"``)
    :param reset: ``"subtract"`` (default) or ``"zero"``
    :param synaptic_delay: 1 (chip timing, default) or 0
    :param encoding: ``"deterministic"`` (default) or ``"poisson"``
    :param encoding_seed: seed of the Poisson encoder
    :param optimizer_class: optimizer (Adam by default)
    :param optimizer_kwargs: extra optimizer arguments
    """

    q_net: SpikingQNet
    q_net_target: SpikingQNet

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Discrete,
        lr_schedule: Schedule,
        net_arch: list[int] | None = None,
        obs_bound: np.ndarray | list[float] | str | None = None,
        ticks: int = 10,
        beta: float = 0.9,
        threshold: float = 1.0,
        surrogate: str | Callable = "atan",
        reset: str = "subtract",
        synaptic_delay: int = 1,
        encoding: str = "deterministic",
        encoding_seed: int | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(action_space, spaces.Discrete):
            raise ValueError(f"SpikingDQNPolicy needs a Discrete action space, got {action_space}")
        self.spiking_kwargs: dict[str, Any] = dict(
            obs_bound=obs_bound,
            ticks=ticks,
            beta=beta,
            threshold=threshold,
            surrogate=surrogate,
            reset=reset,
            synaptic_delay=synaptic_delay,
            encoding=encoding,
            encoding_seed=encoding_seed,
        )
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch=net_arch,
            activation_fn=activation_fn,
            features_extractor_class=features_extractor_class,
            features_extractor_kwargs=features_extractor_kwargs,
            normalize_images=normalize_images,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
        )

    def make_q_net(self) -> SpikingQNet:
        net_args = self._update_features_extractor(self.net_args, features_extractor=None)
        return SpikingQNet(**net_args, **self.spiking_kwargs).to(self.device)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(self.spiking_kwargs)
        return data
