"""Compiled CPU kernels (numba) for the LIF layers and the whole spiking network, forward and backward.

A layer runs for all ticks at once (see :mod:`spiking_dqn.layers`), event-driven: spikes
are 0/1 and most are 0, so the synaptic current of a tick is the sum of the weight rows of
the inputs that fired (added in input order, the order of a dense product over the
inputs), and the neuron update loops over the ticks. Written as numpy or torch ops, that
loop costs one dispatch per op and tick, which dominates training on small batches. These
kernels do a layer (:func:`spiking_layer_into`), the whole network
(:func:`network_forward`) and their exact backward (:func:`spiking_layer_backward`,
:func:`readout_backward`) in one compiled call each; the neuron's tick loop itself is in
:mod:`spiking_dqn.semantics.lif`. They follow ``ChipLeaky`` (snnTorch ``Leaky`` with the
chip's same-tick reset) and the chip emulator's semantics; the torch versions in
:mod:`spiking_dqn.layers` remain for tensors on an accelerator, and tests check that the
kernels, the torch loop and snnTorch's autograd agree.

All kernels are single-threaded and keep float32 arithmetic, without fast-math
reassociation, with numba's ``error_model="numpy"``; compiled code is cached on disk.
"""

from __future__ import annotations

import numba
import numpy as np

from spiking_dqn.semantics.lif import lif_backward, nearest_level


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _fired(spikes: np.ndarray, t: int, b: int, out: np.ndarray) -> int:
    """Indices of the nonzero entries of ``spikes[t, b]``, in order, written into ``out``; returns how many.

    Branch-free (each index is written, the count advances only past a spike), since at
    the usual spike densities a branch per input is mispredicted about once per spike.
    """
    n = 0
    for k in range(spikes.shape[2]):
        out[n] = k
        n += spikes[t, b, k] != 0
    return n


@numba.njit(cache=True, nogil=True, error_model="numpy")
def spiking_layer_into(
    spikes_in: np.ndarray,
    weight_t: np.ndarray,
    bias: np.ndarray,
    beta: np.float32,
    threshold: np.float32,
    subtract: bool,
    delay: int,
    keep_pre: bool,
    pre: np.ndarray,
    spikes: np.ndarray,
    levels: np.ndarray,
) -> None:
    """Delay, projection and LIF neurons of one layer over all ticks, written into ``pre`` and ``spikes``.

    Event-driven: spikes are 0/1 and most are 0, so the synaptic current of a tick is the
    sum of the weight rows of the inputs that fired, added in input order
    (``sum_k s_k W[j, k]``, then ``+ b``), which is the order of a dense BLAS product
    over ``k`` and gives its float32 result on the training shapes (tested). Then per tick
    ``m = beta * v + I``, spike if ``m > threshold``, reset (subtract, or to zero).

    :param spikes_in: input spike trains, float32 ``(T, batch, n_in)``
    :param weight_t: transposed weights, float32 C-contiguous ``(n_in, n_out)``
    :param bias: bias, float32 ``(n_out,)``
    :param beta: membrane decay
    :param threshold: threshold
    :param subtract: reset by subtraction (else to zero)
    :param delay: ticks from emission to arrival
    :param keep_pre: write the pre-reset membranes into ``pre`` (else ``pre`` is not touched)
    :param pre: output, float32 ``(T, batch, n_out)`` when ``keep_pre``
    :param spikes: output 0/1 spikes, float32 ``(T, batch, n_out)``
    :param levels: membrane state levels (SQUAT): after each tick's reset the kept membrane
        becomes its :func:`nearest_level`; :data:`NO_LEVELS` (empty) keeps float32 state
    """
    ticks, batch, n_in = spikes_in.shape
    n_out = weight_t.shape[1]
    quantized = levels.shape[0] > 0
    acc = np.empty(n_out, dtype=np.float32)
    v = np.empty(n_out, dtype=np.float32)
    fired_inputs = np.empty(n_in, dtype=np.int64)
    one, zero = np.float32(1.0), np.float32(0.0)
    for b in range(batch):
        for j in range(n_out):
            v[j] = zero
        for t in range(ticks):
            for j in range(n_out):
                acc[j] = zero
            if t >= delay:
                n_fired = _fired(spikes_in, t - delay, b, fired_inputs)
                for i in range(n_fired):
                    k = fired_inputs[i]
                    s = spikes_in[t - delay, b, k]
                    for j in range(n_out):
                        acc[j] += s * weight_t[k, j]
            for j in range(n_out):
                m = beta * v[j] + (acc[j] + bias[j])
                if keep_pre:
                    pre[t, b, j] = m
                fired = m > threshold
                spikes[t, b, j] = one if fired else zero
                if subtract:
                    v[j] = m - threshold if fired else m
                else:
                    v[j] = zero if fired else m
            if quantized:
                for j in range(n_out):
                    v[j] = nearest_level(levels, v[j])


