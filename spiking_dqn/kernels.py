"""Compiled CPU kernels (numba) for the encoder, the LIF layers and the whole spiking network.

A layer runs for all ticks at once (see :mod:`spiking_dqn.layers`), event-driven: spikes
are 0/1 and most are 0, so the synaptic current of a tick is the sum of the weight rows of
the inputs that fired (added in input order, the order of a dense product over the
inputs), and the neuron update loops over the ticks. Written as numpy or torch ops, that
loop costs one dispatch per op and tick, which dominates training on small batches. These
kernels do a layer (:func:`spiking_layer_into`), the whole network
(:func:`network_forward`) and their exact backward (:func:`spiking_layer_backward`,
:func:`readout_backward`) in one compiled call each, and the chip emulator's tick loop
(:func:`lif_forward`). They follow ``ChipLeaky`` (snnTorch ``Leaky`` with the chip's
same-tick reset) and the chip emulator's semantics; the torch versions in
:mod:`spiking_dqn.layers` remain for tensors on an accelerator, and tests check that the
kernels, the torch loop and snnTorch's autograd agree.

All kernels are single-threaded and keep float32 arithmetic (float64 for the encoder's
floor, as in the numpy reference), without fast-math reassociation. They use numba's
``error_model="numpy"`` (no ZeroDivisionError checks, which would stop the loops from
vectorising; no divisor here can be zero). Compiled code is cached on disk after the
first call.
"""

from __future__ import annotations

import numba
import numpy as np

# Closed-form surrogate derivatives, exactly as snnTorch 1.0's ``backward`` of each
# surrogate (``x`` = membrane - threshold, ``p`` its parameter):
#   atan:             p / 2 / (1 + (pi / 2 * p * x) ** 2)      (alpha, default 2)
#   fast_sigmoid:     1 / (p * |x| + 1) ** 2                    (slope, default 25)
#   triangular:       p if x < 0 else -p                        (threshold, default 1)
#   straight_through: 1
# ``SURROGATE_NONE`` means the caller passes the direct term already multiplied by the
# surrogate derivative (for a custom surrogate, evaluated by autograd).
SURROGATE_NONE, SURROGATE_ATAN, SURROGATE_FAST_SIGMOID, SURROGATE_TRIANGULAR, SURROGATE_STRAIGHT = range(5)
SURROGATE_CODES: dict[str, int] = {
    "atan": SURROGATE_ATAN,
    "fast_sigmoid": SURROGATE_FAST_SIGMOID,
    "triangular": SURROGATE_TRIANGULAR,
    "straight_through": SURROGATE_STRAIGHT,
}
SURROGATE_DEFAULTS: dict[str, float] = {"atan": 2.0, "fast_sigmoid": 25.0, "triangular": 1.0, "straight_through": 0.0}

_FLOOR_EPS = 1e-9  # as in spiking_dqn.encoding


NO_LEVELS = np.empty(0, dtype=np.float32)
"""The ``levels`` argument of a population whose membrane is not quantized (float32 state)."""


#: From this many levels :func:`nearest_level` starts from an interpolated guess instead of bisecting.
INTERPOLATE_FROM = 64


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def nearest_level(levels: np.ndarray, value: np.float32) -> np.float32:
    """The entry of the sorted float32 ``levels`` nearest to ``value``, ties to the lower one.

    The membrane state quantizer (``ChipProgram.state_levels``, SQUAT): the first level
    ``>= value``, then the nearer of it and the level below, compared as
    ``value - lower <= upper - value`` in float32; values outside the levels (and NaN) go to
    the end levels. The first level ``>= value`` is found from a guess by linear
    interpolation between the end levels, widened by doubling steps until it brackets the
    value, then bisected (from ``INTERPOLATE_FROM`` levels up; below, plain bisection): on
    uniform levels the guess is right at once, and it never takes more than about twice a
    plain bisection's probes, which over 2^16 levels per neuron and tick made SQUAT's
    training forward tens of times slower than without levels.

    :param levels: sorted, strictly increasing float32 levels (at least one)
    :param value: the membrane after the tick's update and reset
    """
    n = levels.shape[0]
    first, last = levels[0], levels[n - 1]
    if not value > first:  # at or below the lowest level, or NaN
        return first
    if value > last:
        return last
    # Here first < value <= last (so n >= 2): find the first index lo with levels[lo] >= value.
    if n < INTERPOLATE_FROM:  # a few probes in a small table: plain bisection
        a, b = 0, n - 1
    else:
        a, b = _bracket(levels, value, first, last)
    lo, hi = a + 1, b  # levels[a] < value <= levels[b]
    while lo < hi:
        mid = (lo + hi) // 2
        if levels[mid] < value:
            lo = mid + 1
        else:
            hi = mid
    below, above = levels[lo - 1], levels[lo]
    return below if value - below <= above - value else above


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _bracket(levels: np.ndarray, value: np.float32, first: np.float32, last: np.float32) -> tuple[int, int]:
    """Indices ``a < b`` with ``levels[a] < value <= levels[b]``, from an interpolated guess widened by doubling steps."""
    n = levels.shape[0]
    guess = int((value - first) / (last - first) * np.float32(n - 1))
    guess = min(max(guess, 1), n - 1)
    step = 1
    if levels[guess] >= value:
        b = guess
        a = b - step
        while a > 0 and levels[a] >= value:
            b = a
            step *= 2
            a = b - step
        a = max(a, 0)
    else:
        a = guess
        b = a + step
        while b < n - 1 and levels[b] < value:
            a = b
            step *= 2
            b = a + step
        b = min(b, n - 1)
    return a, b


