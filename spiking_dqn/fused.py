"""The whole spiking network as one compiled pass on the CPU, forward and backward.

On the CPU a :class:`~spiking_dqn.network.SpikingQNetwork` runs its hidden layers and
readout in one call of :func:`spiking_dqn.semantics.network_kernels.network_forward` (event-driven: a
synaptic current is the sum of the weight rows of the inputs that fired), and, under
autograd, as one :class:`_SpikingNetwork` node whose backward is one compiled pass per
layer (:func:`spiking_dqn.layers.layer_backward_cpu`) plus one dense product per
layer for the gradient reaching the layer below (that gradient is not sparse). A forward
costs no module traversal, no per-layer dispatch and no tensor round trip per layer.

Spikes are those of the per-layer path of :mod:`spiking_dqn.layers` (which accelerators
run), and Q-values and gradients agree with it to float32 rounding (tested, with every
surrogate, both resets and both delays).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import torch as th
from torch.autograd.function import FunctionCtx

from spiking_dqn.semantics import lif, network_kernels
from spiking_dqn.layers import layer_backward_cpu, neuron_params
from spiking_dqn.neuron import ChipLeaky

_EMPTY = np.empty((0, 0, 0), dtype=np.float32)


@dataclass(frozen=True)
class NeuronPlan:
    """The neuron parameters of every hidden layer, as the kernels take them.

    :param betas: membrane decay per hidden layer (clamped to [0, 1])
    :param thresholds: threshold per hidden layer
    :param subtract: reset by subtraction (else to zero); one mode for the network
    :param neurons: the layers' neurons (their surrogates, for the backward)
    :param delay: synaptic delay in ticks
    :param scale: the factor ``thresholds`` carry over the neurons' own thresholds (the
        threshold knob, :mod:`spiking_dqn.thresholds`); the backward uses the same
    :param levels: membrane state levels per hidden layer (SQUAT; ``lif.NO_LEVELS`` for
        float32 state); the backward passes the gradient straight through the rounding
    """

    betas: np.ndarray
    thresholds: np.ndarray
    subtract: bool
    neurons: tuple[ChipLeaky, ...]
    delay: int
    scale: float = 1.0
    levels: tuple[np.ndarray, ...] = ()

    @classmethod
    def of(
        cls,
        neurons: Sequence[ChipLeaky],
        delay: int,
        scale: float = 1.0,
        levels: Sequence[np.ndarray | None] | None = None,
    ) -> NeuronPlan:
        """The plan of a network's ``ChipLeaky`` layers, read through :func:`neuron_params`' cache.

        :param neurons: the hidden layers' neurons
        :param delay: synaptic delay in ticks
        :param scale: factor on every layer's threshold
        :param levels: state levels per hidden layer (``None`` entries, or ``None``: float32 state)
        :raises ValueError: the layers mix reset mechanisms
        """
        params = [neuron_params(neuron, scale) for neuron in neurons]
        resets = {subtract for _, _, subtract in params}
        if len(resets) != 1:
            raise ValueError("the hidden layers of one network must share a reset mechanism")
        return cls(
            betas=np.array([beta for beta, _, _ in params], dtype=np.float32),
            thresholds=np.array([threshold for _, threshold, _ in params], dtype=np.float32),
            subtract=resets.pop(),
            neurons=tuple(neurons),
            delay=int(delay),
            scale=float(scale),
            # Writable copies: numba compiles one signature for writable arrays (NO_LEVELS is one).
            levels=tuple(
                lif.NO_LEVELS if lv is None else np.array(lv, dtype=np.float32)
                for lv in (levels or [None] * len(neurons))
            ),
        )

    def with_scale(self, scale: float) -> NeuronPlan:
        """This plan with ``scale`` on the neurons' own thresholds instead (a threshold-noise draw).

        :param scale: factor on every layer's threshold
        """
        thresholds = np.array([neuron_params(neuron, scale)[1] for neuron in self.neurons], dtype=np.float32)
        return replace(self, thresholds=thresholds, scale=float(scale))

    def layer_levels(self) -> tuple[np.ndarray | None, ...]:
        """The state levels of each hidden layer, ``None`` for float32 state (the torch executors' form)."""
        return tuple(None if lv is lif.NO_LEVELS else lv for lv in self.levels)


#: The executors of a network's forward: the compiled CPU pass (:func:`network_forward`), the
#: per-layer path (:func:`spiking_dqn.layers.layered_forward`, accelerators) and the tick
#: loop with per-tick gains (:func:`spiking_dqn.tick_gain.gained_forward`).
Executor = Literal["compiled", "layers", "gained"]


@dataclass(frozen=True)
class NetworkPlan:
    """How a network runs its forward, chosen when its device or options change (not per forward).

    :param executor: the forward's executor
    :param neurons: the neuron parameters, with the threshold scale and the state levels
    :param compiled_step: :meth:`~spiking_dqn.network.SpikingQNetwork.compiled_forward` and
        :func:`network_backward` give the network's gradient (CPU, no fake quantization,
        no activity penalty, no tick gains)
    :param cached_views: the compiled executor may read the parameters through the network's
        :class:`ParameterViews` (not with fake-quantized weights, made anew each forward)
    :param watched: every neuron tensor with its version when the plan was made; a tensor
        replaced or changed in place since (:meth:`current` is false) makes a new plan
    """

    executor: Executor
    neurons: NeuronPlan
    compiled_step: bool
    cached_views: bool
    watched: tuple[tuple[dict, str, th.Tensor, int], ...]

    @staticmethod
    def watch(neurons: Sequence[ChipLeaky]) -> tuple[tuple[dict, str, th.Tensor, int], ...]:
        """The neuron tensors a plan is made from (:func:`neuron_params`' decay, threshold and reset), as ``watched``.

        :param neurons: the hidden layers' neurons
        """
        return tuple(
            (neuron._buffers, name, neuron._buffers[name], neuron._buffers[name]._version)
            for neuron in neurons
            for name in ("beta", "threshold", "reset_mechanism_val")
        )

    def current(self) -> bool:
        """Whether no neuron tensor was replaced or changed in place since the plan was made."""
        return all(buffers.get(name) is t and t._version == version for buffers, name, t, version in self.watched)


class Workspace:
    """Float32 arrays for the kernels' outputs, handed out again once nothing else references them.

    A forward and backward of a training batch write several arrays of ``(T, batch, n)``
    floats (megabytes for the Acrobot recipe). Freshly allocated, each costs page faults
    on first touch, which took longer than the arithmetic; reused, it is in the cache.
    An array is reused only when its reference count shows that the pool alone holds it,
    i.e. the tensors made from it (returned spike trains, an autograd graph that saved
    it) are gone. At most ``per_shape`` arrays are kept per shape and ``shapes`` shapes.

    :param per_shape: arrays kept per shape
    :param shapes: shapes kept (the least recently used is dropped)
    """

    def __init__(self, per_shape: int = 16, shapes: int = 32) -> None:
        self.per_shape = per_shape
        self.shapes = shapes
        self._pool: dict[tuple[int, ...], list[np.ndarray]] = {}

    def empty(self, shape: tuple[int, ...]) -> np.ndarray:
        """An uninitialised float32 array of ``shape`` that nothing else references.

        :param shape: the array's shape
        """
        arrays = self._pool.pop(shape, None)
        if arrays is None:
            arrays = []
            if len(self._pool) >= self.shapes:
                self._pool.pop(next(iter(self._pool)))
        self._pool[shape] = arrays  # most recently used last
        for array in arrays:
            # References: the list, this loop's variable and getrefcount's argument.
            if sys.getrefcount(array) == 3:
                return array
        array = np.empty(shape, dtype=np.float32)
        if len(arrays) < self.per_shape:
            arrays.append(array)
        return array

    def zeros(self, shape: tuple[int, ...]) -> np.ndarray:
        """A zeroed float32 array of ``shape`` that nothing else references.

        :param shape: the array's shape
        """
        array = self.empty(shape)
        array.fill(0.0)
        return array


WORKSPACE = Workspace()
"""The kernels' output arrays, shared by every network in the process."""


def run_network(
    spikes_in: np.ndarray,
    weights: Sequence[np.ndarray],
    biases: Sequence[np.ndarray],
    plan: NeuronPlan,
    keep_pre: bool = False,
) -> tuple[np.ndarray, tuple[np.ndarray, ...], tuple[np.ndarray, ...], np.ndarray]:
    """Q-values, spike trains, pre-reset membranes and arrived counts of the network, in one kernel call.

    :param spikes_in: input spike trains, float32 C-contiguous ``(T, batch, n_0)``
    :param weights: weights ``(n_out, n_in)``, float32 C-contiguous, hidden layers then readout
        (read as they are at this call: a weight changed since, through ``.data`` or an
        optimizer, is seen by the next call)
    :param biases: biases, hidden layers then readout
    :param plan: the neuron parameters
    :param keep_pre: keep the pre-reset membranes (else empty arrays in their place)
    """
    ticks, batch = spikes_in.shape[:2]
    shapes = [(ticks, batch, w.shape[0]) for w in weights[:-1]]
    trains = tuple(WORKSPACE.empty(shape) for shape in shapes)
    pres = tuple(WORKSPACE.empty(shape) for shape in shapes) if keep_pre else (_EMPTY,) * len(shapes)
    q, counts = network_kernels.network_forward(
        spikes_in,
        tuple(weights[:-1]),
        tuple(biases[:-1]),
        plan.betas,
        plan.thresholds,
        plan.subtract,
        plan.delay,
        keep_pre,
        pres,
        trains,
        weights[-1],
        biases[-1],
        plan.levels or (lif.NO_LEVELS,) * len(shapes),
    )
    return q, trains, pres, counts


def arrays(tensors: Sequence[th.Tensor]) -> list[np.ndarray]:
    """Float32 C-contiguous numpy views (copies only where a tensor is not contiguous) of CPU tensors."""
    return [np.ascontiguousarray(t.detach().numpy()) for t in tensors]


class ParameterViews:
    """:func:`arrays` of a network's parameters, kept between calls.

    A view shares its tensor's memory, so it sees in-place updates (an optimizer's step,
    ``copy_``) without being made again. When a tensor was replaced, re-pointed
    (``.data = ...``) or re-strided since the last call, the views are made anew; tensors
    that are not C-contiguous float32 are copied at every call, as :func:`arrays` does.
    """

    def __init__(self) -> None:
        self._key: list[tuple[th.Tensor, int, tuple[int, ...]]] = []
        self._views: list[np.ndarray] = []

    def __call__(self, tensors: Sequence[th.Tensor]) -> list[np.ndarray]:
        """The views of ``tensors`` (CPU tensors), in order.

        :param tensors: the tensors, the same list at every call for the cache to help
        """
        key = self._key
        if len(key) == len(tensors) and all(
            k is t and ptr == t.data_ptr() and stride == t.stride() for (k, ptr, stride), t in zip(key, tensors)
        ):
            return self._views
        views = arrays(tensors)
        if all(t.dtype == th.float32 and t.is_contiguous() for t in tensors):  # views, not copies
            self._key, self._views = [(t, t.data_ptr(), t.stride()) for t in tensors], views
        else:
            self._key, self._views = [], []
        return views


class _SpikingNetwork(th.autograd.Function):
    """Hidden layers and readout of a spiking Q-network in one autograd node (CPU).

    Inputs: the plan, whether to output the spike trains, the input spikes, then the
    weight and bias tensors of every projection (hidden layers, then readout). Outputs:
    the Q-values, and with ``with_trains`` each hidden layer's spike train (a loss on spike
    counts backpropagates through them).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx, plan: NeuronPlan, with_trains: bool, spikes_in: th.Tensor, *params: th.Tensor
    ) -> th.Tensor | tuple[th.Tensor, ...]:
        x = np.ascontiguousarray(spikes_in.detach().numpy())
        param_arrays = arrays(params)
        weights = param_arrays[0::2]
        q, trains, pres, counts = run_network(x, weights, param_arrays[1::2], plan, keep_pre=True)
        ctx.set_materialize_grads(False)
        ctx.plan = plan  # type: ignore[attr-defined]
        # Saved as tensors: autograd frees the arrays after the backward (so the workspace
        # hands them out again) rather than with the graph, and a weight changed in
        # place before the backward raises autograd's usual error.
        arrays_saved = (th.from_numpy(a) for a in (x, counts, *trains, *pres))
        ctx.save_for_backward(*params[0::2], *arrays_saved)
        if not with_trains:
            return th.from_numpy(q)
        return (th.from_numpy(q), *(th.from_numpy(train) for train in trains))

    @staticmethod
    def backward(ctx: FunctionCtx, grad_q: th.Tensor | None, *grad_trains: th.Tensor | None):  # type: ignore[override]
        plan: NeuronPlan = ctx.plan  # type: ignore[attr-defined]
        n_layers = len(plan.neurons)
        saved = [t.detach().numpy() for t in ctx.saved_tensors]  # type: ignore[attr-defined]
        weights, (x, counts), rest = saved[: n_layers + 1], saved[n_layers + 1 : n_layers + 3], saved[n_layers + 3 :]
        tape = Tape(x, rest[:n_layers], rest[n_layers:], counts)
        needs: tuple[bool, ...] = ctx.needs_input_grad  # type: ignore[attr-defined]
        grad_x, grads = network_backward(
            tape,
            weights,
            plan,
            None if grad_q is None else np.ascontiguousarray(grad_q.numpy()),
            [None if g is None else g.numpy() for g in grad_trains],
            input_grad=needs[2],
        )
        params_grads = [th.from_numpy(g) if g is not None and needs[3 + i] else None for i, g in enumerate(grads)]
        return (None, None, None if grad_x is None else th.from_numpy(grad_x), *params_grads)


@dataclass(frozen=True)
class Tape:
    """What a forward keeps for :func:`network_backward`: its input, spike trains, pre-reset membranes and arrived counts.

    :param spikes_in: the input spike trains ``(T, batch, n_0)``
    :param trains: each hidden layer's spike train ``(T, batch, n_l)``
    :param pres: each hidden layer's pre-reset membranes ``(T, batch, n_l)``
    :param counts: the arrived spike counts of the last hidden layer ``(batch, n_L)``
    """

    spikes_in: np.ndarray
    trains: Sequence[np.ndarray]
    pres: Sequence[np.ndarray]
    counts: np.ndarray


def network_backward(
    tape: Tape,
    weights: Sequence[np.ndarray],
    plan: NeuronPlan,
    grad_q: np.ndarray | None,
    grad_trains: Sequence[np.ndarray | None] = (),
    input_grad: bool = False,
) -> tuple[np.ndarray | None, list[np.ndarray | None]]:
    """Gradients of a forward of :func:`run_network` (with ``keep_pre``): BPTT through every layer.

    One compiled pass per layer (:func:`spiking_dqn.layers.layer_backward_cpu`) and one
    dense product per layer for the gradient reaching the layer below (not sparse).

    :param tape: the forward's arrays
    :param weights: the forward's weights ``(n_out, n_in)``, hidden layers then readout
    :param plan: the forward's neuron parameters
    :param grad_q: ``dL/dq`` float32 C-contiguous ``(batch, n_actions)``, or ``None`` (zero)
    :param grad_trains: ``dL/ds`` of each hidden layer's train, or ``None`` entries (zero)
    :param input_grad: also compute the gradient of the input spike trains
    :return: the input gradient (``None`` unless ``input_grad``) and the weight and bias
        gradients of every projection, hidden layers then readout (``None``: zero)
    """
    n_layers, d = len(plan.neurons), plan.delay
    x, trains, pres = tape.spikes_in, tape.trains, tape.pres
    ticks = x.shape[0]
    grads: list[np.ndarray | None] = [None] * (2 * n_layers + 2)
    # Readout: q = W c + T b, with c the spikes of the last layer that arrived.
    grad_s = WORKSPACE.zeros(trains[-1].shape) if grad_q is None else WORKSPACE.empty(trains[-1].shape)
    if grad_q is not None:
        grads[-2], grads[-1] = network_kernels.readout_backward(grad_q, tape.counts, weights[-1], ticks, d, grad_s)
    grad_x = None
    for layer in range(n_layers - 1, -1, -1):
        if layer < len(grad_trains) and grad_trains[layer] is not None:
            grad_s += grad_trains[layer]
        inputs = x if layer == 0 else trains[layer - 1]
        grad_current = WORKSPACE.empty(grad_s.shape)
        grads[2 * layer], grads[2 * layer + 1] = layer_backward_cpu(
            grad_s, pres[layer], trains[layer], inputs, plan.neurons[layer], d, grad_current, plan.scale
        )
        if layer == 0 and not input_grad:
            break
        # What arrived at tick t was emitted at t - d: dL/ds_in[t] = dL/dI[t + d] W.
        below = WORKSPACE.empty(inputs.shape)
        below[ticks - d :] = 0.0
        n_out, n_in = grad_current.shape[-1], inputs.shape[-1]
        np.matmul(grad_current[d:].reshape(-1, n_out), weights[layer], out=below[: ticks - d].reshape(-1, n_in))
        if layer == 0:
            grad_x = below
        else:
            grad_s = below
    return grad_x, grads


def network_forward(
    spikes_in: th.Tensor,
    weights: Sequence[th.Tensor],
    biases: Sequence[th.Tensor],
    plan: NeuronPlan,
    return_trains: bool = True,
    views: ParameterViews | None = None,
) -> tuple[th.Tensor, list[th.Tensor]]:
    """Q-values ``(batch, n_actions)`` and hidden spike trains of a network on CPU tensors.

    One :class:`_SpikingNetwork` node under autograd (gradients enabled and a parameter or
    the input that requires them); otherwise one kernel call, with no graph.

    :param spikes_in: input spike trains ``(T, batch, n_0)``
    :param weights: the forward's weights, hidden layers then readout ``(n_out, n_in)``
    :param biases: the biases, hidden layers then readout
    :param plan: the neuron parameters (:meth:`NeuronPlan.of`)
    :param return_trains: return the spike trains (else an empty list; under autograd the
        node then has the Q-values as its only output)
    :param views: the caller's cache of parameter arrays (weights then biases), used without a graph
    """
    params = [p for pair in zip(weights, biases) for p in pair]
    if th.is_grad_enabled() and (spikes_in.requires_grad or any(p.requires_grad for p in params)):
        if not return_trains:
            return _SpikingNetwork.apply(plan, False, spikes_in, *params), []
        q, *trains = _SpikingNetwork.apply(plan, True, spikes_in, *params)
        return q, trains
    x = np.ascontiguousarray(spikes_in.detach().numpy())
    n = len(weights)
    param_arrays = (views or arrays)([*weights, *biases])
    q_np, trains_np, _, _ = run_network(x, param_arrays[:n], param_arrays[n:], plan)
    return th.from_numpy(q_np), [th.from_numpy(train) for train in trains_np] if return_trains else []
