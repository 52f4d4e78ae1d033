"""Compiled CPU kernels (numba) for the tick loops of the encoder and the LIF layers.

The network runs layer by layer (see :mod:`spiking_dqn.layers`): a layer's synaptic
currents for all ticks are one matrix product, and only the elementwise neuron update
loops over the ticks. Written as numpy or torch ops, that loop costs one dispatch per op
and tick, which dominates training on small batches. These kernels do the whole loop, and
its exact backward, in one compiled call. They follow ``ChipLeaky`` (snnTorch ``Leaky``
with the chip's same-tick reset) and the chip emulator's semantics; the torch versions in
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


@numba.njit(cache=True, nogil=True, error_model="numpy")
def lif_forward(
    current: np.ndarray,
    alpha: np.ndarray,
    offset: np.ndarray,
    threshold: np.ndarray,
    subtract: bool,
    v_reset: np.float32,
    keep_pre: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LIF layer over all ticks: per tick ``v = alpha * v + offset + I_t``; spike if ``v > threshold``; reset.

    :param current: synaptic current ``I``, float32 ``(T, batch, n)``
    :param alpha: membrane decay per neuron, float32 ``(n,)``
    :param offset: constant input per neuron (the chip's ``i_offset``), float32 ``(n,)``
    :param threshold: threshold per neuron, float32 ``(n,)``
    :param subtract: reset by subtracting the threshold (else to ``v_reset``)
    :param v_reset: value after a spike when not subtracting
    :param keep_pre: return the pre-reset membranes (else an empty array in their place)
    :return: pre-reset membranes and 0/1 spikes (both float32 ``(T, batch, n)``) and the
        membrane after the last tick (float32 ``(batch, n)``)
    """
    ticks, batch, n = current.shape
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
    return pre, spikes, v


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
) -> np.ndarray:
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
    :return: ``dL/dI``, float32 ``(T, batch, n)``
    """
    ticks = grad_spikes.shape[0]
    size = grad_spikes.size // ticks
    g = grad_spikes.reshape(ticks, size)
    m = pre.reshape(ticks, size)
    s = spikes.reshape(ticks, size)
    grad = np.empty((ticks, size), dtype=np.float32)
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
    return grad.reshape(grad_spikes.shape)


def encode_deterministic(obs: np.ndarray, bound: np.ndarray, ticks: int) -> np.ndarray:
    """Signed two-neuron deterministic spike trains of a batch (see :mod:`spiking_dqn.encoding`).

    :param obs: finite observations ``(batch, d)`` (any real dtype; computed in float64)
    :param bound: positive bounds ``(d,)``
    :param ticks: number of ticks
    :return: float32 0/1 spikes ``(T, batch, 2d)``
    """
    return _encode_deterministic(
        np.ascontiguousarray(obs, dtype=np.float64), np.ascontiguousarray(bound, dtype=np.float64), int(ticks)
    )


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _encode_deterministic(obs: np.ndarray, bound: np.ndarray, ticks: int) -> np.ndarray:
    """Compiled body of :func:`encode_deterministic`.

    Neuron ``i`` (and ``d + i`` for the negative half) with rate ``r`` has emitted
    ``floor((t + 1) * r)`` spikes after ``t + 1`` ticks, computed in float64.
    """
    batch, d = obs.shape
    out = np.zeros((ticks, batch, 2 * d), dtype=np.float32)
    for b in range(batch):
        for i in range(d):
            x = obs[b, i] / bound[i]
            x = min(max(x, -1.0), 1.0)
            j = i if x >= 0 else d + i
            r = abs(x)
            previous = 0.0
            for t in range(ticks):
                count = np.floor((t + 1) * r + _FLOOR_EPS)
                if count > previous:
                    out[t, b, j] = np.float32(count - previous)
                previous = count
    return out
