"""Post-training quantization of a spiking Q-network into a chip program.

Every projection ``k`` is scaled by a factor ``lambda_k`` and rounded to int8:
``w_int8 = clip(rint(lambda_k * w), -127, 127)``. Since the membrane of the population it
feeds then lives in units of ``lambda_k``, that population's ``i_offset`` (the bias) and
threshold are multiplied by the same ``lambda_k``. Spikes are binary and carry no scale,
so neighbouring projections may use different lambdas. The output voltages are in units
of the last lambda: ``Q = voltage / lambda_out``.

Two things go wrong with a bad lambda, and both are reported per layer: weights beyond
``127 / lambda`` clip (too large a lambda), and small weights round to zero ("quantization
collapse", too small a lambda).
"""

from __future__ import annotations

import copy
import math
import numbers
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch as th

from spiking_dqn.hardware.program import ChipProgram
from spiking_dqn.network import SpikingQNetwork, delay_spikes

#: Threshold of the output population: high enough that it never spikes, so it integrates.
OUTPUT_THRESHOLD = 5000.0
#: Percentile of |w| mapped to 127 by ``lam="auto"``.
AUTO_PERCENTILE = 99.9
#: A layer that clips more than this fraction of its weights triggers a warning.
CLIP_WARN_FRACTION = 0.02
#: ``"auto"`` keeps the readout's peak voltage below this fraction of its threshold.
AUTO_OUTPUT_HEADROOM = 0.8
#: Observations drawn uniformly inside the encoder bounds to estimate that peak.
AUTO_OUTPUT_SAMPLES = 2048

LambdaSpec = float | Sequence[float] | str


def quantize_weights(w: np.ndarray, lam: float) -> np.ndarray:
    """Scale, round and clip float weights to chip weights.

    :param w: float weights
    :param lam: scale factor lambda (> 0)
    :return: ``clip(rint(lam * w), -127, 127)`` as int8
    """
    return np.clip(np.rint(lam * w), -127, 127).astype(np.int8)


@dataclass
class LayerReport:
    """Quantization statistics of one projection.

    :param name: projection name (``hidden.0``, ..., ``readout``)
    :param lam: the lambda used
    :param clipped_frac: fraction of its weights with ``|lam * w| > 127.5``, i.e. clipped
    :param zeroed_frac: fraction of its nonzero float weights that rounded to 0
    :param max_abs_error: ``max |w_int8 / lam - w|``
    :param n_weights: number of weights
    """

    name: str
    lam: float
    clipped_frac: float
    zeroed_frac: float
    max_abs_error: float
    n_weights: int = 0

    @classmethod
    def from_weights(cls, name: str, w: np.ndarray, lam: float) -> LayerReport:
        """Statistics of quantizing the float weights ``w`` with ``lam``."""
        w = np.asarray(w)
        scaled = lam * w
        w_int8 = quantize_weights(w, lam)
        nonzero = w != 0
        n_nonzero = int(nonzero.sum())
        return cls(
            name=name,
            lam=float(lam),
            clipped_frac=float(np.mean(np.abs(scaled) > 127.5)) if w.size else 0.0,
            zeroed_frac=float(np.sum(nonzero & (w_int8 == 0)) / n_nonzero) if n_nonzero else 0.0,
            max_abs_error=float(np.max(np.abs(w_int8.astype(np.float64) / lam - w))) if w.size else 0.0,
            n_weights=int(w.size),
        )


