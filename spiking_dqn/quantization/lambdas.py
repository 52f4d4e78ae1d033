"""Choosing the lambdas of a network's grid: given, ``"auto"``, ``"mse"``, or the network's own."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch as th

from spiking_dqn.grid import Grid, center
from spiking_dqn.layers import delay_spikes
from spiking_dqn.network import SpikingQNetwork
from spiking_dqn.semantics.weights import check_lambda
from spiking_dqn.semantics.widths import DEFAULT_WEIGHT_BITS, check_weight_bits, weight_limit

#: Threshold of the output population: high enough that it never spikes, so it integrates.
OUTPUT_THRESHOLD = 5000.0
#: Percentile of |w| mapped to the largest weight ``L`` of its width by ``lam="auto"`` (127 at 8 bits).
AUTO_PERCENTILE = 99.9
#: ``"auto"`` keeps the readout's peak voltage below this fraction of its threshold.
AUTO_OUTPUT_HEADROOM = 0.8
#: Observations drawn uniformly inside the encoder bounds to estimate that peak.
AUTO_OUTPUT_SAMPLES = 2048

#: Candidate lambdas ``"mse"`` tries per projection: ``L / (c * max|w|)`` for this many ``c`` in [0.02, 1].
MSE_CANDIDATES = 256
#: The rules a lambda specification may name.
LAMBDA_RULES = ("auto", "mse")

#: A lambda specification: ``None`` (the network's own grid, else ``"auto"``), ``"auto"``,
#: ``"mse"``, one positive number for every projection, or one per projection.
LambdaSpec = float | Sequence[float] | str | None
#: Weight widths: ``None`` (the network's own grid's, else 8), one width for every projection, or one per projection.
WeightBitsSpec = int | Sequence[int] | None


def auto_lambda(w: np.ndarray, limit: int) -> float:
    """The ``"auto"`` lambda of one projection: ``limit / q``, ``q`` the ``AUTO_PERCENTILE`` of ``|w|``.

    The one place of that rule (see :func:`resolve_lambdas`).

    :param w: the projection's float weights (as deployed)
    :param limit: the largest chip weight of its width, ``2^(bits-1) - 1``
    """
    magnitudes = np.abs(np.asarray(w, dtype=np.float64)).ravel()
    if magnitudes.size == 0:
        return 1.0
    q = float(np.percentile(magnitudes, AUTO_PERCENTILE))
    if q <= 0:  # mostly zeros: fall back to the largest weight
        q = float(magnitudes.max())
    return float(limit) / q if q > 0 else 1.0


def mse_lambda(w: np.ndarray, limit: int) -> float:
    """The ``"mse"`` lambda of one projection: the one whose grid reconstructs ``w`` with the least squared error.

    Among ``MSE_CANDIDATES`` lambdas ``L / (c * max|w|)``, ``c`` log-spaced in [0.02, 1], and
    the ``"auto"`` lambda (so its error is never larger than ``"auto"``'s), the one that
    minimises ``sum((w - clip(rint(lambda * w), -L, L) / lambda)^2)``. At 8 bits it lands
    near ``"auto"``; at low widths it trades clipping the largest weights for keeping the
    small ones off zero (ternary: weights above about 0.6 of the mean |w| become +-1, close
    to the ternary-weight-network rule), where ``"auto"`` zeroes all but the largest.

    :param w: the projection's float weights (as deployed)
    :param limit: the largest chip weight of its width, ``2^(bits-1) - 1``
    """
    flat = np.asarray(w, dtype=np.float64).ravel()
    peak = float(np.abs(flat).max()) if flat.size else 0.0
    if peak == 0.0:
        return 1.0
    candidates = np.append(limit / (peak * np.geomspace(0.02, 1.0, MSE_CANDIDATES)), auto_lambda(flat, limit))
    scaled = candidates[:, None] * flat[None, :]
    error = ((np.clip(np.rint(scaled), -limit, limit) - scaled) ** 2 / candidates[:, None] ** 2).sum(axis=1)
    return float(candidates[int(np.argmin(error))])


def resolve_lambdas(
    lam: float | Sequence[float] | str,
    weights: Sequence[np.ndarray],
    weight_bits: int | Sequence[int] = DEFAULT_WEIGHT_BITS,
) -> list[float]:
    """One lambda per projection from a lambda specification and the weights alone.

    :param lam: a positive float (the same lambda for every projection, as in Arfa et
        al. 2025: 3 for CartPole, 32 for Acrobot), a list with one positive float per
        projection, ``"auto"`` or ``"mse"``. The ``"auto"`` rule, per projection (:func:`auto_lambda`):
        ``lambda = L / q``, ``L = 2^(bits-1) - 1`` the largest weight of the projection's
        width (127 at 8 bits, 7 at 4, 1 ternary), where ``q`` is the ``AUTO_PERCENTILE`` (99.9th)
        percentile of ``|w|`` over that projection's weights (``np.percentile``, linear
        interpolation), so that at most about 0.1% of its weights clip (in a layer of
        fewer than 1000 weights, at most its largest one) while the rest use the whole
        range, which keeps small weights from collapsing to zero. (If that percentile is
        0, the largest ``|w|`` is used; an all-zero layer gets lambda 1.) ``"mse"``: per
        projection the lambda of least squared reconstruction error (:func:`mse_lambda`),
        the better rule below 8 bits, where ``"auto"`` zeroes most weights
    :param weights: float weights of the projections, in order
    :param weight_bits: bits per weight (one for every projection or one per projection);
        only the rules (``"auto"``, ``"mse"``) depend on it
    :return: the lambdas, one per projection
    :raises ValueError: non-positive, NaN or infinite lambda, a list of the wrong length,
        an unknown string, bad widths
    """
    n = len(weights)
    bits = check_weight_bits(weight_bits, n)
    if isinstance(lam, str):
        if lam not in LAMBDA_RULES:
            raise ValueError(f"unknown lambda {lam!r}: use a positive number, a list of them, 'auto' or 'mse'")
        rule = auto_lambda if lam == "auto" else mse_lambda
        return [rule(w, weight_limit(b)) for w, b in zip(weights, bits)]
    if isinstance(lam, (Sequence, np.ndarray)):
        values = list(np.asarray(lam).ravel()) if isinstance(lam, np.ndarray) else list(lam)
        if len(values) != n:
            raise ValueError(f"got {len(values)} lambdas for {n} projections; give one per projection")
        return [
            check_lambda(v.item() if isinstance(v, np.generic) else v, f"lambda[{k}]") for k, v in enumerate(values)
        ]
    return [check_lambda(lam.item() if isinstance(lam, np.generic) else lam, "lambda")] * n


def center_readout(net: SpikingQNetwork) -> SpikingQNetwork:
    """A copy of the network whose readout computes ``Q - mean over actions of Q`` (see :func:`center`).

    :param net: the float network (left untouched)
    :raises ValueError: the network has a single action
    """
    if net.n_actions < 2:
        raise ValueError("centering the readout needs at least two actions")
    centered = copy.deepcopy(net)
    with th.no_grad():
        centered.readout.weight.copy_(center(centered.readout.weight))
        if centered.readout.bias is not None:
            centered.readout.bias.copy_(center(centered.readout.bias))
    return centered


def readout_peak(net: SpikingQNetwork, observations: np.ndarray | None = None, seed: int = 0) -> float:
    """Largest readout membrane (float units) reached at any tick on a set of observations.

    :param net: the float network
    :param observations: ``(n, d)`` observations; by default ``AUTO_OUTPUT_SAMPLES`` drawn
        uniformly inside the encoder bounds (seeded)
    :param seed: seed of the default draw
    """
    bound = net.encoder.bound.detach().cpu().numpy()
    if observations is None:
        rng = np.random.default_rng(seed)
        observations = rng.uniform(-bound, bound, size=(AUTO_OUTPUT_SAMPLES, bound.size)).astype(np.float32)
    device = net.readout.weight.device
    with th.no_grad():
        obs = th.as_tensor(observations, dtype=th.float32, device=device)
        _, trains = net.forward_spikes(net.encoder(obs), return_activity=True)
        arriving = delay_spikes(trains[-1], net.synaptic_delay)
        trajectory = th.cumsum(net.readout(arriving), dim=0)  # readout membrane after every tick
    return float(trajectory.max().clamp(min=0.0))


def float_weights(net: SpikingQNetwork) -> list[np.ndarray]:
    """The float32 weights of every projection of a network, as numpy arrays, in order."""
    return [layer.weight.detach().cpu().numpy().astype(np.float32) for layer in net.linear_layers()]


def resolve_grid(
    net: SpikingQNetwork,
    lam: LambdaSpec | Grid = None,
    centered: bool = True,
    observations: np.ndarray | None = None,
    weight_bits: WeightBitsSpec = None,
) -> Grid:
    """The grid a lambda specification (and weight widths) give a network.

    ``lam=None`` gives the network's own grid (``net.grid``, recorded when its weights were
    snapped to a grid after quantization-aware training and saved with the model), so that
    the chip program computes exactly the network that was trained; a network without one,
    or whose grid has other widths than ``weight_bits`` asks for, gets ``"auto"``. For
    ``"auto"`` and ``"mse"`` the lambdas of :func:`resolve_lambdas` (at the grid's widths) are taken on the
    weights as deployed (the readout centred with ``centered``), and the readout's lambda
    is capped so that its peak voltage on the chip, ``lambda * readout_peak``, stays below
    ``AUTO_OUTPUT_HEADROOM`` x the output threshold: an integrator that reaches the
    threshold resets and its voltage stops being the Q-value.

    :param net: the float network
    :param lam: lambda specification (see :data:`LambdaSpec`), or a :class:`Grid`, returned
        as it is (checked to have one lambda per projection)
    :param centered: quantize the readout centred over the actions (ignored when ``lam`` is
        a grid, or ``None`` and the network has a grid: that grid says)
    :param observations: observations for the readout peak of ``"auto"`` and ``"mse"`` (see :func:`readout_peak`)
    :param weight_bits: bits per weight, 2..8, one for every projection or one per
        projection; ``None``: the network's own grid's widths with ``lam=None``, else 8;
        with a given grid only its own widths are accepted
    :raises ValueError: bad lambdas or widths (see :func:`resolve_lambdas`), widths that
        contradict a given grid's
    """
    n = len(net.linear_layers())
    if isinstance(lam, Grid):
        lam.check_fits(n)
        lam.check_weight_bits(weight_bits)
        return lam
    bits = None if weight_bits is None else tuple(check_weight_bits(weight_bits, n))
    if lam is None:
        if net.grid is not None and (bits is None or bits == net.grid.weight_bits):
            net.grid.check_fits(n)
            return net.grid
        lam = "auto"
    bits = bits if bits is not None else tuple(check_weight_bits(DEFAULT_WEIGHT_BITS, n))
    deployed = center_readout(net) if centered and net.n_actions > 1 else net
    lambdas = resolve_lambdas(lam, float_weights(deployed), bits)
    if isinstance(lam, str):
        peak = readout_peak(deployed, observations)
        if peak > 0:
            lambdas[-1] = min(lambdas[-1], AUTO_OUTPUT_HEADROOM * OUTPUT_THRESHOLD / peak)
    return Grid(tuple(lambdas), centered_readout=centered, weight_bits=bits)
