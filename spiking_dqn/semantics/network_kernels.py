"""Compiled CPU kernels (numba) for the LIF layers and the whole spiking network, forward and backward.

A layer runs for all ticks at once (see :mod:`spiking_dqn.layers`), event-driven: spikes
are 0/1 and most are 0, so the synaptic current of a tick is the sum of the weight rows of
the inputs that fired (added in input order, the order of a dense product over the
inputs), and the neuron update loops over the ticks. Written as numpy or torch ops, that
loop costs one dispatch per op and tick, which dominates training on small batches. These
kernels do a layer (:func:`spiking_layer_into`), the whole network
(:func:`network_forward`) and their exact backward (:func:`spiking_layer_backward`,
:func:`readout_backward`) in one compiled call each; the neuron's tick update itself is
:func:`spiking_dqn.semantics.lif.lif_tick`. A layer's loop nest, :func:`layer_ticks`, is
also the chip emulator's (:mod:`spiking_dqn.semantics.chip_kernels`), with the chip's
options. They follow ``ChipLeaky`` (snnTorch ``Leaky`` with the
chip's same-tick reset) and the chip emulator's semantics; the torch versions in
:mod:`spiking_dqn.layers` remain for tensors on an accelerator, and tests check that the
kernels, the torch loop and snnTorch's autograd agree.

All kernels are single-threaded and keep float32 arithmetic, without fast-math
reassociation (except :func:`dense_integer_currents`, whose integer sums are exact in any
order), with numba's ``error_model="numpy"``; compiled code is cached on disk.
"""

from __future__ import annotations

import numba
import numpy as np

from spiking_dqn.semantics.lif import lif_backward, lif_tick, nearest_level


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


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def add_arrivals(
    spikes_in: np.ndarray, t: int, b: int, weight_t: np.ndarray, fired_inputs: np.ndarray, acc: np.ndarray
) -> None:
    """Add to ``acc`` the weight rows of the inputs of ``spikes_in[t, b]`` that fired, times their spikes, in order.

    :param fired_inputs: scratch of at least ``n_in`` indices (see :func:`_fired`)
    """
    n_fired = _fired(spikes_in, t, b, fired_inputs)
    for i in range(n_fired):
        k = fired_inputs[i]
        s = spikes_in[t, b, k]
        for j in range(acc.shape[0]):
            acc[j] += s * weight_t[k, j]


