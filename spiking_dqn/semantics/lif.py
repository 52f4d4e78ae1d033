"""The LIF neuron's compiled tick loop (numba): forward, exact backward, and the membrane state levels.

Per tick ``m = alpha * v + offset + I``; spike if ``m > threshold``; reset (subtract the
threshold, or to ``v_reset``); with state levels (SQUAT) the kept membrane becomes its
:func:`nearest_level`. The forward follows ``ChipLeaky`` (snnTorch ``Leaky`` with the chip's
same-tick reset) and the chip emulator's semantics; the backward is BPTT with snnTorch's
surrogate derivatives in closed form. The whole-network kernels built on these are in
:mod:`spiking_dqn.semantics.network_kernels`, the encoder's in
:mod:`spiking_dqn.semantics.encoding`.

All kernels are single-threaded and keep float32 arithmetic, without fast-math
reassociation. They use numba's ``error_model="numpy"`` (no ZeroDivisionError checks, which
would stop the loops from vectorising; no divisor here can be zero). Compiled code is cached
on disk after the first call.
"""

from __future__ import annotations

from typing import Literal

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


#: After a spike the membrane loses the threshold (``"subtract"``) or goes to ``v_reset`` (``"zero"``).
ResetMode = Literal["subtract", "zero"]
RESET_MODES: tuple[str, ...] = ("subtract", "zero")

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


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def lif_tick(
    v: np.float32,
    decay: np.float32,
    offset: np.float32,
    current: np.float32,
    threshold: np.float32,
    subtract: bool,
    v_reset: np.float32,
    chip_order: bool,
) -> tuple[np.float32, bool, np.float32]:
    """One tick of one LIF neuron, the one home of the update: integrate, fire, reset.

    ``m = decay * v + offset + current`` (``chip_order``: the chip's order, the constant
    input first, as ``lif_no_delay`` and the emulator add them) or
    ``m = decay * v + (current + offset)`` (the float layer's: the bias is part of the
    ``nn.Linear`` current); spike if ``m > threshold``; the kept membrane is ``m - threshold``
    after a spike (``subtract``) or ``v_reset``, else ``m``. Selects, no branches, so that the
    loops over neurons calling it vectorise; the state levels are the caller's
    (:func:`nearest_level` after the tick).

    :return: the pre-reset membrane ``m``, whether it fired, and the kept membrane
    """
    if chip_order:
        m = decay * v + offset + current
    else:
        m = decay * v + (current + offset)
    fired = m > threshold
    if subtract:
        kept = m - threshold if fired else m
    else:
        kept = v_reset if fired else m
    return m, fired, kept


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
                m, fired, v[b, j] = lif_tick(
                    v[b, j], alpha[j], offset[j], current[t, b, j], threshold[j], subtract, v_reset, True
                )
                if keep_pre:
                    pre[t, b, j] = m
                spikes[t, b, j] = one if fired else zero
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
