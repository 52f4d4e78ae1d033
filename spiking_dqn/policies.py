"""Stable-Baselines3 glue: a DQN policy whose Q-network is a ``SpikingQNetwork``."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, FlattenExtractor
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from stable_baselines3.dqn.policies import DQNPolicy, QNetwork
from torch import nn

from envs.bounds import BoundChoice, InputActivityCheck, choose_bounds
from spiking_dqn.config import SpikingConfig, SpikingOption
from spiking_dqn.network import SpikingQNetwork
from spiking_dqn.threads import choose_torch_threads

ObsBoundSpec = np.ndarray | list[float] | str | None
"""Encoder bounds as a policy takes them: an array, a registered env id, or ``None`` to infer."""


class SpikingQNet(QNetwork):
    """SB3 ``QNetwork`` whose ``q_net`` is a :class:`SpikingQNetwork`.

    :param observation_space: a 1-D ``Box`` space
    :param action_space: a ``Discrete`` space
    :param features_extractor: SB3 features extractor (a flatten by default)
    :param features_dim: its output dimension (the observation dimension)
    :param net_arch: hidden layer sizes (``None``: those of ``config``)
    :param activation_fn: unused (spiking neurons are the nonlinearity); kept for SB3
    :param normalize_images: SB3's image normalisation flag
    :param obs_bound: encoder bounds (array, registered env id, or ``None`` to infer)
    :param config: the spiking options (default: ``SpikingConfig()``); ``net_arch``, when
        given, replaces its hidden layer sizes
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
        obs_bound: ObsBoundSpec = None,
        config: SpikingConfig | None = None,
    ) -> None:
        BasePolicy.__init__(
            self,
            observation_space,
            action_space,
            features_extractor=features_extractor,
            normalize_images=normalize_images,
        )
        config = config or SpikingConfig()
        if net_arch is not None:
            config = dataclasses.replace(config, net_arch=tuple(net_arch))
        self.config = config
        self.net_arch = list(config.net_arch)
        self.activation_fn = activation_fn
        self.features_dim = features_dim
        self.obs_bound = obs_bound
        #: The encoder bounds chosen and why (``envs.bounds.choose_bounds``); after a load, the saved ones.
        self.bound_choice: BoundChoice = choose_bounds(observation_space, obs_bound)
        self._input_check: InputActivityCheck | None = InputActivityCheck(self.bound_choice, config.ticks)
        self.q_net: SpikingQNetwork = SpikingQNetwork(self.bound_choice.bound, int(action_space.n), config=config)

    def bounds_loaded(self) -> None:
        """Record that the encoder bounds now come from a saved model (no look-alike warning then)."""
        bound = self.q_net.encoder.bound.detach().cpu().numpy().copy()
        self.bound_choice = BoundChoice(bound, "the saved model's encoder bounds")
        if self._input_check is not None:
            self._input_check.choice = self.bound_choice

    def forward(self, obs: PyTorchObs) -> th.Tensor:
        if self._input_check is not None:
            self._check_inputs(obs)
        return self.q_net(self.extract_features(obs, self.features_extractor))

    def _check_inputs(self, obs: PyTorchObs) -> None:
        """On the first observations: warn about look-alike bounds and an almost silent encoder (once each)."""
        check = self._input_check
        if check is None:
            return
        if self.bound_choice.lookalike is not None and check.count == 0:
            warnings.warn(f"encoder bounds {self.bound_choice.shown()}: {self.bound_choice.reason}",
                          UserWarning, stacklevel=2)
        if not isinstance(obs, th.Tensor):  # not a Box observation: nothing to judge
            self._input_check = None
            return
        check.see(obs.detach().cpu().numpy())
        if check.done:
            self._input_check = None

    def forward_with_activity(self, obs: PyTorchObs) -> tuple[th.Tensor, list[th.Tensor]]:
        """Q-values and per-population spike counts (input, then each hidden layer)."""
        return self.q_net(self.extract_features(obs, self.features_extractor), return_activity=True)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(obs_bound=self.obs_bound, config=self.config)
        return data


