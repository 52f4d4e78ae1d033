"""The input encoder's compiled kernel (numba): signed two-neuron deterministic spike trains.

Kept in float64 for the floor, as in the numpy reference; single-threaded, no fast-math,
cached on disk after the first call.
"""

from __future__ import annotations

import numba
import numpy as np

FLOOR_EPS = 1e-9  # as in spiking_dqn.encoding


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
                count = np.floor((t + 1) * r + FLOOR_EPS)
                if count > previous:
                    out[t, b, j] = np.float32(count - previous)
                previous = count
    return out, finite
