"""Per-projection statistics of quantizing a network on a grid: width, clipped and zeroed weights, memory."""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from spiking_dqn.grid import Grid
from spiking_dqn.network import SpikingQNetwork
from spiking_dqn.quantization.lambdas import float_weights
from spiking_dqn.semantics.weights import quantize_weights
from spiking_dqn.semantics.widths import DEFAULT_WEIGHT_BITS, weight_limit, weight_memory_bytes

#: A layer that clips more than this fraction of its weights triggers a warning.
CLIP_WARN_FRACTION = 0.02


@dataclass
class LayerReport:
    """Quantization statistics of one projection.

    :param name: projection name (``hidden.0``, ..., ``readout``)
    :param lam: the lambda used
    :param clipped_frac: fraction of its weights with ``|lam * w| > L + 0.5``, i.e. clipped
        (``L = 2^(bits-1) - 1``)
    :param zeroed_frac: fraction of its nonzero float weights that rounded to 0
    :param max_abs_error: ``max |w_q / lam - w|``
    :param n_weights: number of weights
    :param bits: bits per weight
    :param memory_bytes: the weights' memory at that width,
        :func:`~spiking_dqn.semantics.widths.weight_memory_bytes`: ``ceil(n_weights * bits / 8)``
        (the dense matrix packed, zeros included, no indices; not the int8 file storage)
    """

    name: str
    lam: float
    clipped_frac: float
    zeroed_frac: float
    max_abs_error: float
    n_weights: int = 0
    bits: int = DEFAULT_WEIGHT_BITS
    memory_bytes: int = 0

    @property
    def limit(self) -> int:
        """Largest weight magnitude at this width."""
        return weight_limit(self.bits)

    @classmethod
    def from_weights(cls, name: str, w: np.ndarray, lam: float, bits: int = DEFAULT_WEIGHT_BITS) -> LayerReport:
        """Statistics of quantizing the float weights ``w`` with ``lam`` at ``bits`` bits.

        :param name: projection name
        :param w: float weights
        :param lam: the lambda
        :param bits: bits per weight, 2..8
        """
        w = np.asarray(w)
        w_q = quantize_weights(w, lam, bits)
        nonzero = w != 0
        n_nonzero = int(nonzero.sum())
        return cls(
            name=name,
            lam=float(lam),
            clipped_frac=float(np.mean(np.abs(lam * w) > weight_limit(bits) + 0.5)) if w.size else 0.0,
            zeroed_frac=float(np.sum(nonzero & (w_q == 0)) / n_nonzero) if n_nonzero else 0.0,
            max_abs_error=float(np.max(np.abs(w_q.astype(np.float64) / lam - w))) if w.size else 0.0,
            n_weights=int(w.size),
            bits=int(bits),
            memory_bytes=weight_memory_bytes(w.size, bits),
        )


@dataclass
class QuantizationReport:
    """Per-projection quantization statistics (see :class:`LayerReport`).

    :param layers: one report per projection, in order
    """

    layers: list[LayerReport] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (for JSON): ``{"layers": [{name, lam, clipped_frac, ...}, ...]}``."""
        return {"layers": [asdict(layer) for layer in self.layers]}

    @property
    def lambdas(self) -> list[float]:
        """The lambda of each projection."""
        return [layer.lam for layer in self.layers]

    @property
    def weight_bits(self) -> list[int]:
        """The width of each projection."""
        return [layer.bits for layer in self.layers]

    @property
    def memory_bytes(self) -> int:
        """Weight memory of all projections at their widths (see :attr:`LayerReport.memory_bytes`)."""
        return sum(layer.memory_bytes for layer in self.layers)

    def __str__(self) -> str:
        header = (
            f"{'layer':<12} {'bits':>4} {'lambda':>10} {'clipped':>9} {'zeroed':>9} {'max |err|':>11} {'bytes':>8}"
        )
        rows = [header, "-" * len(header)]
        for r in self.layers:
            rows.append(
                f"{r.name:<12} {r.bits:>4} {r.lam:>10.4g} {r.clipped_frac:>9.2%} {r.zeroed_frac:>9.2%} "
                f"{r.max_abs_error:>11.4g} {r.memory_bytes:>8}"
            )
        rows.append(f"{'total':<12} {'':>4} {'':>10} {'':>9} {'':>9} {'':>11} {self.memory_bytes:>8}")
        return "\n".join(rows)


def _projection_names(net: SpikingQNetwork) -> list[str]:
    return [f"hidden.{k}" for k in range(len(net.hidden))] + ["readout"]


def quantization_report(net: SpikingQNetwork, grid: Grid, warn: bool = True) -> QuantizationReport:
    """Width, clipped and zeroed fractions and weight memory of every projection of a network on a grid.

    :param net: the float network
    :param grid: the grid
    :param warn: warn (``UserWarning``) for each projection that clips more than
        ``CLIP_WARN_FRACTION`` of its weights (pass False for lambdas of the ``"mse"`` rule,
        which clips on purpose: that clipping is its least reconstruction error)
    """
    weights = grid.deployed(float_weights(net))
    report = QuantizationReport(
        [
            LayerReport.from_weights(name, w, lam, bits)
            for name, w, lam, bits in zip(_projection_names(net), weights, grid.lambdas, grid.weight_bits)
        ]
    )
    if warn:
        for r in report.layers:
            if r.clipped_frac > CLIP_WARN_FRACTION:
                # The rule to suggest is the one recommended at the layer's width: 'auto' at 8 bits, 'mse' below.
                rule = "lam='auto'" if r.bits >= DEFAULT_WEIGHT_BITS else "lam='mse' (the better rule below 8 bits)"
                warnings.warn(
                    f"quantizing layer {r.name} with lambda={r.lam:g} clips {r.clipped_frac:.1%} of its weights "
                    f"to +-{r.limit} at {r.bits} bits ({r.zeroed_frac:.1%} of its nonzero weights round to 0); "
                    f"consider a smaller lambda or {rule}",
                    UserWarning,
                    stacklevel=3,
                )
    return report