@numba.njit(cache=True, nogil=True, error_model="numpy")
def lif_forward(
    current: np.ndarray,
    alpha: np.ndarray,
    offset: np.ndarray,
    threshold: np.ndarray,
    subtract: bool,
    v_reset: np.float32,
    keep_pre: bool,
    levels: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LIF layer over all ticks: per tick ``v = alpha * v + offset + I_t``; spike if ``v > threshold``; reset.

    :param current: synaptic current ``I``, float32 ``(T, batch, n)``
    :param alpha: membrane decay per neuron, float32 ``(n,)``
    :param offset: constant input per neuron (the chip's ``i_offset``), float32 ``(n,)``
    :param threshold: threshold per neuron, float32 ``(n,)``
    :param subtract: reset by subtracting the threshold (else to ``v_reset``)
    :param v_reset: value after a spike when not subtracting
    :param keep_pre: return the pre-reset membranes (else an empty array in their place)
    :param levels: membrane state levels (``ChipProgram.state_levels``): after the reset the
        kept membrane becomes its :func:`nearest_level`; :data:`NO_LEVELS` keeps float32 state
    :return: pre-reset membranes and 0/1 spikes (both float32 ``(T, batch, n)``) and the
        membrane after the last tick (float32 ``(batch, n)``)
    """
    ticks, batch, n = current.shape
    quantized = levels.shape[0] > 0
    pre = np.empty_like(current) if keep_pre else np.empty((0, 0, 0), dtype=current.dtype)
    spikes = np.empty_like(current)
    v = np.zeros((batch, n), dtype=np.float32)
    one, zero = np.float32(1.0), np.float32(0.0)
    for t in range(ticks):
        for b in range(batch):
            # Branch-free body over the neurons (selects), so that it vectorises.
            for j in range(n):
                m = alpha[j] * v[b, j] + offset[j] + current[t, b, j]
                if keep_pre:
                    pre[t, b, j] = m
                fired = m > threshold[j]
                spikes[t, b, j] = one if fired else zero
                if subtract:
                    v[b, j] = m - threshold[j] if fired else m
                else:
                    v[b, j] = v_reset if fired else m
            if quantized:
                for j in range(n):
                    v[b, j] = nearest_level(levels, v[b, j])
    return pre, spikes, v


@numba.njit(cache=True, nogil=True, error_model="numpy")
def nearest_levels(levels: np.ndarray, values: np.ndarray) -> np.ndarray:
    """:func:`nearest_level` of every entry of a float32 array (any shape), as a new array.

    :param levels: sorted, strictly increasing float32 levels
    :param values: float32 values
    """
    out = np.empty_like(values)
    flat, flat_out = values.reshape(-1), out.reshape(-1)
    for i in range(flat.size):
        flat_out[i] = nearest_level(levels, flat[i])
    return out


@numba.njit(cache=True, nogil=True, error_model="numpy")
def lif_backward(
    grad_spikes: np.ndarray,
    pre: np.ndarray,
    spikes: np.ndarray,
    beta: np.float32,
    threshold: np.float32,
    subtract: bool,
    surrogate: int,
    param: float,
    out: np.ndarray,
) -> None:
    """Gradient of the loss with respect to the current of :func:`lif_forward` (BPTT).

    With ``d_t = dL/ds_t * surrogate'(m_t - threshold)``:
    ``dL/dm_t = d_t + beta * k_t * dL/dm_{t+1}``, ``k_t = 1`` for reset by subtraction and
    ``1 - s_t`` for reset to zero (the reset is detached, as in snnTorch), and
    ``dL/dI_t = dL/dm_t``.

    :param grad_spikes: ``dL/ds``, float32 ``(T, batch, n)``; with ``SURROGATE_NONE``, the
        direct terms ``d_t`` themselves
    :param pre: pre-reset membranes from :func:`lif_forward`
    :param spikes: spikes from :func:`lif_forward`
    :param beta: membrane decay
    :param threshold: threshold (scalar: the float network's layers share one)
    :param subtract: reset by subtraction (else to zero)
    :param surrogate: one of the ``SURROGATE_*`` codes
    :param param: the surrogate's parameter
    :param out: output for ``dL/dI``, float32 ``(T, batch, n)`` (a separate array: aliasing
        ``grad_spikes`` stops the loops from vectorising)
    """
    ticks = grad_spikes.shape[0]
    size = grad_spikes.size // ticks
    g = grad_spikes.reshape(ticks, size)
    m = pre.reshape(ticks, size)
    s = spikes.reshape(ticks, size)
    grad = out.reshape(ticks, size)
    one = np.float32(1.0)
    p = np.float32(param)
    # Direct terms, one branch-free loop per surrogate (so that it vectorises).
    if surrogate == SURROGATE_ATAN:
        scale, half = np.float32(np.pi / 2 * param), np.float32(param / 2)
        for t in range(ticks):
            for i in range(size):
                y = scale * (m[t, i] - threshold)
                grad[t, i] = half / (one + y * y) * g[t, i]
    elif surrogate == SURROGATE_FAST_SIGMOID:
        for t in range(ticks):
            for i in range(size):
                y = p * abs(m[t, i] - threshold) + one
                grad[t, i] = g[t, i] / (y * y)
    elif surrogate == SURROGATE_TRIANGULAR:
        for t in range(ticks):
            for i in range(size):
                gp = g[t, i] * p
                grad[t, i] = gp if m[t, i] - threshold < 0 else -gp
    else:  # straight-through, or direct terms given
        for t in range(ticks):
            for i in range(size):
                grad[t, i] = g[t, i]
    # Reverse scan through the membrane carried from tick to tick.
    for t in range(ticks - 2, -1, -1):
        if subtract:
            for i in range(size):
                grad[t, i] += beta * grad[t + 1, i]
        else:
            for i in range(size):
                grad[t, i] += (beta * (one - s[t, i])) * grad[t + 1, i]


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


def encode_deterministic(
    obs: np.ndarray, bound: np.ndarray, ticks: int, alpha: float = 0.0
) -> tuple[np.ndarray, bool]:
    """Signed two-neuron deterministic spike trains of a batch (see :mod:`spiking_dqn.encoding`).

    :param obs: observations ``(batch, d)``, float32 or float64 (computed in float64)
    :param bound: positive bounds ``(d,)``, float32 or float64
    :param ticks: number of ticks
    :param alpha: hybrid coding's threshold slope (0: plain rate code): each neuron's
        threshold is ``1 - alpha * r``, i.e. its accumulator fires at the rate
        ``min(1, r / (1 - alpha * r))`` (see :func:`spiking_dqn.hardware.backend.hybrid_rates`)
    :return: float32 0/1 spikes ``(T, batch, 2d)``, and whether every observation was
        finite (the spikes of a NaN or infinite entry are meaningless)
    """
    if obs.dtype not in (np.float32, np.float64):
        obs = obs.astype(np.float64)
    if bound.dtype not in (np.float32, np.float64):
        bound = bound.astype(np.float64)
    return _encode_deterministic(np.ascontiguousarray(obs), np.ascontiguousarray(bound), int(ticks), float(alpha))


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _encode_deterministic(obs: np.ndarray, bound: np.ndarray, ticks: int, alpha: float) -> tuple[np.ndarray, bool]:
    """Compiled body of :func:`encode_deterministic`.

    Neuron ``i`` (and ``d + i`` for the negative half) with rate ``r`` has emitted
    ``floor((t + 1) * r)`` spikes after ``t + 1`` ticks, computed in float64.
    """
    batch, d = obs.shape
    out = np.zeros((ticks, batch, 2 * d), dtype=np.float32)
    finite = True
    for b in range(batch):
        for i in range(d):
            value = np.float64(obs[b, i])
            if not np.isfinite(value):
                finite = False
                continue
            x = value / np.float64(bound[i])
            x = min(max(x, -1.0), 1.0)
            j = i if x >= 0 else d + i
            r = abs(x)
            if alpha > 0.0:
                r = min(r / (1.0 - alpha * r), 1.0)
            previous = 0.0
            for t in range(ticks):
                count = np.floor((t + 1) * r + _FLOOR_EPS)
                if count > previous:
                    out[t, b, j] = np.float32(count - previous)
                previous = count
    return out, finite