class SpikingDQNPolicy(DQNPolicy):
    """DQN policy with a rate-coded spiking Q-network, for the unchanged SB3 ``DQN``.

    ``DQN(SpikingDQNPolicy, env, policy_kwargs=dict(net_arch=[64, 64], ticks=10))``

    The spiking options are the fields of :class:`spiking_dqn.config.SpikingConfig`
    (``ticks``, ``beta``, ``threshold``, ``surrogate``, ``reset``, ``synaptic_delay``,
    ``encoding``, ``encoding_seed``, ``encoding_alpha``, ``threshold_noise``, ``threshold_noise_seed``,
    ``activity_penalty``), given by name as plain values; their defaults and checks are
    that class's.

    :param observation_space: a 1-D ``Box`` observation space
    :param action_space: a ``Discrete`` action space
    :param lr_schedule: learning rate schedule
    :param net_arch: hidden layer sizes (``None``: ``SpikingConfig``'s default)
    :param obs_bound: encoder bounds: an array, a registered env id (see ``envs.bounds``), or
        ``None`` to take them from the space or the registered env with this space
    :param activation_fn: unused (spiking neurons are the nonlinearity); kept for SB3
    :param features_extractor_class: SB3 features extractor (a flatten by default)
    :param features_extractor_kwargs: its keyword arguments
    :param normalize_images: SB3's image normalisation flag
    :param optimizer_class: optimizer (Adam by default)
    :param optimizer_kwargs: extra optimizer arguments
    :param spiking_options: the spiking options by name (see above)
    """

    q_net: SpikingQNet
    q_net_target: SpikingQNet

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Discrete,
        lr_schedule: Schedule,
        net_arch: list[int] | None = None,
        obs_bound: ObsBoundSpec = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        **spiking_options: SpikingOption,
    ) -> None:
        if not isinstance(action_space, spaces.Discrete):
            raise ValueError(f"SpikingDQNPolicy needs a Discrete action space, got {action_space}")
        choose_torch_threads()
        if net_arch is not None:
            spiking_options["net_arch"] = net_arch
        self.spiking_config = SpikingConfig(**spiking_options)  # type: ignore[arg-type]
        self.obs_bound = obs_bound
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch=list(self.spiking_config.net_arch),
            activation_fn=activation_fn,
            features_extractor_class=features_extractor_class,
            features_extractor_kwargs=features_extractor_kwargs,
            normalize_images=normalize_images,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
        )
        self.q_net_target._input_check = None  # the online network checks the inputs (one warning, not two)

    @property
    def threshold_scale(self) -> float:
        """Runtime factor on every hidden threshold of the online and target networks (default 1.0).

        ``model.policy.threshold_scale = 1.5`` sweeps the float policy as
        ``HardwarePolicy.threshold_scale`` sweeps the chip (same thresholds, see
        :attr:`SpikingQNetwork.threshold_scale`). Not saved with the model.
        """
        return self.q_net.q_net.threshold_scale

    @threshold_scale.setter
    def threshold_scale(self, value: float) -> None:
        for net in (self.q_net, self.q_net_target):
            net.q_net.threshold_scale = value

    @property
    def device(self) -> th.device:
        """The policy's device: its online network's (SB3's walks every parameter for it, before every ``predict``)."""
        q_net = self._modules.get("q_net")
        return super().device if q_net is None else q_net.q_net.readout.weight.device

    def set_training_mode(self, mode: bool) -> None:
        """SB3's (train or eval mode for the online network), skipped when every module is in ``mode`` already.

        SB3 calls it before every ``predict`` and every ``train``; setting the flag on each
        module costs several times more than checking it.

        :param mode: True for training mode, False for evaluation mode
        """
        if self.training != mode or any(module.training != mode for module in self.q_net.modules()):
            super().set_training_mode(mode)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """``nn.Module.load_state_dict``; the encoder bounds are then the saved model's (``SpikingQNet.bound_choice``)."""
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        for net in (self.q_net, self.q_net_target):
            net.bounds_loaded()
        return result

    def make_q_net(self) -> SpikingQNet:
        net_args = self._update_features_extractor(self.net_args, features_extractor=None)
        return SpikingQNet(**net_args, obs_bound=self.obs_bound, config=self.spiking_config).to(self.device)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(obs_bound=self.obs_bound, **self.spiking_config.to_kwargs())
        return data