@numba.njit(cache=True, nogil=True, error_model="numpy")
def network_forward(
    spikes_in: np.ndarray,
    weights: tuple,
    biases: tuple,
    betas: np.ndarray,
    thresholds: np.ndarray,
    subtract: bool,
    delay: int,
    keep_pre: bool,
    pres: tuple,
    trains: tuple,
    readout: np.ndarray,
    readout_bias: np.ndarray,
    levels: tuple,
) -> tuple[np.ndarray, np.ndarray]:
    """The whole spiking network in one call: every hidden layer (:func:`spiking_layer_into`), then the readout.

    The readout integrates without leak or spikes from zero, so its membrane after the
    last tick is ``W c + T b`` with ``c`` the spikes of the last hidden layer that arrived
    (those emitted before tick ``T - delay``).

    :param spikes_in: input spike trains, float32 ``(T, batch, n_0)``
    :param weights: one weight matrix per hidden layer, float32 ``(n_out, n_in)``
    :param biases: one bias per hidden layer, float32 ``(n_out,)``
    :param betas: membrane decay per hidden layer, float32 ``(L,)``
    :param thresholds: threshold per hidden layer, float32 ``(L,)``
    :param subtract: reset by subtraction (else to zero)
    :param delay: synaptic delay in ticks
    :param keep_pre: keep the pre-reset membranes (for the backward)
    :param pres: outputs for the pre-reset membranes, one per layer (unused unless ``keep_pre``)
    :param trains: outputs for the spike trains, float32 ``(T, batch, n_l)`` per layer
    :param readout: readout weights, float32 ``(n_actions, n_L)``
    :param readout_bias: readout bias, float32 ``(n_actions,)``
    :param levels: membrane state levels per hidden layer (:data:`NO_LEVELS` for float32 state)
    :return: Q-values float32 ``(batch, n_actions)`` and the arrived spike counts of the
        last hidden layer float32 ``(batch, n_L)``
    """
    for layer in range(len(trains)):
        x = spikes_in if layer == 0 else trains[layer - 1]
        spiking_layer_into(
            x,
            np.ascontiguousarray(weights[layer].T),
            biases[layer],
            betas[layer],
            thresholds[layer],
            subtract,
            delay,
            keep_pre,
            pres[layer],
            trains[layer],
            levels[layer],
        )
    last = trains[len(trains) - 1]
    ticks, batch, n = last.shape
    n_actions = readout.shape[0]
    counts = np.zeros((batch, n), dtype=np.float32)
    for t in range(ticks - delay):
        for b in range(batch):
            for k in range(n):
                counts[b, k] += last[t, b, k]
    q = np.empty((batch, n_actions), dtype=np.float32)
    scale = np.float32(ticks)
    for b in range(batch):
        for a in range(n_actions):
            total = np.float32(0.0)
            for k in range(n):
                total += counts[b, k] * readout[a, k]
            q[b, a] = total + scale * readout_bias[a]
    return q, counts


