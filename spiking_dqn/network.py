"""The float spiking Q-network: encoder -> LIF hidden layers -> integrator readout.

The hidden layers are chip-timed :class:`spiking_dqn.layers.ChipLeaky` neurons
(SpiNNaker2 ``lif_no_delay`` semantics, see ``DESIGN.md``), so that the trained network
deploys faithfully. On the CPU the whole network runs as one compiled pass and one
autograd node (:mod:`spiking_dqn.fused`); elsewhere layer by layer
(:func:`spiking_dqn.layers.spiking_layer`), with the same spikes. The readout integrates its
synaptic current without leak or spikes; its membrane after the last tick is the Q-value.
:class:`SpikingConfig` holds the spiking options and their defaults, checked in one place.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, overload

import numpy as np
import torch as th
from torch import nn

from spiking_dqn import fused
from spiking_dqn.encoding import ENCODING_MODES, EncodingMode, SignedRateEncoder
from spiking_dqn.quantization.grid import Grid
from spiking_dqn.layers import (
    RESET_MODES,
    SURROGATES,
    ChipLeaky,
    ResetMode,
    SpikeFunction,
    make_surrogate,
    spiking_layer,
    surrogate_code,
)

SpikingOption = Sequence[int] | int | float | str | SpikeFunction | None
"""The value of one :class:`SpikingConfig` option passed as a keyword argument."""


@dataclass(frozen=True)
class SpikingConfig:
    """The spiking options of a :class:`SpikingQNetwork`, with their defaults, checked on construction.

    ``SpikingQNetwork`` and ``SpikingDQNPolicy`` accept these options as keyword arguments
    (so plain-value ``policy_kwargs``, as in rl-zoo files and saved models, work) and build
    one ``SpikingConfig`` from them. ``SpikingConfig(**config.to_kwargs()) == config``.

    :param net_arch: hidden layer sizes, at least one layer (stored as a tuple of ints)
    :param ticks: simulation ticks per inference, a positive integer; input spikes need
        ``(len(net_arch) + 1) * synaptic_delay`` ticks to reach the readout, so more than that
    :param beta: membrane decay of the hidden neurons, in [0, 1] (the chip's ``alpha_decay``)
    :param threshold: firing threshold of the hidden neurons, positive and finite
    :param surrogate: surrogate gradient, a name from ``spiking_dqn.layers.SURROGATES`` or an
        snnTorch surrogate spike function
    :param reset: reset mechanism of the hidden neurons, ``"subtract"`` or ``"zero"``
    :param synaptic_delay: ticks from a spike to its arrival, 1 (chip timing) or 0
    :param encoding: input spike generation, ``"deterministic"`` or ``"poisson"``
    :param encoding_seed: seed of the Poisson encoder (``None``: unseeded)
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
        if not isinstance(ticks, (int, np.integer)) or isinstance(ticks, bool) or ticks < 1:
            raise ValueError(f"ticks must be a positive integer, got {ticks!r}")
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
        # Plain Python values, whatever number types the options came in.
        for name, value in [
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
        return kwargs


class SpikingQNetwork(nn.Module):
    """Rate-coded spiking Q-network.

    ``SpikingQNetwork(obs_bound, n_actions, net_arch=[64, 64], ticks=16)``, or with a
    ``config=SpikingConfig(...)`` (keyword options then override its fields).

    :param obs_bound: encoder bounds, one positive float per observation dimension
    :param n_actions: number of actions (readout neurons)
    :param config: the spiking options (default: ``SpikingConfig()``)
    :param options: spiking options by name (the fields of :class:`SpikingConfig`:
        ``net_arch``, ``ticks``, ``beta``, ``threshold``, ``surrogate``, ``reset``,
        ``synaptic_delay``, ``encoding``, ``encoding_seed``), overriding ``config``
    """

    def __init__(
        self,
        obs_bound: Sequence[float] | np.ndarray,
        n_actions: int,
        config: SpikingConfig | None = None,
        **options: SpikingOption,
    ) -> None:
        super().__init__()
        if config is not None and not isinstance(config, SpikingConfig):  # e.g. net_arch passed by position
            raise TypeError(f"config must be a SpikingConfig, got {config!r} (pass the options by keyword)")
        config = SpikingConfig(**options) if config is None else dataclasses.replace(config, **options)  # type: ignore[arg-type]
        if int(n_actions) < 1:
            raise ValueError(f"n_actions must be positive, got {n_actions}")
        self.config = config
        # The encoder validates the bounds.
        self.encoder = SignedRateEncoder(obs_bound, ticks=config.ticks, mode=config.encoding, seed=config.encoding_seed)
        self.n_actions = int(n_actions)
        spike_grad = make_surrogate(config.surrogate)
        # Named surrogates (built with their default parameter) have closed-form derivatives.
        code = surrogate_code(config.surrogate)
        sizes = [self.encoder.n_inputs, *self.net_arch]
        self.hidden = nn.ModuleList(nn.Linear(n_in, n_out) for n_in, n_out in zip(sizes[:-1], sizes[1:]))
        self.lif = nn.ModuleList(
            ChipLeaky(
                beta=config.beta,
                threshold=config.threshold,
                spike_grad=spike_grad,
                reset_mechanism=config.reset,
                surrogate_code=code,
            )
            for _ in self.net_arch
        )
        self.readout = nn.Linear(sizes[-1], self.n_actions)
        self._grid: Grid | None = None
        self._fake_quantization: Grid | None = None

    @property
    def ticks(self) -> int:
        """Simulation ticks per inference."""
        return self.config.ticks

    @property
    def net_arch(self) -> list[int]:
        """Hidden layer sizes."""
        return list(self.config.net_arch)

    @property
    def synaptic_delay(self) -> int:
        """Ticks from a spike to its arrival."""
        return self.config.synaptic_delay

    @property
    def reset(self) -> ResetMode:
        """Reset mechanism of the hidden neurons."""
        return self.config.reset

    @property
    def grid(self) -> Grid | None:
        """The grid the weights sit on (recorded by :func:`spiking_dqn.quantization.snap.snap_to_grid`), or ``None``.

        Saved with the weights (the module's extra state), so that a deployed agent is
        quantized on the grid it was trained for: ``lam=None`` uses it.
        """
        return self._grid

    @grid.setter
    def grid(self, grid: Grid | None) -> None:
        if grid is not None:
            grid.check_fits(len(self.linear_layers()))
        self._grid = grid

    def get_extra_state(self) -> dict:
        """The recorded grid, as plain data (saved in the state dict)."""
        return {"grid": None if self._grid is None else self._grid.to_dict()}

    def set_extra_state(self, state: dict) -> None:
        """Restore the recorded grid from :meth:`get_extra_state`'s data.

        :param state: the saved data
        """
        data = state.get("grid")
        self.grid = None if data is None else Grid.from_dict(data)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        # Files written before the grid was extra state kept its lambdas in a float32
        # ``grid_lambdas`` buffer (zeros: none), always with a centred readout; older files have neither.
        key = prefix + "_extra_state"
        old = state_dict.pop(prefix + "grid_lambdas", None)
        if key not in state_dict:
            lambdas = None if old is None else [float(v) for v in old.detach().cpu().double().numpy()]
            grid = Grid(tuple(lambdas)) if lambdas and all(v > 0 for v in lambdas) else None
            state_dict[key] = {"grid": None if grid is None else grid.to_dict()}
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def fake_quantization(self) -> Grid | None:
        """The grid the forward pass fake-quantizes the weights on (QAT), or ``None``."""
        return self._fake_quantization

    def set_fake_quantization(self, grid: Grid | None) -> None:
        """Make the forward pass use fake-quantized weights, for quantization-aware training.

        With a grid set, the forward computes with :meth:`Grid.fake_quantize
        <spiking_dqn.quantization.Grid.fake_quantize>` of the weights: it sees the chip's
        weights (in float units), and the backward passes the gradient straight through to
        the float weights (straight-through estimator). Off (``None``, the default) the
        network is unchanged.

        :param grid: one lambda per projection (input->hidden1, ..., readout), or ``None``
        :raises ValueError: the grid has not one lambda per projection
        """
        if grid is not None:
            grid.check_fits(len(self.linear_layers()))
        self._fake_quantization = grid

    def forward_weights(self) -> list[th.Tensor]:
        """Weights the forward uses: the float ones, or fake-quantized (straight-through) ones."""
        weights = [layer._parameters["weight"] for layer in self.linear_layers()]
        if self._fake_quantization is None:
            return weights
        return self._fake_quantization.fake_quantize(weights)

    @property
    def obs_dim(self) -> int:
        """Observation dimension."""
        return self.encoder.obs_dim

    def linear_layers(self) -> list[nn.Linear]:
        """The projections in order: input->hidden1, ..., last hidden->readout."""
        return [*self.hidden._modules.values(), self._modules["readout"]]  # type: ignore[list-item]

    def _neuron_plan(self) -> fused.NeuronPlan:
        """The neurons' parameters as the CPU kernels take them, rebuilt when one changes."""
        neurons = list(self.lif._modules.values())
        # Identity and version of every neuron tensor: a replaced or in-place changed one rebuilds the plan.
        key = [(id(t), t._version) for lif in neurons for t in lif._buffers.values() if t is not None]
        cached = self.__dict__.get("_plan")
        if cached is None or cached[0] != key:
            cached = (key, fused.NeuronPlan.of(neurons, self.synaptic_delay))  # type: ignore[arg-type]
            self.__dict__["_plan"] = cached
        return cached[1]

    @overload
    def forward_spikes(self, spikes: th.Tensor, return_activity: Literal[False] = False) -> th.Tensor: ...

    @overload
    def forward_spikes(
        self, spikes: th.Tensor, return_activity: Literal[True]
    ) -> tuple[th.Tensor, list[th.Tensor]]: ...

    def forward_spikes(
        self, spikes: th.Tensor, return_activity: bool = False
    ) -> th.Tensor | tuple[th.Tensor, list[th.Tensor]]:
        """Run the network on input spike trains ``(T, batch, 2d)``.

        :param spikes: input spike trains
        :param return_activity: also return the spike trains of the hidden layers
        :return: Q-values ``(batch, n_actions)``, plus the spike trains of every hidden
            layer (``(T, batch, n)`` each) when ``return_activity``
        """
        weights = self.forward_weights()
        if spikes.device.type == "cpu":
            biases = [layer._parameters["bias"] for layer in self.linear_layers()]
            plan = self._neuron_plan()
            q_values, trains = fused.network_forward(spikes, weights, biases, plan, return_activity)
            return (q_values, trains) if return_activity else q_values
        trains = []
        x = spikes
        for fc, lif, w in zip(self.hidden, self.lif, weights):
            x = spiking_layer(x, w, fc.bias, lif, self.synaptic_delay)
            trains.append(x)
        # Integrator readout (alpha = 1, no spikes, starts at 0): its membrane after the
        # last tick is the sum over ticks of W s + b, i.e. W (sum of arrived spikes) + T b.
        arrived = trains[-1][: self.ticks - self.synaptic_delay].sum(0)
        q_values = nn.functional.linear(arrived, weights[-1]) + self.ticks * self.readout.bias
        return (q_values, trains) if return_activity else q_values

    def forward(self, obs: th.Tensor, return_activity: bool = False) -> th.Tensor | tuple[th.Tensor, list[th.Tensor]]:
        """Q-values of a batch of observations ``(batch, d)``.

        :param obs: observations
        :param return_activity: also return per-layer spike counts over the ticks, a list
            with one ``(batch, n)`` tensor per population: the input neurons, each hidden layer
        """
        spikes = self.encoder(obs)
        if not return_activity:
            return self.forward_spikes(spikes)
        q_values, trains = self.forward_spikes(spikes, return_activity=True)
        return q_values, [spikes.sum(0)] + [train.sum(0) for train in trains]
