"""The float spiking Q-network: encoder -> LIF hidden layers -> integrator readout.

The hidden layers are chip-timed :class:`spiking_dqn.neuron.ChipLeaky` neurons
(SpiNNaker2 ``lif_no_delay`` semantics, see ``DESIGN.md``), so that the trained network
deploys faithfully. On the CPU the whole network runs as one compiled pass and one
autograd node (:mod:`spiking_dqn.fused`); elsewhere layer by layer
(:func:`spiking_dqn.layers.layered_forward`), with the same spikes; the executor and its
plan (neuron parameters, threshold scale, state levels: :class:`spiking_dqn.fused.NetworkPlan`)
are chosen when the device or an option changes, not on every forward. The readout integrates its
synaptic current without leak or spikes; its membrane after the last tick is the Q-value.
:class:`~spiking_dqn.config.SpikingConfig` holds the spiking options and their defaults,
checked in one place.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal, overload

import numpy as np
import torch as th
from torch import nn

from spiking_dqn import fused, tick_gain
from spiking_dqn.activity import AddPenalty
from spiking_dqn.config import SpikingConfig, SpikingOption
from spiking_dqn.encoding import SignedRateEncoder
from spiking_dqn.grid import Grid
from spiking_dqn.layers import layered_forward
from spiking_dqn.neuron import ChipLeaky, make_surrogate, surrogate_code
from spiking_dqn.semantics.levels import check_levels_array
from spiking_dqn.semantics.lif import ResetMode
from spiking_dqn.thresholds import check_threshold_scale


class SpikingQNetwork(nn.Module):
    """Rate-coded spiking Q-network.

    ``SpikingQNetwork(obs_bound, n_actions, net_arch=[64, 64], ticks=16)``, or with a
    ``config=SpikingConfig(...)`` (keyword options then override its fields).

    :param obs_bound: encoder bounds, one positive float per observation dimension
    :param n_actions: number of actions (readout neurons)
    :param config: the spiking options (default: ``SpikingConfig()``)
    :param options: spiking options by name (the fields of :class:`SpikingConfig`:
        ``net_arch``, ``ticks``, ``beta``, ``threshold``, ``surrogate``, ``reset``,
        ``synaptic_delay``, ``encoding``, ``encoding_seed``, ``encoding_alpha``, ``threshold_noise``,
        ``threshold_noise_seed``, ``activity_penalty``, ``tick_gain``), overriding ``config``
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
        self.encoder = SignedRateEncoder(
            obs_bound, ticks=config.ticks, mode=config.encoding, seed=config.encoding_seed, alpha=config.encoding_alpha
        )
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
        #: Per-tick gain of every projection (``(n_projections, ticks)``), with ``tick_gain``.
        self.tick_gain = nn.Parameter(th.ones(len(sizes), config.ticks)) if config.tick_gain else None
        self._grid: Grid | None = None
        self._fake_quantization: Grid | None = None
        self._threshold_scale = 1.0
        self._state_levels: tuple[np.ndarray | None, ...] | None = None
        self._noise_generator: th.Generator | None = None
        if config.threshold_noise is not None:
            seed = config.threshold_noise_seed
            if seed is None:
                seed = int(th.randint(0, 2**62, (1,)))
            self._noise_generator = th.Generator().manual_seed(seed)
        #: The factor the last training forward drew for the thresholds (1.0 without noise).
        self.last_threshold_factor = 1.0
        #: The activity penalty of the last training forward (a detached scalar), or ``None``.
        self.last_activity_penalty: th.Tensor | None = None
        self._choose_executor()

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
    def threshold_scale(self) -> float:
        """Runtime factor on every hidden threshold (default 1.0), in every forward.

        The float twin of ``HardwarePolicy.threshold_scale``: the same factor gives the same
        thresholds as on the chip program (both ``float32(threshold) * float32(scale)``).
        Not saved with the weights: it is a setting of the run.
        """
        return self._threshold_scale

    @threshold_scale.setter
    def threshold_scale(self, value: float) -> None:
        self._threshold_scale = check_threshold_scale(value)
        self._choose_executor()

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

    @property
    def state_levels(self) -> tuple[np.ndarray | None, ...] | None:
        """The membrane state levels of each hidden layer (SQUAT), in the network's units, or ``None`` (float32 state)."""
        return self._state_levels

    def set_state_levels(self, levels: Sequence[Sequence[float] | np.ndarray | None] | None) -> None:
        """Quantize the hidden layers' membrane state to finite levels, in every forward (SQUAT).

        Each tick the update, the threshold comparison and the reset run in float32 as
        always; then the membrane kept for the next tick is replaced by the nearest level
        (ties to the lower level), the rule of ``ChipProgram.state_levels`` on the chip
        emulator. The backward passes the gradient straight through the rounding. Levels
        are in the network's units (a chip program's are these times its lambda, see
        :func:`spiking_dqn.quantization.levels`); saved with the weights.

        :param levels: one entry per hidden layer: ``None`` (float32 state) or sorted,
            strictly increasing finite levels (at least two); ``None`` turns it off
        :raises ValueError: not one entry per hidden layer, or bad levels
        """
        if levels is None:
            self._state_levels = None
            self._choose_executor()
            return
        if len(levels) != len(self.net_arch):
            raise ValueError(f"state levels need one entry per hidden layer ({len(self.net_arch)}), got {len(levels)}")
        checked = [
            None if entry is None else check_levels_array(entry, f"state levels of hidden layer {k}", power_of_two=False)
            for k, entry in enumerate(levels)
        ]
        self._state_levels = None if all(entry is None for entry in checked) else tuple(checked)
        self._choose_executor()

    def get_extra_state(self) -> dict:
        """The recorded grid, the state levels, as plain data, and the threshold-noise generator's state (saved in the state dict)."""
        state: dict = {"grid": None if self._grid is None else self._grid.to_dict()}
        if self._state_levels is not None:
            state["state_levels"] = [None if lv is None else lv.tolist() for lv in self._state_levels]
        if self._noise_generator is not None:
            state["threshold_noise_state"] = self._noise_generator.get_state()
        return state

    def set_extra_state(self, state: dict) -> None:
        """Restore the recorded grid (and the noise generator's state) from :meth:`get_extra_state`'s data.

        :param state: the saved data
        """
        data = state.get("grid")
        self.grid = None if data is None else Grid.from_dict(data)
        self.set_state_levels(state.get("state_levels"))
        noise_state = state.get("threshold_noise_state")
        if noise_state is not None and self._noise_generator is not None:
            self._noise_generator.set_state(noise_state)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        # Files written before the grid was extra state kept its lambdas in a float32
        # ``grid_lambdas`` buffer (zeros: none), always with a centred readout; older files have neither.
        key = prefix + "_extra_state"
        old = state_dict.pop(prefix + "grid_lambdas", None)
        if key not in state_dict:
            lambdas = None if old is None else [float(v) for v in old.detach().cpu().double().numpy()]
            grid = Grid(tuple(lambdas)) if lambdas and all(v > 0 for v in lambdas) else None
            state_dict[key] = {"grid": None if grid is None else grid.to_dict()}
        # A network given tick gains (TaWQ) loads the weights of one trained without them: gains of 1.
        if self.tick_gain is not None and prefix + "tick_gain" not in state_dict:
            state_dict[prefix + "tick_gain"] = th.ones_like(self.tick_gain)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def fake_quantization(self) -> Grid | None:
        """The grid the forward pass fake-quantizes the weights on (QAT), or ``None``."""
        return self._fake_quantization

    def set_fake_quantization(self, grid: Grid | None) -> None:
        """Make the forward pass use fake-quantized weights, for quantization-aware training.

        With a grid set, the forward computes with :meth:`Grid.fake_quantize
        <spiking_dqn.grid.Grid.fake_quantize>` of the weights: it sees the chip's
        weights (in float units), and the backward passes the gradient straight through to
        the float weights (straight-through estimator). Off (``None``, the default) the
        network is unchanged.

        :param grid: one lambda per projection (input->hidden1, ..., readout), or ``None``
        :raises ValueError: the grid has not one lambda per projection
        """
        if grid is not None:
            grid.check_fits(len(self.linear_layers()))
        self._fake_quantization = grid
        self._choose_executor()

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

    def _parameter_tensors(self) -> list[th.Tensor]:
        """The projections' weights, then their biases (the order of :attr:`_parameter_views`)."""
        layers = self.linear_layers()
        return [*(layer._parameters["weight"] for layer in layers), *(layer._parameters["bias"] for layer in layers)]

    @property
    def _parameter_views(self) -> fused.ParameterViews:
        """This network's cache of its parameters as numpy arrays, for the CPU kernels."""
        views = self.__dict__.get("_views")
        if views is None:
            views = self.__dict__["_views"] = fused.ParameterViews()
        return views

    def _choose_executor(self) -> None:
        """Pick the forward's executor and make its plan (:class:`spiking_dqn.fused.NetworkPlan`).

        Called when the device or an option changes (construction, :meth:`_apply` behind
        ``.to(device)``, the threshold scale, the state levels, fake quantization), and
        when a neuron tensor was replaced or changed in place (:meth:`_current_plan`), not
        on every forward: the compiled pass on the CPU, layer by layer elsewhere, the tick
        loop with per-tick gains when the network has them.
        """
        neurons = list(self.lif._modules.values())
        on_cpu = self.readout.weight.device.type == "cpu"
        plain = self._fake_quantization is None
        no_gain = self.tick_gain is None
        self.__dict__["_plan"] = fused.NetworkPlan(
            executor=("compiled" if on_cpu else "layers") if no_gain else "gained",
            neurons=fused.NeuronPlan.of(neurons, self.synaptic_delay, self._threshold_scale, self._state_levels),  # type: ignore[arg-type]
            compiled_step=on_cpu and plain and no_gain and self.config.activity_penalty == 0.0,
            cached_views=plain,
            watched=fused.NetworkPlan.watch(neurons),  # type: ignore[arg-type]
        )

    def _apply(self, fn, recurse: bool = True):  # type: ignore[no-untyped-def]
        # ``.to(device)``, ``.cpu()``, ``.float()``... move or convert the tensors: choose again.
        module = super()._apply(fn, recurse)
        self._choose_executor()
        return module

    def _current_plan(self) -> fused.NetworkPlan:
        """The network's plan, made anew only when a neuron tensor was replaced or changed in place since."""
        plan: fused.NetworkPlan = self.__dict__["_plan"]
        if not plan.current():
            self._choose_executor()
            plan = self.__dict__["_plan"]
        return plan

    def _forward_neurons(self, plan: fused.NetworkPlan, training: bool) -> fused.NeuronPlan:
        """The neuron plan of a forward: the plan's, or in training with threshold noise, its thresholds times a new draw."""
        if not training or self._noise_generator is None:
            return plan.neurons
        self.last_threshold_factor = self.config.threshold_noise.sample(self._noise_generator)  # type: ignore[union-attr]
        return plan.neurons.with_scale(self._threshold_scale * self.last_threshold_factor)

    @property
    def supports_compiled_step(self) -> bool:
        """Whether :meth:`compiled_forward` and :func:`spiking_dqn.fused.network_backward` give this network's gradient.

        True on the CPU without fake quantization (QAT's straight-through weights),
        without an activity penalty and without tick gains, the cases where the gradient is
        the compiled backward's alone (:class:`spiking_dqn.dqn.SpikingDQN` then trains
        without autograd). Chosen with the executor (:meth:`_choose_executor`).
        """
        return self.__dict__["_plan"].compiled_step

    def compiled_forward(
        self, obs: th.Tensor, keep_tape: bool = False
    ) -> tuple[np.ndarray, fused.Tape | None, list[np.ndarray], fused.NeuronPlan]:
        """A forward on the CPU without autograd or module calls, as the network is (training mode or not).

        The same computation as :meth:`forward` (the same kernel call and, in training
        mode, the same threshold-noise draw as a forward under autograd). With
        ``keep_tape``, pass its results and ``dL/dq`` to
        :func:`spiking_dqn.fused.network_backward` for the gradients, which are autograd's
        (tested). Requires :attr:`supports_compiled_step`.

        :param obs: observations ``(batch, d)``
        :param keep_tape: keep what the backward needs (the pre-reset membranes too)
        :return: Q-values float32 ``(batch, n_actions)``, the tape (``None`` without
            ``keep_tape``), the weight arrays (hidden layers then readout) and the neuron plan
        :raises RuntimeError: the network does not support the compiled step
        """
        network_plan = self._current_plan()
        if not network_plan.compiled_step:
            raise RuntimeError("compiled_forward needs a CPU network without fake quantization or activity penalty")
        x = np.ascontiguousarray(self.encoder(obs).detach().numpy())
        params = self._parameter_views(self._parameter_tensors())
        n = len(params) // 2
        weights, biases = params[:n], params[n:]
        plan = self._forward_neurons(network_plan, self.training and keep_tape)
        q, trains, pres, counts = fused.run_network(x, weights, biases, plan, keep_pre=keep_tape)
        return q, fused.Tape(x, trains, pres, counts) if keep_tape else None, weights, plan

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
        plan = self._current_plan()
        weights = self.forward_weights()
        training = self.training and th.is_grad_enabled() and weights[0].requires_grad
        neurons = self._forward_neurons(plan, training)
        penalize = training and self.config.activity_penalty > 0.0
        with_trains = return_activity or penalize
        biases = [layer._parameters["bias"] for layer in self.linear_layers()]
        if plan.executor == "compiled":
            views = self._parameter_views if plan.cached_views else None
            q_values, trains = fused.network_forward(spikes, weights, biases, neurons, with_trains, views)
        elif plan.executor == "layers":
            q_values, trains = layered_forward(
                spikes, weights, biases, list(neurons.neurons), neurons.delay, neurons.scale, neurons.layer_levels()
            )
        else:
            q_values, trains = tick_gain.gained_forward(
                spikes, weights, biases, list(neurons.neurons), self.tick_gain, neurons.delay, neurons.scale,
                neurons.layer_levels(),
            )
        if penalize:
            penalty = self.config.activity_penalty * self.synaptic_events(spikes, trains, weights).mean()
            self.last_activity_penalty = penalty.detach()
            q_values = AddPenalty.apply(q_values, penalty)
        return (q_values, trains) if return_activity else q_values

    def synaptic_events(
        self, spikes: th.Tensor, trains: Sequence[th.Tensor], weights: Sequence[th.Tensor] | None = None
    ) -> th.Tensor:
        """Synaptic events per inference ``(batch,)``, differentiable in the spike trains.

        The chip's count (``BackendResult.synaptic_events``): every spike that arrives
        within the ticks counts once per nonzero outgoing weight of its neuron,
        ``sum_k sum_i arrived_k[i] * nnz(W_k[:, i])``, over the input population and
        every hidden layer. The fan-outs are constants; the gradient flows through the
        hidden layers' spikes (their surrogate).

        :param spikes: input spike trains ``(T, batch, 2d)``
        :param trains: the hidden layers' spike trains (``forward_spikes(..., return_activity=True)``)
        :param weights: the forward's weights (default: :meth:`forward_weights`)
        """
        weights = self.forward_weights() if weights is None else weights
        arrive = self.ticks - self.synaptic_delay
        events = spikes.new_zeros(spikes.shape[1])
        for train, weight in zip([spikes, *trains], weights):
            fan_out = (weight.detach() != 0).sum(0).to(train.dtype)
            events = events + train[:arrive].sum(0) @ fan_out
        return events

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