@numba.njit(cache=True, nogil=True, error_model="numpy")
def spiking_layer_backward(
    grad_spikes: np.ndarray,
    pre: np.ndarray,
    spikes: np.ndarray,
    spikes_in: np.ndarray,
    delay: int,
    beta: np.float32,
    threshold: np.float32,
    subtract: bool,
    surrogate: int,
    param: float,
    grad_current: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Current, weight and bias gradients of one layer of :func:`spiking_layer_into` (BPTT).

    The current gradient is :func:`lif_backward`'s. The weight gradient
    ``dL/dW[j, k] = sum_(t, b) dL/dI[t, b, j] s_in[t - delay, b, k]`` adds the current
    gradient rows of the ticks at which input ``k`` arrived, skipping the zeros.

    :param grad_spikes: ``dL/ds`` float32 ``(T, batch, n_out)`` (with ``SURROGATE_NONE``, the direct terms)
    :param pre: pre-reset membranes of the forward
    :param spikes: spikes of the forward
    :param spikes_in: the layer's input spike trains, float32 ``(T, batch, n_in)``
    :param delay: synaptic delay in ticks
    :param beta: membrane decay
    :param threshold: threshold
    :param subtract: reset by subtraction (else to zero)
    :param surrogate: one of the ``SURROGATE_*`` codes
    :param param: the surrogate's parameter
    :param grad_current: output for ``dL/dI``, float32 ``(T, batch, n_out)`` (may be ``grad_spikes``)
    :return: ``dL/dW`` float32 C-contiguous ``(n_out, n_in)`` and ``dL/db`` float32 ``(n_out,)``
    """
    lif_backward(grad_spikes, pre, spikes, beta, threshold, subtract, surrogate, param, grad_current)
    grad = grad_current
    ticks, batch, n_in = spikes_in.shape
    n_out = grad.shape[2]
    grad_weight_t = np.zeros((n_in, n_out), dtype=np.float32)
    grad_bias = np.zeros(n_out, dtype=np.float32)
    fired_inputs = np.empty(n_in, dtype=np.int64)
    for t in range(ticks):
        for b in range(batch):
            for j in range(n_out):
                grad_bias[j] += grad[t, b, j]
            if t >= delay:
                n_fired = _fired(spikes_in, t - delay, b, fired_inputs)
                for i in range(n_fired):
                    k = fired_inputs[i]
                    s = spikes_in[t - delay, b, k]
                    for j in range(n_out):
                        grad_weight_t[k, j] += s * grad[t, b, j]
    return grad_weight_t.T.copy(), grad_bias


@numba.njit(cache=True, nogil=True, error_model="numpy")
def readout_backward(
    grad_q: np.ndarray, counts: np.ndarray, readout: np.ndarray, ticks: int, delay: int, grad_spikes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Gradients of the integrator readout ``q = W c + T b`` (``c``: the arrived spike counts).

    :param grad_q: ``dL/dq`` float32 ``(batch, n_actions)``
    :param counts: arrived spike counts of the last hidden layer, float32 ``(batch, n)``
    :param readout: readout weights ``W``, float32 ``(n_actions, n)``
    :param ticks: ticks ``T``
    :param delay: synaptic delay: spikes of the last ``delay`` ticks do not arrive
    :param grad_spikes: output for ``dL/ds`` of the last hidden layer, float32 ``(T, batch, n)``:
        ``dL/dq W`` at the ticks whose spikes arrive, zero at the others
    :return: ``dL/dW`` float32 ``(n_actions, n)`` and ``dL/db`` float32 ``(n_actions,)``
    """
    batch, n_actions = grad_q.shape
    n = counts.shape[1]
    grad_weight = np.zeros((n_actions, n), dtype=np.float32)
    grad_bias = np.zeros(n_actions, dtype=np.float32)
    per_tick = np.zeros(n, dtype=np.float32)
    for b in range(batch):
        per_tick[:] = 0.0
        for a in range(n_actions):
            g = grad_q[b, a]
            grad_bias[a] += g
            for k in range(n):
                grad_weight[a, k] += g * counts[b, k]
                per_tick[k] += g * readout[a, k]
        for t in range(ticks):
            for k in range(n):
                grad_spikes[t, b, k] = per_tick[k] if t < ticks - delay else np.float32(0.0)
    for a in range(n_actions):
        grad_bias[a] *= np.float32(ticks)
    return grad_weight, grad_bias
