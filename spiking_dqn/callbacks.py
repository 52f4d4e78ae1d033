"""SB3 callbacks for spiking Q-networks."""

from __future__ import annotations

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback

from spiking_dqn.policies import SpikingDQNPolicy


def activity_summary(counts: list[th.Tensor], ticks: int, delay: int, saturation: float = 0.95) -> dict[str, float]:
    """Spike statistics of one batch of inferences.

    :param counts: spike counts over the ticks per population, ``(batch, n)`` each: the
        input neurons first, then every hidden layer
    :param ticks: ticks per inference
    :param delay: synaptic delay (hidden layer ``i`` can fire in ``ticks - (i + 1) * delay`` ticks)
    :param saturation: a neuron is saturated when its mean count reaches this fraction of
        the ticks in which it can fire
    :return: ``{name: value}`` with ``<pop>_rate`` (spikes per neuron per tick),
        ``<pop>_silent_frac`` and ``<pop>_saturated_frac`` for each hidden layer, the
        input rate, and ``spikes_per_inference`` (all hidden spikes)
    """
    out: dict[str, float] = {"input_rate": float(counts[0].float().mean()) / ticks}
    total = 0.0
    for i, layer in enumerate(counts[1:]):
        layer = layer.float()
        reachable = max(ticks - (i + 1) * delay, 1)
        mean_per_neuron = layer.mean(0)
        out[f"hidden{i + 1}_rate"] = float(mean_per_neuron.mean()) / ticks
        out[f"hidden{i + 1}_silent_frac"] = float((layer.sum(0) == 0).float().mean())
        out[f"hidden{i + 1}_saturated_frac"] = float((mean_per_neuron >= saturation * reachable).float().mean())
        total += float(layer.sum(1).mean())
    out["spikes_per_inference"] = total
    return out


class SpikeActivityLogger(BaseCallback):
    """Log the spiking activity of the Q-network to the SB3 logger (TensorBoard).

    Every ``log_freq`` environment steps it runs the online Q-network on observations
    drawn from the replay buffer and records, under ``spikes/``, per-layer spike rates and
    the fractions of silent and saturated neurons.

    :param log_freq: environment steps between two measurements
    :param n_samples: observations per measurement
    :param verbose: verbosity
    """

    def __init__(self, log_freq: int = 1000, n_samples: int = 256, verbose: int = 0) -> None:
        super().__init__(verbose)
        if log_freq < 1 or n_samples < 1:
            raise ValueError("log_freq and n_samples must be positive")
        self.log_freq = log_freq
        self.n_samples = n_samples
        self.last: dict[str, float] = {}

    def _init_callback(self) -> None:
        if not isinstance(self.model.policy, SpikingDQNPolicy):
            raise TypeError(f"SpikeActivityLogger needs a SpikingDQNPolicy, got {type(self.model.policy).__name__}")

    def _on_step(self) -> bool:
        if self.n_calls % self.log_freq != 0:
            return True
        buffer = getattr(self.model, "replay_buffer", None)
        if buffer is None or buffer.size() == 0:
            return True
        obs = buffer.sample(min(self.n_samples, buffer.size())).observations
        q_net = self.model.policy.q_net
        with th.no_grad():
            _, counts = q_net.forward_with_activity(obs)
        net = q_net.q_net
        self.last = activity_summary(counts, net.ticks, net.synaptic_delay)
        for key, value in self.last.items():
            self.logger.record(f"spikes/{key}", value)
        return True