@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc"})
def dense_integer_currents(spikes_in: np.ndarray, b: int, delay: int, weights: np.ndarray, out: np.ndarray) -> None:
    """The current of every tick of observation ``b``, ``out[t, j] = sum_k spikes_in[t - delay, b, k] * weights[j, k]``.

    Summed in any order (vectorised), which only integer weights and 0/1 spikes whose sums
    stay below 2^24 in magnitude allow (the chip's: at most ``MAX_POPULATION_NEURONS * 127``):
    every partial sum is then an exact float32 integer, so the order cannot change the
    result. For narrow populations (the chip's output) it is faster than
    :func:`add_arrivals`, whose row loop per spike is short. Ticks before ``delay`` get zero.

    :param weights: weights ``(n_out, n_in)``, float32 C-contiguous
    :param out: output ``(T, n_out)`` float32
    """
    for t in range(out.shape[0]):
        for j in range(out.shape[1]):
            total = np.float32(0.0)
            if t >= delay:
                for k in range(weights.shape[1]):
                    total += spikes_in[t - delay, b, k] * weights[j, k]
            out[t, j] = total


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def layer_ticks(
    spikes_in: np.ndarray,
    weight_t: np.ndarray,
    dense: bool,
    offset: np.ndarray,
    decay: np.ndarray,
    threshold: np.ndarray,
    gain: np.ndarray,
    subtract: bool,
    v_reset: np.float32,
    chip_order: bool,
    delay: int,
    levels: np.ndarray,
    pre: np.ndarray,
    spikes: np.ndarray,
    kept: np.ndarray,
    counting: bool,
    arrived: np.ndarray,
) -> None:
    """One population of either executor over all ticks: delayed arrivals, gain, LIF neurons, state levels.

    The loop nest that the float layer (:func:`spiking_layer_into`) and the chip emulator
    (:func:`spiking_dqn.semantics.chip_kernels.chip_forward`) share. Per observation and
    tick: the current is the sum of the weight rows of the inputs that fired ``delay``
    ticks before (:func:`add_arrivals`; exact for the chip's integer weights, which
    narrow populations may sum with :func:`dense_integer_currents`) times the tick's
    ``gain``, then :func:`~spiking_dqn.semantics.lif.lif_tick` per neuron, then the kept
    membrane's :func:`~spiking_dqn.semantics.lif.nearest_level` where there are levels.
    Inlined into each caller, so that ``chip_order`` and ``counting`` are constants there.
    The outputs ``pre`` and ``kept`` are written only when not empty.

    :param spikes_in: input spike trains, float32 ``(T, batch, n_in)``
    :param weight_t: transposed weights, float32 C-contiguous ``(n_in, n_out)``; with
        ``dense``, the weights ``(n_out, n_in)`` themselves
    :param dense: sum every tick's currents beforehand with :func:`dense_integer_currents`
        (integer weights only), then run each neuron through the ticks (narrow populations)
    :param offset: constant input (bias, the chip's ``i_offset``), decay and threshold per
        neuron, float32 ``(n_out,)`` each
    :param gain: factor on the current arriving at each tick, float32 ``(T,)`` (ones: none)
    :param subtract: reset by subtraction (else to ``v_reset``)
    :param chip_order: the order of :func:`~spiking_dqn.semantics.lif.lif_tick`'s sum
    :param delay: ticks from emission to arrival
    :param levels: membrane state levels, or :data:`~spiking_dqn.semantics.lif.NO_LEVELS`
    :param pre: output for the pre-reset membranes, float32 ``(T, batch, n_out)``
    :param spikes: output 0/1 spikes, float32 ``(T, batch, n_out)``
    :param kept: output for the kept membranes (after reset and levels), float32 ``(T, batch, n_out)``
    :param counting: write into ``arrived`` each neuron's spikes emitted before tick
        ``T - delay`` (those that arrive within the ticks), float32 ``(batch, n_out)``
    """
    ticks, batch, n_in = spikes_in.shape
    n_out = spikes.shape[2]
    quantized = levels.shape[0] > 0
    keep_pre, keep_kept = pre.shape[0] > 0, kept.shape[0] > 0
    acc = np.empty(n_out, dtype=np.float32)
    v = np.empty(n_out, dtype=np.float32)
    count = np.empty(n_out, dtype=np.float32)
    currents = np.empty((ticks if dense else 0, n_out), dtype=np.float32)
    fired_inputs = np.empty(n_in, dtype=np.int64)
    one, zero = np.float32(1.0), np.float32(0.0)
    for b in range(batch):
        if dense:  # a narrow population: each neuron through the ticks, on currents summed beforehand
            dense_integer_currents(spikes_in, b, delay, weight_t, currents)
            for j in range(n_out):
                vj, cj = zero, zero
                for t in range(ticks):
                    m, fired, vj = lif_tick(
                        vj, decay[j], offset[j], currents[t, j] * gain[t], threshold[j], subtract, v_reset, chip_order
                    )
                    if quantized:
                        vj = nearest_level(levels, vj)
                    if keep_pre:
                        pre[t, b, j] = m
                    spikes[t, b, j] = one if fired else zero
                    if keep_kept:
                        kept[t, b, j] = vj
                    if counting and fired and t < ticks - delay:
                        cj += one
                if counting:
                    arrived[b, j] = cj
            continue
        for j in range(n_out):
            v[j] = zero
            count[j] = zero
        for t in range(ticks):
            for j in range(n_out):
                acc[j] = zero
            if t >= delay:
                add_arrivals(spikes_in, t - delay, b, weight_t, fired_inputs, acc)
            g = gain[t]
            for j in range(n_out):
                m, fired, v[j] = lif_tick(
                    v[j], decay[j], offset[j], acc[j] * g, threshold[j], subtract, v_reset, chip_order
                )
                if keep_pre:
                    pre[t, b, j] = m
                spike = one if fired else zero
                spikes[t, b, j] = spike
                if counting:
                    count[j] += spike
            if quantized:
                for j in range(n_out):
                    v[j] = nearest_level(levels, v[j])
            if keep_kept:
                for j in range(n_out):
                    kept[t, b, j] = v[j]
        if counting:  # all the spikes, less those of the last delay ticks
            for t in range(max(ticks - delay, 0), ticks):
                for j in range(n_out):
                    count[j] -= spikes[t, b, j]
            for j in range(n_out):
                arrived[b, j] = count[j]


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
    n_out = weight_t.shape[1]
    layer_ticks(
        spikes_in,
        weight_t,
        False,
        bias,
        np.full(n_out, beta, dtype=np.float32),
        np.full(n_out, threshold, dtype=np.float32),
        np.ones(spikes_in.shape[0], dtype=np.float32),
        subtract,
        np.float32(0.0),
        False,
        delay,
        levels,
        pre if keep_pre else pre[:0],
        spikes,
        pre[:0],
        False,
        np.empty((0, 0), dtype=np.float32),
    )


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
