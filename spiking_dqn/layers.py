"""The LIF layer: delay, projection and chip-timed leaky neurons, over all ticks at once.

Timing follows the SpiNNaker2 ``lif_no_delay`` semantics: per tick
``v = beta * v + (W s + b)``, spike when ``v > threshold``, then reset at once (by
subtraction or to zero), and a spike emitted at tick ``t`` reaches the next population at
tick ``t + delay``. :class:`spiking_dqn.neuron.ChipLeaky` is that neuron, tick by tick,
as an snnTorch ``Leaky``.

For speed a layer is run for all ticks at once rather than tick by tick: the same
computation as the tick loop, since a layer's input at tick ``t`` depends only on the
previous layer's spikes at earlier (or, with no delay, the same) ticks. On the CPU a
layer is one event-driven compiled kernel forward and one backward
(:mod:`spiking_dqn.semantics.network_kernels`); on an accelerator its synaptic currents for all ticks are
one matrix product over ``(T * batch)`` rows and the LIF update is torch ops.
:func:`spiking_layer` is the entry point: one autograd node for delay, projection and
neurons when gradients are needed, the forward alone otherwise, with the same spikes. A
network on the CPU runs all its layers at once instead (:mod:`spiking_dqn.fused`).
"""

from __future__ import annotations

import numpy as np
import torch as th
from torch import nn
from torch.autograd.function import FunctionCtx

from spiking_dqn.neuron import ChipLeaky, lif_tick_torch
from spiking_dqn.semantics import lif, network_kernels
from spiking_dqn.semantics.thresholds import scale_threshold

def delay_spikes(spikes: th.Tensor, delay: int) -> th.Tensor:
    """Shift a spike train ``(T, ...)`` by ``delay`` ticks: what arrives at each tick.

    :param spikes: spike train, ticks first
    :param delay: ticks from emission to arrival
    """
    if delay == 0:
        return spikes
    pad = th.zeros_like(spikes[:delay])
    return th.cat([pad, spikes[:-delay]], dim=0)


def integrator_readout(arrived: th.Tensor, weight: th.Tensor, bias: th.Tensor, ticks: int) -> th.Tensor:
    """The readout in torch: an integrator (alpha = 1, no spikes, from 0), its membrane after the last tick.

    The sum over ticks of ``W s_t + b`` is ``W (sum of arrived spikes) + T b``; the compiled
    twin is the end of :func:`spiking_dqn.semantics.network_kernels.network_forward`.

    :param arrived: the last hidden layer's arrived spikes summed over the ticks ``(batch, n)``
        (weighted by tick gains, when the projection has them)
    :param weight: readout weights ``(n_actions, n)``
    :param bias: readout bias ``(n_actions,)``
    :param ticks: ticks ``T``
    """
    return nn.functional.linear(arrived, weight) + ticks * bias


def nearest_level_torch(value: th.Tensor, levels: th.Tensor) -> th.Tensor:
    """:func:`lif.nearest_level` elementwise in torch: the nearest of the sorted ``levels``, ties to the lower.

    :param value: membranes, any shape
    :param levels: sorted, strictly increasing levels (1-D, the dtype and device of ``value``)
    """
    above = th.searchsorted(levels, value.contiguous()).clamp(max=levels.numel() - 1)
    below = (above - 1).clamp(min=0)
    lower, upper = levels[below], levels[above]
    return th.where(value - lower <= upper - value, lower, upper)


def _lif_scan_torch(
    current: th.Tensor, beta: float, threshold: float, subtract: bool, levels: th.Tensor | None = None
) -> tuple[th.Tensor, th.Tensor]:
    """The ``ChipLeaky`` tick loop with torch ops on ``(T, batch, n)`` currents, for tensors on an
    accelerator (on the CPU, :func:`network_kernels.spiking_layer_into`): pre-reset membranes and spikes.
    With ``levels``, the membrane kept after each tick is its :func:`nearest_level_torch`."""
    pre = th.empty_like(current)
    spikes = th.empty_like(current)
    mem = th.zeros_like(current[0])

    def fire(m: th.Tensor) -> th.Tensor:
        return (m > threshold).to(m.dtype)

    for t in range(current.shape[0]):
        pre[t], spikes[t], mem = lif_tick_torch(mem, current[t], beta, threshold, subtract, fire)
        if levels is not None:
            mem = nearest_level_torch(mem, levels)
    return pre, spikes


def _reverse_scan(direct: th.Tensor, carry: float | th.Tensor) -> th.Tensor:
    """``g_t = direct_t + carry_t * g_{t+1}`` from the last tick back, in torch (accelerators)."""
    grad = direct.clone()
    scalar = not isinstance(carry, th.Tensor)
    for t in range(grad.shape[0] - 2, -1, -1):
        grad[t] += (carry if scalar else carry[t]) * grad[t + 1]
    return grad


