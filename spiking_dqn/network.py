"""The float spiking Q-network: encoder -> LIF hidden layers -> integrator readout.

Timing follows the SpiNNaker2 ``lif_no_delay`` semantics of ``DESIGN.md`` so that the
trained network deploys faithfully: per tick ``v = beta * v + (W s + b)``, spike when
``v > threshold``, then reset at once (by subtraction or to zero), and a spike emitted at
tick ``t`` reaches the next population at tick ``t + synaptic_delay``. The readout
integrates its synaptic current without leak or spikes; its membrane after the last
tick is the Q-value.

For speed, the network is run layer by layer rather than tick by tick: the synaptic
currents of a layer for all ticks are one matrix product over ``(T * batch)`` rows, and
only the elementwise LIF update loops over the ticks. This is the same computation as the
tick-by-tick loop, since a layer's input at tick ``t`` depends only on the previous
layer's spikes at earlier (or, with no delay, the same) ticks.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import snntorch as snn
import torch as th
from snntorch import surrogate
from snntorch._neurons.neurons import SpikingNeuron
from torch import nn

from spiking_dqn import kernels
from spiking_dqn.encoding import EncodingMode, SignedRateEncoder

ResetMode = Literal["subtract", "zero"]

# snnTorch's ``sigmoid`` surrogate is left out: its backward computes exp(-slope * x) and
# overflows to NaN for membranes a few units below threshold, which happens in training.
SURROGATES: dict[str, Callable[[], Callable]] = {
    "atan": surrogate.atan,
    "fast_sigmoid": surrogate.fast_sigmoid,
    "triangular": surrogate.triangular,
    "straight_through": surrogate.straight_through_estimator,
}


def make_surrogate(spec: str | Callable) -> Callable:
    """snnTorch surrogate spike function from a name (see ``SURROGATES``) or a callable."""
    if callable(spec):
        return spec
    if spec not in SURROGATES:
        raise ValueError(f"unknown surrogate {spec!r}; choose one of {sorted(SURROGATES)} or pass a callable")
    return SURROGATES[spec]()


class ChipLeaky(snn.Leaky):
    """snnTorch ``Leaky`` neuron with the chip's reset timing and no hidden state.

    The update is ``v = beta * v + input``; spike ``S = H(v - threshold)`` through the
    surrogate; then, in the same tick, ``v -= S * threshold`` (``"subtract"``) or
    ``v = (1 - S) * v`` (``"zero"``). snnTorch's own ``Leaky`` applies the reset in the next
    tick's update (scaled by ``beta`` there), which does not match the chip. As in snnTorch,
    the reset term is detached from the graph.

    The membrane is passed in and returned, never stored on the module, so a network
    keeps no state between calls.

    :param surrogate_code: ``(code, parameter)`` of ``spike_grad`` among the closed-form
        surrogate derivatives of :mod:`spiking_dqn.kernels`, when it is one of them (the
        compiled backward then evaluates it); ``None`` for any other surrogate (autograd
        evaluates it)
    """

    def __init__(
        self,
        beta: float,
        threshold: float,
        spike_grad: Callable,
        reset_mechanism: ResetMode,
        surrogate_code: tuple[int, float] | None = None,
    ) -> None:
        super().__init__(beta=beta, threshold=threshold, spike_grad=spike_grad, reset_mechanism=reset_mechanism)
        self.surrogate_code = surrogate_code or (kernels.SURROGATE_NONE, 0.0)
        # snnTorch keeps every neuron ever built in a class-level list (for its global
        # reset helpers, which this package does not use); drop ours so it can be freed.
        SpikingNeuron.instances.remove(self)

    def forward(self, input_: th.Tensor, mem: th.Tensor) -> tuple[th.Tensor, th.Tensor]:  # type: ignore[override]
        mem = self.beta * mem + input_
        spk = self.fire(mem)
        if self.reset_mechanism_val == 0:
            mem = mem - spk.detach() * self.threshold
        else:
            mem = mem * (1.0 - spk.detach())
        return spk, mem


def _lif_scan_torch(current: th.Tensor, beta: float, threshold: float, subtract: bool) -> tuple[th.Tensor, th.Tensor]:
    """The ``ChipLeaky`` tick loop with torch ops on ``(T, batch, n)`` currents, for tensors on an
    accelerator (on the CPU, :func:`kernels.lif_forward`): pre-reset membranes and spikes."""
    pre = th.empty_like(current)
    spikes = th.empty_like(current)
    mem = th.zeros_like(current[0])
    for t in range(current.shape[0]):
        th.add(current[t], mem, alpha=beta, out=pre[t])
        th.gt(pre[t], threshold, out=spikes[t])
        mem = th.sub(pre[t], spikes[t], alpha=threshold) if subtract else pre[t] * (1.0 - spikes[t])
    return pre, spikes


def _reverse_scan(direct: th.Tensor, carry: float | th.Tensor) -> th.Tensor:
    """``g_t = direct_t + carry_t * g_{t+1}`` from the last tick back, in torch (accelerators)."""
    grad = direct.clone()
    scalar = not isinstance(carry, th.Tensor)
    for t in range(grad.shape[0] - 2, -1, -1):
        grad[t] += (carry if scalar else carry[t]) * grad[t + 1]
    return grad


@functools.lru_cache(maxsize=64)
def _uniform(n: int, value: float) -> np.ndarray:
    """A read-only float32 array of ``n`` times ``value`` (per-neuron parameters of a layer)."""
    out = np.full(n, value, dtype=np.float32)
    out.flags.writeable = False
    return out


def _neuron_params(neuron: ChipLeaky) -> tuple[float, float, bool]:
    """``(beta clamped to [0, 1], threshold, reset by subtraction)`` of a ``ChipLeaky``.

    Read from the neuron's tensors once and cached on it until one of them is replaced or
    changed in place (tensor version counters), since reading them costs more than a
    small layer's whole tick loop.
    """
    tensors = (neuron.beta, neuron.threshold, neuron.reset_mechanism_val)
    key = tuple((id(t), t._version) for t in tensors)
    cached = neuron.__dict__.get("_scan_params")
    if cached is None or cached[0] != key:
        beta, threshold, reset = (t.item() for t in tensors)
        cached = (key, (min(max(beta, 0.0), 1.0), threshold, reset == 0))
        neuron.__dict__["_scan_params"] = cached
    return cached[1]


def _lif_cpu(current: np.ndarray, neuron: ChipLeaky, keep_pre: bool) -> tuple[np.ndarray, np.ndarray]:
    """Pre-reset membranes (an empty array unless ``keep_pre``) and spikes of a ``ChipLeaky``
    layer driven by ``current`` ``(T, batch, n)``, with :func:`kernels.lif_forward`."""
    beta, threshold, subtract = _neuron_params(neuron)
    n = current.shape[-1]
    pre, spikes, _ = kernels.lif_forward(
        current, _uniform(n, beta), _uniform(n, 0.0), _uniform(n, threshold), subtract, np.float32(0.0), keep_pre
    )
    return pre, spikes


def _scan_layer(current: th.Tensor, neuron: ChipLeaky) -> tuple[th.Tensor, th.Tensor]:
    """Pre-reset membranes and spikes of a ``ChipLeaky`` layer, outside autograd."""
    if current.device.type == "cpu":
        pre, spikes = _lif_cpu(current.detach().contiguous().numpy(), neuron, keep_pre=True)
        return th.from_numpy(pre), th.from_numpy(spikes)
    return _lif_scan_torch(current.detach(), *_neuron_params(neuron))


def _current_grad(grad_spikes: th.Tensor, pre: th.Tensor, spikes: th.Tensor, neuron: ChipLeaky) -> th.Tensor:
    """``dL/dI`` of a ``ChipLeaky`` layer from ``dL/ds``, its pre-reset membranes and spikes.

    The exact gradient autograd gives through the tick loop (reset detached): with
    pre-reset membranes ``m_t`` and spikes ``s_t``,
    ``dL/dm_t = dL/ds_t * surrogate'(m_t - threshold) + beta * k_t * dL/dm_{t+1}`` where
    ``k_t = 1`` for reset by subtraction and ``1 - s_t`` for reset to zero, and
    ``dL/dI_t = dL/dm_t``. On the CPU one compiled pass (:func:`kernels.lif_backward`)
    with the named surrogates in closed form; other surrogates go through autograd.
    """
    beta, threshold, subtract = _neuron_params(neuron)
    code, param = neuron.surrogate_code
    cpu = grad_spikes.device.type == "cpu"
    terms = grad_spikes  # dL/ds, turned into the direct terms d_t below when autograd does the surrogate
    if not cpu or code == kernels.SURROGATE_NONE:
        with th.enable_grad():
            shifted = (pre - neuron.threshold).detach().requires_grad_(True)
            (terms,) = th.autograd.grad(neuron.spike_grad(shifted), shifted, grad_outputs=grad_spikes)
        code, param = kernels.SURROGATE_NONE, 0.0
        if not cpu:
            # Membrane carried to the next tick: beta * k_t (k_t = 1, or 1 - s_t for reset to zero).
            return _reverse_scan(terms, beta if subtract else beta * (1.0 - spikes))
    grad = kernels.lif_backward(
        terms.contiguous().numpy(),
        pre.numpy(),
        spikes.numpy(),
        np.float32(beta),
        np.float32(threshold),
        subtract,
        code,
        float(param),
    )
    return th.from_numpy(grad)


def _layer_forward(
    spikes_in: th.Tensor, weight: th.Tensor, bias: th.Tensor, neuron: ChipLeaky, delay: int, keep_pre: bool
) -> tuple[th.Tensor | None, th.Tensor]:
    """Pre-reset membranes (if ``keep_pre``) and spikes of ``LIF(linear(delay(spikes_in)))``, outside autograd.

    On the CPU in numpy (one BLAS product for all ticks, then :func:`kernels.lif_forward`),
    which costs a fraction of torch's dispatch on the small batches of action selection
    and DQN updates; on an accelerator in torch (:func:`_layer_forward_torch`). Training,
    acting and the target network all come here, so they see the same spikes.
    """
    if spikes_in.device.type != "cpu":
        return _layer_forward_torch(spikes_in, weight, bias, neuron, delay, keep_pre)
    x = spikes_in.detach().numpy()
    if delay:
        x = np.concatenate([np.zeros_like(x[:delay]), x[:-delay]])
    # One 2-D product over all ticks and observations (a 3-D matmul would loop over ticks).
    current = (x.reshape(-1, x.shape[-1]) @ weight.detach().numpy().T).reshape(*x.shape[:-1], weight.shape[0])
    current += bias.detach().numpy()
    pre, spikes = _lif_cpu(current, neuron, keep_pre)
    return (th.from_numpy(pre) if keep_pre else None), th.from_numpy(spikes)


def _layer_forward_torch(
    spikes_in: th.Tensor, weight: th.Tensor, bias: th.Tensor, neuron: ChipLeaky, delay: int, keep_pre: bool
) -> tuple[th.Tensor | None, th.Tensor]:
    """:func:`_layer_forward` in torch ops, for tensors on an accelerator (tested on the CPU)."""
    current = nn.functional.linear(delay_spikes(spikes_in.detach(), delay), weight.detach(), bias.detach())
    beta, threshold, subtract = _neuron_params(neuron)
    pre, spikes = _lif_scan_torch(current, beta, threshold, subtract)
    return (pre if keep_pre else None), spikes


class _LIFSequence(th.autograd.Function):
    """A ``ChipLeaky`` layer driven by a given current, over all ticks at once.

    Forward is the tick loop of ``ChipLeaky.forward`` without autograd bookkeeping;
    backward is :func:`_current_grad`.
    """

    @staticmethod
    def forward(ctx, current: th.Tensor, neuron: ChipLeaky) -> th.Tensor:  # type: ignore[override]
        pre, spikes = _scan_layer(current, neuron)
        ctx.save_for_backward(pre, spikes)
        ctx.neuron = neuron
        return spikes

    @staticmethod
    def backward(ctx, grad_spikes: th.Tensor):  # type: ignore[override]
        pre, spikes = ctx.saved_tensors
        return _current_grad(grad_spikes, pre, spikes, ctx.neuron), None


class _SpikingLayer(th.autograd.Function):
    """Delay, projection and ``ChipLeaky`` layer in one autograd node.

    ``spikes_out = LIF(linear(delay(spikes_in), weight, bias))`` over all ticks, computed by
    :func:`_layer_forward` (the same call as inference, so training and acting see the
    same spikes); backward computes the weight, bias and input gradients from
    :func:`_current_grad` with three matrix products. One node instead of four keeps
    autograd's per-node cost, which dominates on small batches, out of every step.
    """

    @staticmethod
    def forward(ctx, spikes_in: th.Tensor, weight: th.Tensor, bias: th.Tensor, neuron: ChipLeaky, delay: int):  # type: ignore[override]
        pre, spikes = _layer_forward(spikes_in, weight, bias, neuron, delay, keep_pre=True)
        ctx.save_for_backward(spikes_in, weight, pre, spikes)
        ctx.neuron, ctx.delay = neuron, delay
        return spikes

    @staticmethod
    def backward(ctx, grad_spikes: th.Tensor):  # type: ignore[override]
        spikes_in, weight, pre, spikes = ctx.saved_tensors
        grad_current = _current_grad(grad_spikes, pre, spikes, ctx.neuron)
        flat = grad_current.reshape(-1, grad_current.shape[-1])
        grad_weight = None
        if ctx.needs_input_grad[1]:
            arrived = delay_spikes(spikes_in, ctx.delay)
            grad_weight = flat.t().mm(arrived.reshape(-1, arrived.shape[-1]))
        grad_bias = flat.sum(0) if ctx.needs_input_grad[2] else None
        grad_in = None
        if ctx.needs_input_grad[0]:
            # What arrived at tick t was emitted at t - delay.
            grad_arrived = flat.mm(weight).reshape(spikes_in.shape)
            grad_in = th.zeros_like(grad_arrived) if ctx.delay else grad_arrived
            if ctx.delay:
                grad_in[: -ctx.delay] = grad_arrived[ctx.delay :]
        return grad_in, grad_weight, grad_bias, None, None


def lif_sequence(current: th.Tensor, neuron: ChipLeaky) -> th.Tensor:
    """Spike trains ``(T, batch, n)`` of a ``ChipLeaky`` layer driven by ``current`` ``(T, batch, n)``.

    Uses the fused :class:`_LIFSequence` unless the neuron has learnable ``beta`` or
    ``threshold``, in which case it loops over ``ChipLeaky.forward`` under autograd.
    """
    if not (neuron.beta.requires_grad or neuron.threshold.requires_grad):
        if current.requires_grad and th.is_grad_enabled():
            return _LIFSequence.apply(current, neuron)
        # Inference (action selection, target network): the scan alone, no autograd context.
        return _scan_layer(current, neuron)[1]
    mem = th.zeros_like(current[0])
    out = []
    for t in range(current.shape[0]):
        spk, mem = neuron(current[t], mem)
        out.append(spk)
    return th.stack(out)


def delay_spikes(spikes: th.Tensor, delay: int) -> th.Tensor:
    """Shift a spike train ``(T, ...)`` by ``delay`` ticks: what arrives at each tick."""
    if delay == 0:
        return spikes
    pad = th.zeros_like(spikes[:delay])
    return th.cat([pad, spikes[:-delay]], dim=0)


class SpikingQNetwork(nn.Module):
    """Rate-coded spiking Q-network.

    :param obs_bound: encoder bounds, one positive float per observation dimension
    :param n_actions: number of actions (readout neurons)
    :param net_arch: hidden layer sizes
    :param ticks: simulation ticks per inference
    :param beta: membrane decay of the hidden neurons, in [0, 1] (the chip's ``alpha_decay``)
    :param threshold: firing threshold of the hidden neurons (> 0)
    :param surrogate: surrogate gradient, a name from ``SURROGATES`` or an snnTorch surrogate
    :param reset: reset mechanism of the hidden neurons, ``"subtract"`` or ``"zero"``
    :param synaptic_delay: ticks from a spike to its arrival, 1 (chip timing) or 0
    :param encoding: input spike generation, ``"deterministic"`` or ``"poisson"``
    :param encoding_seed: seed of the Poisson encoder
    """

    def __init__(
        self,
        obs_bound: Sequence[float] | np.ndarray,
        n_actions: int,
        net_arch: Sequence[int] = (64, 64),
        ticks: int = 10,
        beta: float = 0.9,
        threshold: float = 1.0,
        surrogate: str | Callable = "atan",
        reset: ResetMode = "subtract",
        synaptic_delay: int = 1,
        encoding: EncodingMode = "deterministic",
        encoding_seed: int | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= float(beta) <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {beta}")
        if not float(threshold) > 0.0 or not np.isfinite(threshold):
            raise ValueError(f"threshold must be positive and finite, got {threshold}")
        if reset not in ("subtract", "zero"):
            raise ValueError(f"reset must be 'subtract' or 'zero', got {reset!r}")
        if synaptic_delay not in (0, 1):
            raise ValueError(f"synaptic_delay must be 0 or 1, got {synaptic_delay!r}")
        if len(net_arch) == 0 or any(int(n) < 1 for n in net_arch):
            raise ValueError(f"net_arch must be a non-empty list of positive sizes, got {list(net_arch)}")
        if int(n_actions) < 1:
            raise ValueError(f"n_actions must be positive, got {n_actions}")
        # The encoder validates ticks, bounds and encoding mode.
        self.encoder = SignedRateEncoder(obs_bound, ticks=ticks, mode=encoding, seed=encoding_seed)
        if ticks <= (len(net_arch) + 1) * synaptic_delay:
            raise ValueError(
                f"ticks={ticks} is too few: with synaptic_delay={synaptic_delay} and {len(net_arch)} hidden "
                f"layers, input spikes need {(len(net_arch) + 1) * synaptic_delay} ticks to reach the readout"
            )
        self.ticks = int(ticks)
        self.net_arch = [int(n) for n in net_arch]
        self.n_actions = int(n_actions)
        self.synaptic_delay = int(synaptic_delay)
        self.reset = reset
        spike_grad = make_surrogate(surrogate)
        # Named surrogates (built with their default parameter) have closed-form derivatives.
        code = (kernels.SURROGATE_CODES[surrogate], kernels.SURROGATE_DEFAULTS[surrogate]) if isinstance(surrogate, str) else None
        sizes = [self.encoder.n_inputs, *self.net_arch]
        self.hidden = nn.ModuleList(nn.Linear(n_in, n_out) for n_in, n_out in zip(sizes[:-1], sizes[1:]))
        self.lif = nn.ModuleList(
            ChipLeaky(
                beta=float(beta), threshold=float(threshold), spike_grad=spike_grad, reset_mechanism=reset, surrogate_code=code
            )
            for _ in self.net_arch
        )
        self.readout = nn.Linear(sizes[-1], self.n_actions)
        self._fake_quant_lambdas: list[float] | None = None
        # The int8 grid the weights were snapped to after QAT (zeros: none). Saved with the
        # weights, so that a deployed agent is quantized with the lambdas it was trained for.
        self.register_buffer("grid_lambdas", th.zeros(len(self.net_arch) + 1))

    @property
    def snapped_lambdas(self) -> list[float] | None:
        """The lambdas of the int8 grid the weights were snapped to (see ``qat.snap_to_grid``), or ``None``."""
        values = self.grid_lambdas.detach().cpu().double().numpy()
        return [float(v) for v in values] if bool(np.all(values > 0)) else None

    def record_grid(self, lambdas: Sequence[float] | None) -> None:
        """Record (or with ``None`` forget) the lambdas of the int8 grid the weights sit on.

        :param lambdas: one positive lambda per projection, or ``None``
        """
        n = len(self.linear_layers())
        if lambdas is None:
            values = [0.0] * n
        else:
            values = [float(lam) for lam in lambdas]
            if len(values) != n or not all(np.isfinite(lam) and lam > 0 for lam in values):
                raise ValueError(f"record_grid needs {n} finite positive lambdas, got {list(lambdas)}")
        with th.no_grad():
            self.grid_lambdas.copy_(th.as_tensor(values, dtype=self.grid_lambdas.dtype))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        # Models saved before the grid was recorded have no ``grid_lambdas``: they have none.
        state_dict.setdefault(prefix + "grid_lambdas", th.zeros_like(self.grid_lambdas))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def set_fake_quantization(self, lambdas: Sequence[float] | None, centered_readout: bool = True) -> None:
        """Make the forward pass use fake-quantized weights, for quantization-aware training.

        With lambdas set, every linear layer ``k`` computes with
        ``w + (q(w) - w).detach()`` where ``q(w) = clip(rint(lambda_k * w), -127, 127) / lambda_k``:
        the forward sees the chip's int8 weights (in float units), the backward passes the
        gradient straight through to the float weights (straight-through estimator). Off
        (``None``, the default) the network is unchanged.

        :param lambdas: one positive lambda per projection (input->hidden1, ..., readout), or
            ``None`` to switch fake quantization off
        :param centered_readout: quantize the readout as the chip program does by default
            (:func:`spiking_dqn.quantization.center_readout`): its weights minus their mean
            over the actions go through ``q``, the mean is added back unquantized, so the
            greedy action is the chip's and the Q-values keep their common part
        """
        if lambdas is None:
            self._fake_quant_lambdas = None
            return
        values = [float(lam) for lam in lambdas]
        n = len(self.linear_layers())
        if len(values) != n or not all(np.isfinite(lam) and lam > 0 for lam in values):
            raise ValueError(f"set_fake_quantization needs {n} finite positive lambdas, got {list(lambdas)}")
        self._fake_quant_lambdas = values
        self._fake_quant_centered = bool(centered_readout) and self.n_actions > 1

    def _layer_weights(self) -> list[th.Tensor]:
        """Weights the forward uses: the float ones, or fake-quantized (straight-through) ones."""
        weights = [layer.weight for layer in self.linear_layers()]
        if self._fake_quant_lambdas is None:
            return weights

        def fake(w: th.Tensor, lam: float) -> th.Tensor:
            return w + (th.clamp(th.round(w * lam), -127, 127) / lam - w).detach()

        out = [fake(w, lam) for w, lam in zip(weights[:-1], self._fake_quant_lambdas[:-1])]
        w, lam = weights[-1], self._fake_quant_lambdas[-1]
        if getattr(self, "_fake_quant_centered", False):
            common = w.mean(dim=0, keepdim=True)
            out.append(fake(w - common, lam) + common)
        else:
            out.append(fake(w, lam))
        return out

    @property
    def obs_dim(self) -> int:
        """Observation dimension."""
        return self.encoder.obs_dim

    def linear_layers(self) -> list[nn.Linear]:
        """The projections in order: input->hidden1, ..., last hidden->readout."""
        return [*self.hidden, self.readout]

    def forward_spikes(self, spikes: th.Tensor, return_activity: bool = False):
        """Run the network on input spike trains ``(T, batch, 2d)``.

        :return: Q-values ``(batch, n_actions)``, plus the spike trains of every hidden
            layer (``(T, batch, n)`` each) when ``return_activity``
        """
        weights = self._layer_weights()
        if spikes.device.type == "cpu" and not th.is_grad_enabled():
            trains = self._hidden_trains_cpu_inference(spikes, weights)
            # The readout in numpy: the sums below (to float32 rounding) without torch dispatch.
            arrived_np = trains[-1].numpy()[: self.ticks - self.synaptic_delay].sum(0)
            q_np = arrived_np @ weights[-1].detach().numpy().T + np.float32(self.ticks) * self.readout.bias.detach().numpy()
            q_values = th.from_numpy(q_np.astype(np.float32, copy=False))
            return (q_values, trains) if return_activity else q_values
        trains = []
        x = spikes
        for fc, lif, w in zip(self.hidden, self.lif, weights):
            if lif.beta.requires_grad or lif.threshold.requires_grad:
                # Learnable neuron parameters: autograd through snnTorch's tick loop.
                x = lif_sequence(nn.functional.linear(delay_spikes(x, self.synaptic_delay), w, fc.bias), lif)
            else:
                x = _SpikingLayer.apply(x, w, fc.bias, lif, self.synaptic_delay)
            trains.append(x)
        # Integrator readout (alpha = 1, no spikes, starts at 0): its membrane after the
        # last tick is the sum over ticks of W s + b, i.e. W (sum of arrived spikes) + T b.
        arrived = trains[-1][: self.ticks - self.synaptic_delay].sum(0)
        q_values = nn.functional.linear(arrived, weights[-1]) + self.ticks * self.readout.bias
        if return_activity:
            return q_values, trains
        return q_values

    def _hidden_trains_cpu_inference(self, spikes: th.Tensor, weights: list[th.Tensor]) -> list[th.Tensor]:
        """Hidden spike trains without autograd on the CPU, one compiled call per layer.

        Action selection and the target network run a batch of one to a few dozen
        observations, where per-op dispatch costs more than the arithmetic: each layer is
        :func:`_layer_forward` in numpy, as in the autograd path, so both give the same
        spikes bit for bit.
        """
        trains = []
        x = spikes
        for fc, lif, w in zip(self.hidden, self.lif, weights):
            x = _layer_forward(x, w, fc.bias, lif, self.synaptic_delay, keep_pre=False)[1]
            trains.append(x)
        return trains

    def forward(self, obs: th.Tensor, return_activity: bool = False):
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
