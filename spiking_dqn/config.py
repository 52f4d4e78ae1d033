"""The spiking options of a network: :class:`SpikingConfig`, their defaults, checked in one place."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from spiking_dqn.neuron import SURROGATES, SpikeFunction
from spiking_dqn.semantics.checks import check_bool, check_int, check_real
from spiking_dqn.semantics.encoding import ENCODING_MODES, EncodingMode
from spiking_dqn.semantics.lif import RESET_MODES, ResetMode
from spiking_dqn.thresholds import ThresholdNoise, ThresholdNoiseSpec

SpikingOption = Sequence[int] | int | float | str | SpikeFunction | ThresholdNoiseSpec | None
"""The value of one :class:`SpikingConfig` option passed as a keyword argument."""


@dataclass(frozen=True)
class SpikingConfig:
    """The spiking options of a :class:`~spiking_dqn.network.SpikingQNetwork`, with their defaults, checked on construction.

    ``SpikingQNetwork`` and ``SpikingDQNPolicy`` accept these options as keyword arguments
    (so plain-value ``policy_kwargs``, as in rl-zoo files and saved models, work) and build
    one ``SpikingConfig`` from them. ``SpikingConfig(**config.to_kwargs()) == config``.

    :param net_arch: hidden layer sizes, at least one layer (stored as a tuple of ints)
    :param ticks: simulation ticks per inference, a positive integer; input spikes need
        ``(len(net_arch) + 1) * synaptic_delay`` ticks to reach the readout, so more than that
    :param beta: membrane decay of the hidden neurons, in [0, 1] (the chip's ``alpha_decay``)
    :param threshold: firing threshold of the hidden neurons, positive and finite
    :param surrogate: surrogate gradient, a name from ``spiking_dqn.neuron.SURROGATES`` or an
        snnTorch surrogate spike function
    :param reset: reset mechanism of the hidden neurons, ``"subtract"`` or ``"zero"``
    :param synaptic_delay: ticks from a spike to its arrival, 1 (chip timing) or 0
    :param encoding: input spike generation, ``"deterministic"``, ``"poisson"`` or ``"hybrid"``
        (NeuEdge's hybrid coding: input thresholds ``1 - encoding_alpha * r``)
    :param encoding_alpha: hybrid coding's threshold slope, in [0, 1) (used only with ``"hybrid"``)
    :param encoding_seed: seed of the Poisson encoder (``None``: unseeded)
    :param threshold_noise: ASPEN's stochastic thresholds in training
        (:class:`spiking_dqn.thresholds.ThresholdNoise`): ``(low, high)`` for ``U(low, high)``,
        ``{"levels": [...]}`` for discrete factors, or ``None`` (off). Each training forward
        (module in training mode, gradients enabled: one per SB3 gradient step) multiplies
        every hidden threshold by one drawn factor; acting and the target network use the
        nominal thresholds. Stored as a ``ThresholdNoise``.
    :param threshold_noise_seed: seed of the noise draws (``None``: drawn from torch's global
        generator when the network is built, so SB3's ``seed`` fixes it); the generator's
        state is saved with the weights
    :param activity_penalty: coefficient ``c >= 0`` of NeuEdge's activity term: each
        training forward adds ``c * mean_batch(synaptic events per inference)``
        (:meth:`spiking_dqn.network.SpikingQNetwork.synaptic_events`, differentiable through the surrogate) to
        whatever loss is backpropagated through its Q-values, so SB3's ``DQN`` trains with
        ``loss + penalty`` unchanged (see :class:`spiking_dqn.activity.AddPenalty`); 0 (default) is off
    :param tick_gain: give every projection a learned gain per tick (TaWQ's temporal
        adaptation, :mod:`spiking_dqn.tick_gain`), initialised to 1; the forward then runs
        tick by tick in torch ops instead of the compiled pass
    """

    net_arch: tuple[int, ...] = (64, 64)
    ticks: int = 10
    beta: float = 0.9
    threshold: float = 1.0
    surrogate: str | SpikeFunction = "atan"
    reset: ResetMode = "subtract"
    synaptic_delay: int = 1
    encoding: EncodingMode = "deterministic"
    encoding_seed: int | None = None
    encoding_alpha: float = 0.5
    threshold_noise: ThresholdNoise | None = None
    threshold_noise_seed: int | None = None
    activity_penalty: float = 0.0
    tick_gain: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.beta) <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {self.beta}")
        if not float(self.threshold) > 0.0 or not np.isfinite(self.threshold):
            raise ValueError(f"threshold must be positive and finite, got {self.threshold}")
        if self.reset not in RESET_MODES:
            raise ValueError(f"reset must be 'subtract' or 'zero', got {self.reset!r}")
        if self.synaptic_delay not in (0, 1):
            raise ValueError(f"synaptic_delay must be 0 or 1, got {self.synaptic_delay!r}")
        if len(self.net_arch) == 0 or any(int(n) < 1 for n in self.net_arch):
            raise ValueError(f"net_arch must be a non-empty list of positive sizes, got {list(self.net_arch)}")
        ticks = self.ticks
        check_int(ticks, "ticks", minimum=1)
        if self.encoding not in ENCODING_MODES:
            raise ValueError(f"encoding mode must be one of {ENCODING_MODES}, got {self.encoding!r}")
        if not callable(self.surrogate) and self.surrogate not in SURROGATES:
            raise ValueError(
                f"unknown surrogate {self.surrogate!r}; choose one of {sorted(SURROGATES)} or pass a callable"
            )
        needed = (len(self.net_arch) + 1) * self.synaptic_delay
        if ticks <= needed:
            raise ValueError(
                f"ticks={ticks} is too few: with synaptic_delay={self.synaptic_delay} and {len(self.net_arch)} "
                f"hidden layers, input spikes need {needed} ticks to reach the readout"
            )
        alpha = self.encoding_alpha
        check_real(alpha, "encoding_alpha", what="a number in [0, 1)")
        if not (np.isfinite(alpha) and 0.0 <= alpha < 1.0):
            raise ValueError(f"encoding_alpha (hybrid coding) must be in [0, 1), got {alpha!r}")
        penalty = self.activity_penalty
        check_real(penalty, "activity_penalty", what="a non-negative number")
        if not np.isfinite(penalty) or penalty < 0:
            raise ValueError(f"activity_penalty must be a non-negative finite number, got {penalty!r}")
        check_bool(self.tick_gain, "tick_gain", what="True or False")
        seed = self.threshold_noise_seed
        if seed is not None:
            check_int(seed, "threshold_noise_seed", minimum=0, what="a non-negative integer or None")
        # Plain Python values, whatever number types the options came in.
        for name, value in [
            ("threshold_noise", ThresholdNoise.from_spec(self.threshold_noise)),  # type: ignore[arg-type]
            ("activity_penalty", float(penalty)),
            ("tick_gain", bool(self.tick_gain)),
            ("encoding_alpha", float(alpha)),
            ("threshold_noise_seed", None if seed is None else int(seed)),
            ("net_arch", tuple(int(n) for n in self.net_arch)),
            ("ticks", int(ticks)),
            ("beta", float(self.beta)),
            ("threshold", float(self.threshold)),
            ("synaptic_delay", int(self.synaptic_delay)),
        ]:
            object.__setattr__(self, name, value)

    def to_kwargs(self) -> dict[str, SpikingOption]:
        """The options as plain keyword arguments (``net_arch`` as a list), e.g. for ``policy_kwargs``."""
        kwargs: dict[str, SpikingOption] = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        kwargs["net_arch"] = list(self.net_arch)
        kwargs["threshold_noise"] = None if self.threshold_noise is None else self.threshold_noise.to_spec()
        return kwargs