@dataclass
class QuantizationReport:
    """Per-projection quantization statistics (see :class:`LayerReport`)."""

    layers: list[LayerReport] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (for JSON): ``{"layers": [{name, lam, clipped_frac, ...}, ...]}``."""
        return {"layers": [asdict(layer) for layer in self.layers]}

    @property
    def lambdas(self) -> list[float]:
        """The lambda of each projection."""
        return [layer.lam for layer in self.layers]

    def __str__(self) -> str:
        header = f"{'layer':<12} {'lambda':>10} {'clipped':>9} {'zeroed':>9} {'max |err|':>11}"
        rows = [header, "-" * len(header)]
        for r in self.layers:
            rows.append(
                f"{r.name:<12} {r.lam:>10.4g} {r.clipped_frac:>9.2%} {r.zeroed_frac:>9.2%} {r.max_abs_error:>11.4g}"
            )
        return "\n".join(rows)


def _check_lambda(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{where} must be a positive number, got {value!r}")
    lam = float(value)
    if not math.isfinite(lam) or lam <= 0:
        raise ValueError(f"{where} must be finite and positive, got {value!r}")
    return lam


def _auto_lambda(w: np.ndarray) -> float:
    magnitudes = np.abs(np.asarray(w, dtype=np.float64)).ravel()
    if magnitudes.size == 0:
        return 1.0
    q = float(np.percentile(magnitudes, AUTO_PERCENTILE))
    if q <= 0:  # mostly zeros: fall back to the largest weight
        q = float(magnitudes.max())
    return 127.0 / q if q > 0 else 1.0


def resolve_lambdas(lam: LambdaSpec, weights: Sequence[np.ndarray]) -> list[float]:
    """One lambda per projection from a lambda specification.

    :param lam: a positive float (the same lambda for every projection, as in Arfa et
        al.: 3 for CartPole, 32 for Acrobot), a list with one positive float per
        projection, or ``"auto"``. The ``"auto"`` rule, per projection: ``lambda = 127 / q``
        where ``q`` is the 99.9th percentile of ``|w|`` over that projection's weights
        (``np.percentile``, linear interpolation), so that at most about 0.1% of its
        weights clip (in a layer of fewer than 1000 weights, at most its largest one) while
        the rest use the whole int8 range, which keeps small weights from collapsing to
        zero. (If that percentile is 0, the largest ``|w|`` is used; an all-zero layer gets
        lambda 1.)
    :param weights: float weights of the projections, in order
    :return: the lambdas, one per projection
    :raises ValueError: non-positive, NaN or infinite lambda, a list of the wrong length,
        an unknown string
    """
    n = len(weights)
    if isinstance(lam, str):
        if lam != "auto":
            raise ValueError(f"unknown lambda {lam!r}: use a positive number, a list of them, or 'auto'")
        return [_auto_lambda(w) for w in weights]
    if isinstance(lam, (Sequence, np.ndarray)):
        values = list(np.asarray(lam).ravel()) if isinstance(lam, np.ndarray) else list(lam)
        if len(values) != n:
            raise ValueError(f"got {len(values)} lambdas for {n} projections; give one per projection")
        return [
            _check_lambda(v.item() if isinstance(v, np.generic) else v, f"lambda[{k}]") for k, v in enumerate(values)
        ]
    return [_check_lambda(lam.item() if isinstance(lam, np.generic) else lam, "lambda")] * n


def center_readout(net: SpikingQNetwork) -> SpikingQNetwork:
    """A copy of the network whose readout computes ``Q - mean over actions of Q``.

    Each hidden neuron's readout weights and the readout biases lose their mean over the
    actions: ``w'[a, i] = w[a, i] - mean_b w[b, i]``, ``b'[a] = b[a] - mean_b b[b]``. As the
    readout is linear in the arrived spikes, ``Q'[a] = Q[a] - mean_b Q[b]`` exactly, so the
    greedy action is unchanged. What it removes is the part of ``Q`` shared by all actions:
    with gamma 0.99 a CartPole agent's Q-values are near 100 but differ between actions by
    about 0.1, so the chip (whose integrator must stay below 5000) could otherwise use a
    readout lambda of at most ~40, whose rounding error swamps those differences.

    :param net: the float network (left untouched)
    """
    if net.n_actions < 2:
        raise ValueError("centering the readout needs at least two actions")
    centered = copy.deepcopy(net)
    with th.no_grad():
        centered.readout.weight -= centered.readout.weight.mean(dim=0, keepdim=True)
        if centered.readout.bias is not None:
            centered.readout.bias -= centered.readout.bias.mean()
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


def network_lambdas(net: SpikingQNetwork, lam: LambdaSpec, observations: np.ndarray | None = None) -> list[float]:
    """One lambda per projection of a network (see :func:`resolve_lambdas`).

    For ``"auto"`` a network whose weights were snapped to an int8 grid after
    quantization-aware training (:func:`spiking_dqn.qat.snap_to_grid`, recorded in
    ``net.grid_lambdas`` and saved with the model) gets that grid's lambdas, so that the
    chip program computes exactly the network that was trained. Otherwise the readout's
    lambda is also capped so that its peak voltage on the
    chip, ``lambda * readout_peak``, stays below ``AUTO_OUTPUT_HEADROOM`` x the output
    threshold (5000): an integrator that reaches the threshold resets and its voltage
    stops being the Q-value. Q-values of about 100 (CartPole, gamma 0.99) allow a lambda
    of about 40 at most, whatever the readout weights.

    :param net: the float network
    :param lam: lambda specification
    :param observations: observations for the peak estimate (see :func:`readout_peak`)
    """
    if isinstance(lam, str) and lam == "auto" and net.snapped_lambdas is not None:
        return net.snapped_lambdas  # the grid the network was fine-tuned for and snapped to
    lambdas = resolve_lambdas(lam, _float_weights(net))
    if isinstance(lam, str):
        peak = readout_peak(net, observations)
        if peak > 0:
            lambdas[-1] = min(lambdas[-1], AUTO_OUTPUT_HEADROOM * OUTPUT_THRESHOLD / peak)
    return lambdas


def _projection_names(net: SpikingQNetwork) -> list[str]:
    return [f"hidden.{k}" for k in range(len(net.hidden))] + ["readout"]


def _float_weights(net: SpikingQNetwork) -> list[np.ndarray]:
    return [layer.weight.detach().cpu().numpy().astype(np.float32) for layer in net.linear_layers()]


def quantization_report(net: SpikingQNetwork, lam: LambdaSpec, warn: bool = True) -> QuantizationReport:
    """Clipped and zeroed fractions of every projection for a lambda specification.

    :param net: the float network
    :param lam: lambda specification (see :func:`resolve_lambdas`)
    :param warn: warn (``UserWarning``) for each projection that clips more than 2% of
        its weights
    """
    weights = _float_weights(net)
    lambdas = network_lambdas(net, lam)
    report = QuantizationReport(
        [LayerReport.from_weights(name, w, lam_k) for name, w, lam_k in zip(_projection_names(net), weights, lambdas)]
    )
    if warn:
        for r in report.layers:
            if r.clipped_frac > CLIP_WARN_FRACTION:
                warnings.warn(
                    f"quantizing layer {r.name} with lambda={r.lam:g} clips {r.clipped_frac:.1%} of its weights "
                    f"to +-127 ({r.zeroed_frac:.1%} of its nonzero weights round to 0); consider a smaller "
                    "lambda or lam='auto'",
                    UserWarning,
                    stacklevel=3,
                )
    return report


def quantize_network(
    net: SpikingQNetwork, lam: LambdaSpec, seed: int = 0, centered: bool = True
) -> tuple[ChipProgram, QuantizationReport]:
    """Build the chip program of a float spiking Q-network.

    Projection ``k`` gets ``quantize_weights(W_k, lambda_k)`` in its ``(n_post, n_pre)``
    layout; the population it feeds gets ``i_offset = lambda_k * b_k`` (float32, not
    rounded) and, for a hidden layer, ``threshold = lambda_k * threshold`` and
    ``alpha_decay = beta`` of that layer. The output population integrates: threshold
    5000, ``alpha_decay`` 1. Reset, ticks, delay, encoder bounds and encoding mode come
    from the network.

    :param net: the float network
    :param lam: lambda specification (see :func:`resolve_lambdas`)
    :param seed: seed of the Poisson encoder on the chip
    :param centered: deploy the centered readout (:func:`center_readout`, default): the
        chip's output voltages are ``lambda * (Q - mean Q)``, same greedy action
    :return: the chip program and the quantization report (a ``UserWarning`` is issued for
        every layer that clips more than 2% of its weights)
    """
    if centered:
        net = center_readout(net)
    report = quantization_report(net, lam, warn=True)
    lambdas = report.lambdas
    weights, thresholds, alphas, offsets = [], [], [], []
    for k, (layer, lam_k) in enumerate(zip(net.linear_layers(), lambdas)):
        w = layer.weight.detach().cpu().numpy().astype(np.float32)
        weights.append(quantize_weights(w, lam_k))
        bias = layer.bias.detach().cpu().numpy().astype(np.float64) if layer.bias is not None else np.zeros(w.shape[0])
        offsets.append((lam_k * bias).astype(np.float32))
        n = w.shape[0]
        if k < len(net.lif):
            neuron = net.lif[k]
            thresholds.append(np.full(n, lam_k * float(neuron.threshold), dtype=np.float32))
            alphas.append(np.full(n, float(th.as_tensor(neuron.beta).clamp(0, 1)), dtype=np.float32))
        else:
            thresholds.append(np.full(n, OUTPUT_THRESHOLD, dtype=np.float32))
            alphas.append(np.ones(n, dtype=np.float32))
    program = ChipProgram(
        weights=weights,
        thresholds=thresholds,
        alpha_decay=alphas,
        i_offset=offsets,
        obs_bound=net.encoder.bound.detach().cpu().numpy().astype(np.float32),
        reset=net.reset,
        v_reset=0.0,
        ticks=net.ticks,
        delay=net.synaptic_delay,
        encoding=net.encoder.mode,
        seed=seed,
        lambdas=lambdas,
        centered_readout=centered,
    )
    return program, report


def fake_quantize_network(net: SpikingQNetwork, lam: LambdaSpec, centered: bool = True) -> SpikingQNetwork:
    """A copy of the network whose weights are the chip's, back in float units.

    Every linear weight is replaced by ``w_int8 / lambda_k``; biases, thresholds and decays
    are unchanged. This float model computes what the chip (emulator) computes, in units
    divided by lambda: its Q-values equal the emulator's output voltages over
    ``lambda_out``.

    :param net: the float network (left untouched)
    :param lam: lambda specification (see :func:`resolve_lambdas`)
    :param centered: start from the centered readout, as :func:`quantize_network` does
    """
    if centered:
        net = center_readout(net)
    fake = copy.deepcopy(net)
    weights = _float_weights(net)
    lambdas = network_lambdas(net, lam)
    with th.no_grad():
        for layer, w, lam_k in zip(fake.linear_layers(), weights, lambdas):
            w_fq = (quantize_weights(w, lam_k).astype(np.float64) / lam_k).astype(np.float32)
            layer.weight.copy_(th.as_tensor(w_fq, device=layer.weight.device))
    return fake
