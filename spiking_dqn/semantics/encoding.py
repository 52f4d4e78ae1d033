"""The input encoding rules: observation checks, the signed two-neuron code and its spike trains.

Signed two-neuron code: an observation ``obs`` of dimension ``d`` is normalised to
``x = clip(obs / bound, -1, 1)`` and split into ``2d`` non-negative rates
``r = concat(max(x, 0), max(-x, 0))``. Each rate drives one input neuron for ``ticks``
ticks: ``"deterministic"``, the neuron adds its rate to an accumulator every tick and
spikes when the accumulator reaches 1, then subtracts 1, so after ``t + 1`` ticks it has
emitted exactly ``floor((t + 1) * r)`` spikes (computed so, in float64); ``"poisson"``, an
independent Bernoulli(r) draw per neuron and tick, from a seeded generator; ``"hybrid"``,
the deterministic code with each neuron's threshold lowered to ``1 - alpha * r``
(:func:`hybrid_rate`).

The chip backends encode with :func:`encode_batch`; the float network's torch encoder
(:mod:`spiking_dqn.encoding`) takes its checks and constants from here. The compiled
encoder kernel is single-threaded, float64 for the floor (as the numpy reference), without
fast-math, and cached on disk after the first call.
"""

from __future__ import annotations

from typing import Any, Literal

import numba
import numpy as np

#: Input spike generation: accumulator trains, seeded Bernoulli draws, or hybrid coding.
EncodingMode = Literal["deterministic", "poisson", "hybrid"]
ENCODING_MODES: tuple[str, ...] = ("deterministic", "poisson", "hybrid")
#: Guards the floor of the deterministic trains against float64 representation error of
#: values such as ``0.7 * 10``.
FLOOR_EPS = 1e-9


def check_observations(obs: np.ndarray, obs_dim: int, finite: np.ndarray | None = None) -> None:
    """Raise a clear error for a batch of observations the encoder cannot take.

    :param obs: observations, shape ``(batch, obs_dim)`` (a numpy array, or a torch tensor
        together with its ``finite`` mask)
    :param obs_dim: the expected observation dimension
    :param finite: elementwise finiteness of ``obs`` when the caller computed it (the torch
        encoder passes ``th.isfinite(obs)``, computed on the tensor's device);
        ``np.isfinite(obs)`` when None
    :raises ValueError: wrong shape, or a NaN / infinite entry (the dimension is named)
    """
    if obs.ndim != 2 or obs.shape[1] != obs_dim:
        raise ValueError(f"expected observations of shape (batch, {obs_dim}), got {tuple(obs.shape)}")
    if finite is None:
        finite = np.isfinite(obs)
    if not bool(finite.all()):
        dims = (~finite).any(0).nonzero()
        dims = [int(i) for i in (dims[0] if isinstance(dims, tuple) else dims.flatten())]
        raise ValueError(
            f"observation contains NaN or infinite values in dimension(s) {dims}; "
            "the spike encoder needs finite observations"
        )


def as_observation_batch(obs: Any, obs_dim: int) -> np.ndarray:
    """Observations as a validated ``(batch, d)`` array; a single ``(d,)`` one becomes ``(1, d)``.

    :param obs: an array-like of numbers, or a torch tensor (moved to the CPU)
    :param obs_dim: the expected observation dimension ``d``
    :raises ValueError: wrong width or shape, non-numeric, NaN or infinite entries
    """
    if hasattr(obs, "detach"):  # a torch tensor
        obs = obs.detach().cpu().numpy()
    obs = np.asarray(obs)
    if obs.dtype == object or not (np.issubdtype(obs.dtype, np.number) or obs.dtype == np.bool_):
        raise ValueError(f"observations must be numeric, got dtype {obs.dtype}")
    if obs.ndim == 1:
        obs = obs.reshape(1, -1)
    check_observations(obs, obs_dim)
    return obs


def signed_rates_numpy(obs: np.ndarray, bound: np.ndarray) -> np.ndarray:
    """Signed two-neuron rates of a batch of observations (numpy reference).

    :param obs: observations, shape ``(batch, d)``
    :param bound: positive per-dimension bounds, shape ``(d,)``
    :return: rates in [0, 1], shape ``(batch, 2d)``, float64
    """
    x = np.clip(np.asarray(obs, dtype=np.float64) / np.asarray(bound, dtype=np.float64), -1.0, 1.0)
    return np.concatenate([np.maximum(x, 0.0), np.maximum(-x, 0.0)], axis=1)