def neuron_params(neuron: ChipLeaky, scale: float = 1.0) -> tuple[float, float, bool]:
    """``(beta clamped to [0, 1], threshold, reset by subtraction)`` of a ``ChipLeaky``.

    Read from the neuron's tensors once and cached on it until one of them is replaced or
    changed in place (tensor version counters), since reading them costs more than a
    small layer's whole tick loop.

    :param neuron: the layer's neurons
    :param scale: factor on the threshold (the runtime knob and ASPEN's training noise,
        :mod:`spiking_dqn.thresholds`); the product is rounded to float32, as the
        emulator's ``float32(threshold) * float32(scale)``
    """
    # The buffers' dictionary directly: module attribute lookup costs more than the check.
    buffers = neuron._buffers
    beta, threshold, reset = buffers["beta"], buffers["threshold"], buffers["reset_mechanism_val"]
    key = (id(beta), beta._version, id(threshold), threshold._version, id(reset), reset._version)
    cached = neuron.__dict__.get("_scan_params")
    if cached is None or cached[0] != key:
        params = (min(max(beta.item(), 0.0), 1.0), threshold.item(), reset.item() == 0)
        cached = (key, params)
        neuron.__dict__["_scan_params"] = cached
    if scale == 1.0:
        return cached[1]
    beta, threshold, subtract = cached[1]
    return beta, float(scale_threshold(threshold, scale)), subtract


def direct_terms(grad_spikes: th.Tensor, pre: th.Tensor, neuron: ChipLeaky, scale: float = 1.0) -> th.Tensor:
    """``dL/ds * surrogate'(m - threshold)`` of a layer through autograd, for any surrogate.

    :param grad_spikes: ``dL/ds`` ``(T, batch, n)``
    :param pre: the layer's pre-reset membranes
    :param neuron: the layer's neurons
    :param scale: factor on the threshold (see :func:`neuron_params`)
    """
    threshold = neuron_params(neuron, scale)[1]
    with th.enable_grad():
        shifted = (pre - threshold).detach().requires_grad_(True)
        (terms,) = th.autograd.grad(neuron.spike_grad(shifted), shifted, grad_outputs=grad_spikes)
    return terms


def _current_grad_torch(
    grad_spikes: th.Tensor, pre: th.Tensor, spikes: th.Tensor, neuron: ChipLeaky, scale: float = 1.0
) -> th.Tensor:
    """``dL/dI`` of a ``ChipLeaky`` layer from ``dL/ds``, its pre-reset membranes and spikes, in torch ops.

    The exact gradient autograd gives through the tick loop (reset detached): with
    pre-reset membranes ``m_t`` and spikes ``s_t``,
    ``dL/dm_t = dL/ds_t * surrogate'(m_t - threshold) + beta * k_t * dL/dm_{t+1}`` where
    ``k_t = 1`` for reset by subtraction and ``1 - s_t`` for reset to zero, and
    ``dL/dI_t = dL/dm_t``. On the CPU the same is :func:`network_kernels.spiking_layer_backward`.
    """
    beta, _, subtract = neuron_params(neuron)
    terms = direct_terms(grad_spikes, pre, neuron, scale)
    # Membrane carried to the next tick: beta * k_t (k_t = 1, or 1 - s_t for reset to zero).
    return _reverse_scan(terms, beta if subtract else beta * (1.0 - spikes))


def _layer_forward(
    spikes_in: th.Tensor,
    weight: th.Tensor,
    bias: th.Tensor,
    neuron: ChipLeaky,
    delay: int,
    keep_pre: bool,
    scale: float = 1.0,
    levels: np.ndarray | None = None,
) -> tuple[th.Tensor | None, th.Tensor]:
    """Pre-reset membranes (if ``keep_pre``) and spikes of ``LIF(linear(delay(spikes_in)))``, outside autograd.

    On the CPU one event-driven kernel call (:func:`network_kernels.spiking_layer_into`, the
    kernel the whole-network pass of :mod:`spiking_dqn.fused` runs per layer); on an
    accelerator in torch (:func:`_layer_forward_torch`).
    """
    if spikes_in.device.type != "cpu":
        return _layer_forward_torch(spikes_in, weight, bias, neuron, delay, keep_pre, scale, levels)
    x = np.ascontiguousarray(spikes_in.detach().numpy())
    beta, threshold, subtract = neuron_params(neuron, scale)
    shape = (*x.shape[:-1], weight.shape[0])
    spikes = np.empty(shape, dtype=np.float32)
    pre = np.empty(shape, dtype=np.float32) if keep_pre else np.empty((0, 0, 0), dtype=np.float32)
    weight_t = np.ascontiguousarray(weight.detach().numpy().T)
    network_kernels.spiking_layer_into(
        x,
        weight_t,
        bias.detach().numpy(),
        np.float32(beta),
        np.float32(threshold),
        subtract,
        delay,
        keep_pre,
        pre,
        spikes,
        lif.NO_LEVELS if levels is None else np.array(levels, dtype=np.float32),
    )
    return (th.from_numpy(pre) if keep_pre else None), th.from_numpy(spikes)


def _layer_forward_torch(
    spikes_in: th.Tensor,
    weight: th.Tensor,
    bias: th.Tensor,
    neuron: ChipLeaky,
    delay: int,
    keep_pre: bool,
    scale: float = 1.0,
    levels: np.ndarray | None = None,
) -> tuple[th.Tensor | None, th.Tensor]:
    """:func:`_layer_forward` in torch ops, for tensors on an accelerator (tested on the CPU)."""
    current = nn.functional.linear(delay_spikes(spikes_in.detach(), delay), weight.detach(), bias.detach())
    beta, threshold, subtract = neuron_params(neuron, scale)
    level_tensor = None if levels is None else th.tensor(levels, dtype=current.dtype, device=current.device)
    pre, spikes = _lif_scan_torch(current, beta, threshold, subtract, level_tensor)
    return (pre if keep_pre else None), spikes


def layer_backward_cpu(
    grad_spikes: np.ndarray,
    pre: np.ndarray,
    spikes: np.ndarray,
    spikes_in: np.ndarray,
    neuron: ChipLeaky,
    delay: int,
    grad_current: np.ndarray,
    scale: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Weight and bias gradients of a layer on the CPU, and its current gradient written into ``grad_current``.

    One :func:`network_kernels.spiking_layer_backward` call, the named surrogates in closed form;
    any other surrogate's direct terms come from autograd (:func:`direct_terms`) first.
    Used by the per-layer node and by the whole-network node of :mod:`spiking_dqn.fused`.

    :param grad_spikes: ``dL/ds`` float32 C-contiguous ``(T, batch, n_out)``
    :param pre: the layer's pre-reset membranes
    :param spikes: the layer's spikes
    :param spikes_in: its input spike trains, float32 C-contiguous ``(T, batch, n_in)``
    :param neuron: the layer's neurons
    :param delay: synaptic delay in ticks
    :param grad_current: output for ``dL/dI``, the shape of ``grad_spikes`` (not the same
        array: aliasing stops the kernel's loops from vectorising)
    :param scale: factor on the threshold, the one the forward ran with (see :func:`neuron_params`)
    """
    beta, threshold, subtract = neuron_params(neuron, scale)
    code, param = neuron.surrogate_code
    if code == lif.SURROGATE_NONE:
        grad_spikes = direct_terms(th.from_numpy(grad_spikes), th.from_numpy(pre), neuron, scale).contiguous().numpy()
    return network_kernels.spiking_layer_backward(
        grad_spikes,
        pre,
        spikes,
        spikes_in,
        delay,
        np.float32(beta),
        np.float32(threshold),
        subtract,
        code,
        float(param),
        grad_current,
    )


class _SpikingLayer(th.autograd.Function):
    """Delay, projection and ``ChipLeaky`` layer in one autograd node.

    ``spikes_out = LIF(linear(delay(spikes_in), weight, bias))`` over all ticks, computed by
    :func:`_layer_forward` (the same call as inference, so training and acting see the
    same spikes); backward computes the current, weight and bias gradients in one compiled
    pass on the CPU (:func:`layer_backward_cpu`), in torch ops elsewhere, and the input
    gradient with one matrix product. One node instead of four keeps autograd's per-node
    cost, which dominates on small batches, out of every step. Networks on the CPU run all
    their layers as one node instead (:mod:`spiking_dqn.fused`).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx,
        spikes_in: th.Tensor,
        weight: th.Tensor,
        bias: th.Tensor,
        neuron: ChipLeaky,
        delay: int,
        scale: float,
        levels: np.ndarray | None,
    ) -> th.Tensor:
        pre, spikes = _layer_forward(spikes_in, weight, bias, neuron, delay, keep_pre=True, scale=scale, levels=levels)
        ctx.save_for_backward(spikes_in, weight, pre, spikes)
        ctx.neuron, ctx.delay, ctx.scale = neuron, delay, scale  # type: ignore[attr-defined]
        return spikes

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: FunctionCtx, grad_spikes: th.Tensor
    ) -> tuple[th.Tensor | None, th.Tensor | None, th.Tensor | None, None, None, None, None]:
        spikes_in, weight, pre, spikes = ctx.saved_tensors  # type: ignore[attr-defined]
        delay: int = ctx.delay  # type: ignore[attr-defined]
        scale: float = ctx.scale  # type: ignore[attr-defined]
        needs_input_grad: tuple[bool, ...] = ctx.needs_input_grad  # type: ignore[attr-defined]
        if grad_spikes.device.type == "cpu":
            grad_current = th.empty_like(pre)
            grad_weight_np, grad_bias_np = layer_backward_cpu(
                grad_spikes.contiguous().numpy(),
                pre.numpy(),
                spikes.numpy(),
                np.ascontiguousarray(spikes_in.detach().numpy()),
                ctx.neuron,  # type: ignore[attr-defined]
                delay,
                grad_current.numpy(),
                scale,
            )
            grad_weight, grad_bias = th.from_numpy(grad_weight_np), th.from_numpy(grad_bias_np)
        else:
            grad_current = _current_grad_torch(grad_spikes, pre, spikes, ctx.neuron, scale)  # type: ignore[attr-defined]
            arrived = delay_spikes(spikes_in, delay)
            grad_weight = grad_current.reshape(-1, grad_current.shape[-1]).t().mm(arrived.reshape(-1, arrived.shape[-1]))
            grad_bias = grad_current.reshape(-1, grad_current.shape[-1]).sum(0)
        flat = grad_current.reshape(-1, grad_current.shape[-1])
        grad_weight = grad_weight if needs_input_grad[1] else None
        grad_bias = grad_bias if needs_input_grad[2] else None
        grad_in = None
        if needs_input_grad[0]:
            # What arrived at tick t was emitted at t - delay.
            grad_arrived = flat.mm(weight).reshape(spikes_in.shape)
            grad_in = th.zeros_like(grad_arrived) if delay else grad_arrived
            if delay:
                grad_in[:-delay] = grad_arrived[delay:]
        return grad_in, grad_weight, grad_bias, None, None, None, None