def deterministic_spikes_numpy(rates: np.ndarray, ticks: int) -> np.ndarray:
    """Deterministic accumulator spike trains (numpy reference).

    :param rates: rates in [0, 1], shape ``(batch, n)``
    :param ticks: number of ticks ``T``
    :return: spikes, shape ``(T, batch, n)``, float32 of 0/1
    """
    t = np.arange(ticks + 1, dtype=np.float64)[:, None, None]
    counts = np.floor(t * rates[None] + FLOOR_EPS)
    return np.diff(counts, axis=0).astype(np.float32)


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def hybrid_rate(rate: float, alpha: float) -> float:
    """The accumulator rate of hybrid coding (NeuEdge): thresholds lowered with the input.

    Input neuron ``i`` adds its rate ``r_i`` to an accumulator every tick and spikes when
    the accumulator reaches its own threshold ``theta_i = 1 - alpha * r_i`` (then subtracts
    it), at most once per tick: large inputs fire earlier and more often than under the
    plain code (``alpha = 0``), small ones barely change (``theta`` near 1) and the smallest
    still fire late or not at all. That is the deterministic code at the rate
    ``min(1, r / (1 - alpha * r))``, computed in float64.

    :param rate: a rate in [0, 1]
    :param alpha: threshold slope, in [0, 1)
    """
    return min(rate / (1.0 - alpha * rate), 1.0)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _hybrid_rates(rates: np.ndarray, alpha: float) -> np.ndarray:
    out = np.empty_like(rates)
    for i in range(rates.size):
        out[i] = hybrid_rate(rates[i], alpha)
    return out


def hybrid_rates(rates: Any, alpha: float) -> np.ndarray:
    """:func:`hybrid_rate` of every entry of an array of rates, float64 (any shape).

    :param rates: rates in [0, 1]
    :param alpha: threshold slope, in [0, 1)
    """
    rates = np.asarray(rates, dtype=np.float64)
    return _hybrid_rates(np.ascontiguousarray(rates).reshape(-1), float(alpha)).reshape(rates.shape)


def encode_batch(
    obs: np.ndarray, bound: np.ndarray, ticks: int, encoding: str, alpha: float, seed: int | None
) -> np.ndarray:
    """Input spike trains of a validated batch, ``(ticks, batch, 2d)`` float32 of 0/1.

    ``"poisson"`` draws from ``np.random.default_rng(seed)``, fresh for every call, so the
    same arguments give the same trains. ``"hybrid"`` is the deterministic code at
    :func:`hybrid_rate`.

    :param obs: observations ``(batch, d)``, validated (see :func:`as_observation_batch`)
    :param bound: positive bounds ``(d,)``
    :param ticks: number of ticks
    :param encoding: one of :data:`ENCODING_MODES`
    :param alpha: hybrid coding's threshold slope (0 unless ``"hybrid"``)
    :param seed: seed of the Poisson draws
    """
    if encoding in ("deterministic", "hybrid"):
        # Validated: finite.
        return encode_deterministic(obs, bound, ticks, alpha)[0]
    rates = signed_rates_numpy(obs, bound)
    rng = np.random.default_rng(seed)
    return (rng.random((ticks, *rates.shape)) < rates[None]).astype(np.float32)


def encode_deterministic(
    obs: np.ndarray, bound: np.ndarray, ticks: int, alpha: float = 0.0
) -> tuple[np.ndarray, bool]:
    """Signed two-neuron deterministic spike trains of a batch, in one compiled pass.

    :param obs: observations ``(batch, d)``, float32 or float64 (computed in float64)
    :param bound: positive bounds ``(d,)``, float32 or float64
    :param ticks: number of ticks
    :param alpha: hybrid coding's threshold slope (0: plain rate code): each neuron's
        threshold is ``1 - alpha * r``, i.e. its accumulator fires at :func:`hybrid_rate`
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
                r = hybrid_rate(r, alpha)
            previous = 0.0
            for t in range(ticks):
                count = np.floor((t + 1) * r + FLOOR_EPS)
                if count > previous:
                    out[t, b, j] = np.float32(count - previous)
                previous = count
    return out, finite