def spiking_layer(
    spikes_in: th.Tensor,
    weight: th.Tensor,
    bias: th.Tensor,
    neuron: ChipLeaky,
    delay: int,
    scale: float = 1.0,
    levels: np.ndarray | None = None,
) -> th.Tensor:
    """Spike trains ``(T, batch, n_out)`` of ``LIF(linear(delay(spikes_in), weight, bias))``.

    Under autograd (gradients enabled and an input that requires them) one
    :class:`_SpikingLayer` node; otherwise (action selection, the target network) the
    forward alone, without keeping the membranes. Both give the same spikes.

    :param spikes_in: spike trains of the previous population ``(T, batch, n_in)``
    :param weight: projection weights ``(n_out, n_in)``
    :param bias: bias ``(n_out,)``, added to the current every tick
    :param neuron: the layer's neurons
    :param delay: synaptic delay in ticks (0 or 1)
    :param scale: factor on the neurons' threshold (see :func:`neuron_params`)
    :param levels: membrane state levels (SQUAT, float32 sorted; ``None``: float32 state):
        the membrane kept after each tick's reset is the nearest level; the backward passes
        the gradient straight through the rounding
    """
    if th.is_grad_enabled() and (spikes_in.requires_grad or weight.requires_grad or bias.requires_grad):
        return _SpikingLayer.apply(spikes_in, weight, bias, neuron, delay, scale, levels)
    return _layer_forward(spikes_in, weight, bias, neuron, delay, keep_pre=False, scale=scale, levels=levels)[1]


def layered_forward(
    spikes: th.Tensor,
    weights: list[th.Tensor],
    biases: list[th.Tensor],
    neurons: list[ChipLeaky],
    delay: int,
    scale: float,
    levels: tuple[np.ndarray | None, ...],
) -> tuple[th.Tensor, list[th.Tensor]]:
    """Q-values and hidden spike trains of a network layer by layer (:func:`spiking_layer`), the accelerators' executor.

    :param spikes: input spike trains ``(T, batch, n_0)``
    :param weights: the forward's weights, hidden layers then readout ``(n_out, n_in)``
    :param biases: their biases
    :param neurons: the hidden layers' neurons
    :param delay: synaptic delay in ticks
    :param scale: factor on every hidden threshold
    :param levels: state levels per hidden layer (``None`` entries: float32 state)
    """
    trains = []
    x = spikes
    for w, b, neuron, level in zip(weights, biases, neurons, levels):
        x = spiking_layer(x, w, b, neuron, delay, scale, level)
        trains.append(x)
    ticks = spikes.shape[0]
    arrived = trains[-1][: ticks - delay].sum(0)
    return integrator_readout(arrived, weights[-1], biases[-1], ticks), trains
