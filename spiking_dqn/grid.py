"""The weight grid of a network: :class:`Grid`, its lambdas applied to the weights, numpy and torch.

The formula itself, ``clip(rint(lambda * w), -L, L)``, and the readout centring are the
floor's (:mod:`spiking_dqn.semantics.weights`); :func:`quantize` and :func:`center` are
their torch twins (``th.round`` rounds half to even as ``np.rint`` does) dispatched by
type. The float network imports this module (it holds a grid and fake-quantizes with it);
building chip programs on a grid is :mod:`spiking_dqn.quantization`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch as th

from spiking_dqn.semantics.weights import WEIGHT_LIMIT, center_array, check_lambda, quantize_array
from spiking_dqn.semantics.widths import DEFAULT_WEIGHT_BITS, check_weight_bits, weight_limit

Weights = TypeVar("Weights", np.ndarray, th.Tensor)


def quantize(w: Weights, lam: float, limit: int = WEIGHT_LIMIT) -> Weights:
    """The grid point of every weight, in grid units: ``clip(round(lam * w), -limit, limit)``.

    Numpy arrays go through :func:`spiking_dqn.semantics.weights.quantize_array`; torch
    tensors through ``th.round`` (half to even, as ``np.rint``), in the dtype of ``w``; the
    result has the type and dtype of ``w``.

    :param w: float weights
    :param lam: scale factor lambda (> 0)
    :param limit: largest magnitude
    """
    if isinstance(w, th.Tensor):
        return th.clamp(th.round(w * lam), -limit, limit)
    return quantize_array(w, lam, limit)


def center(w: Weights) -> Weights:
    """Readout weights (or biases) minus their mean over the actions (axis 0), numpy or torch.

    See :func:`spiking_dqn.semantics.weights.center_array`.

    :param w: ``(n_actions, ...)`` weights or ``(n_actions,)`` biases
    """
    if isinstance(w, th.Tensor):
        return w - w.mean(dim=0, keepdim=True)
    return center_array(w)


@dataclass(frozen=True)
class Grid:
    """The integer grid the weights of a network are deployed on.

    Projection ``k`` (input -> hidden 1, ..., last hidden -> readout) has grid points
    ``n / lambdas[k]`` for the integers ``|n| <= L_k``, ``L_k = 2^(b_k - 1) - 1`` with
    ``b_k = weight_bits[k]`` (8 bits: 127, 4 bits: 7, 2 bits: 1, ternary). With ``centered_readout``
    (and at least two actions) the readout's weights are taken centred over the actions
    (:func:`center`) before they meet the grid, as the chip program deploys them.

    :param lambdas: one positive scale factor per projection
    :param centered_readout: quantize the readout centred over the actions
    :param weight_bits: bits per weight, 2..8: one integer for every projection or one per
        projection (default 8, int8); normalised to a tuple with one per projection
    """

    lambdas: tuple[float, ...]
    centered_readout: bool = True
    weight_bits: int | tuple[int, ...] = DEFAULT_WEIGHT_BITS

    def __post_init__(self) -> None:
        values = tuple(check_lambda(lam, f"lambdas[{k}]") for k, lam in enumerate(self.lambdas))
        if not values:
            raise ValueError("a grid needs at least one lambda")
        object.__setattr__(self, "lambdas", values)
        object.__setattr__(self, "centered_readout", bool(self.centered_readout))
        object.__setattr__(self, "weight_bits", tuple(check_weight_bits(self.weight_bits, len(values))))

    def __len__(self) -> int:
        return len(self.lambdas)

    def limit(self, k: int) -> int:
        """Largest weight magnitude of projection ``k``: ``2^(weight_bits[k] - 1) - 1``.

        :param k: the projection
        """
        return weight_limit(self.weight_bits[k])

    def check_weight_bits(self, weight_bits: int | Sequence[int] | None) -> None:
        """Refuse widths asked for alongside this grid that are not its own.

        :param weight_bits: ``None`` (nothing asked), one width or one per projection
        :raises ValueError: widths that differ from :attr:`weight_bits`, or bad widths
        """
        if weight_bits is None:
            return
        if tuple(check_weight_bits(weight_bits, len(self.lambdas))) != self.weight_bits:
            raise ValueError(
                f"weight_bits={weight_bits!r} contradicts the grid's (or program's) widths {list(self.weight_bits)}; "
                "give the widths in the grid (Grid(..., weight_bits=...)) or quantize from a lambda specification"
            )

    @classmethod
    def of_program(cls, program: Any) -> Grid:
        """The grid a chip program was quantized on: its lambdas, readout and weight widths.

        :param program: the chip program (``ChipProgram``; read by its ``lambdas``,
            ``centered_readout`` and ``weight_bits``, so that this module needs no ``hardware/``)
        """
        return cls(tuple(program.lambdas), program.centered_readout, tuple(program.weight_bits))

    def check_fits(self, n_projections: int) -> None:
        """:raises ValueError: the grid has not one lambda per projection."""
        if len(self.lambdas) != n_projections:
            raise ValueError(f"the grid has {len(self.lambdas)} lambdas for {n_projections} projections")

    def _centers_readout(self, readout: np.ndarray | th.Tensor) -> bool:
        return self.centered_readout and readout.shape[0] > 1

    def deployed(self, weights: Sequence[Weights]) -> list[Weights]:
        """The float weights as they meet the grid: the readout centred when the grid says so."""
        out = list(weights)
        if self._centers_readout(out[-1]):
            out[-1] = center(out[-1])
        return out

    def integers(self, weights: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The chip's weights of each projection (of :meth:`deployed` weights), clipped to its width, as int8."""
        self.check_fits(len(weights))
        return [
            quantize_array(np.asarray(w), lam, self.limit(k)).astype(np.int8)
            for k, (w, lam) in enumerate(zip(self.deployed(weights), self.lambdas))
        ]

    def fake_quantize(self, weights: Sequence[th.Tensor]) -> list[th.Tensor]:
        """Weights for a quantization-aware forward pass (straight-through estimator).

        Each becomes ``w + (q(w) - w).detach()`` with ``q(w) = quantize(w, lambda) / lambda``:
        the forward sees the chip's weights in float units, the backward passes the gradient
        straight through. A centred readout has its centred weights quantized and its mean
        over the actions added back unquantized, so the greedy action is the chip's and the
        Q-values keep their common part.
        """
        self.check_fits(len(weights))

        def fake(w: th.Tensor, k: int) -> th.Tensor:
            lam = self.lambdas[k]
            return w + (quantize(w, lam, self.limit(k)) / lam - w).detach()

        out = [fake(w, k) for k, w in enumerate(weights[:-1])]
        w, k = weights[-1], len(weights) - 1
        if self._centers_readout(w):
            common = w.mean(dim=0, keepdim=True)
            out.append(fake(w - common, k) + common)
        else:
            out.append(fake(w, k))
        return out

    def distance(self, weights: Sequence[np.ndarray]) -> list[float]:
        """Mean distance of each projection's weights to the grid, in grid steps.

        For projection ``k``: ``mean |lambda_k * w - quantize(w, lambda_k)|`` in float64; 0
        when every weight sits on the grid, about 0.25 for weights spread evenly over the
        rounding bins (clipped weights count with their distance to the limit).
        """
        self.check_fits(len(weights))
        out = []
        for k, (w, lam) in enumerate(zip(self.deployed(weights), self.lambdas)):
            w64 = np.asarray(w, dtype=np.float64)
            out.append(float(np.mean(np.abs(lam * w64 - quantize_array(w64, lam, self.limit(k))))))
        return out

    def changed(self, before: Sequence[np.ndarray], after: Sequence[np.ndarray]) -> list[float]:
        """Fraction of each projection's chip weights that differ between two sets of float weights."""
        old, new = self.integers(before), self.integers(after)
        return [float(np.mean(a != b)) for a, b in zip(old, new)]

    def pull(self, weights: Sequence[th.Tensor], fraction: float) -> None:
        """Move every weight (in place) a ``fraction`` of the way to its grid point.

        A centred readout moves its centred weights (its mean over the actions stays). The
        pull never moves a weight out of its rounding bin, so the chip weights stay as they are.
        """
        if fraction <= 0:
            return
        self.check_fits(len(weights))
        last = len(weights) - 1
        with th.no_grad():
            for k, (w, lam) in enumerate(zip(weights, self.lambdas)):
                common = w.mean(dim=0, keepdim=True) if k == last and self._centers_readout(w) else th.zeros_like(w[:1])
                centered = w - common
                w.add_(fraction * (quantize(centered, lam, self.limit(k)) / lam - centered))

    def to_dict(self) -> dict[str, Any]:
        """Plain data: ``{"lambdas": [...], "centered_readout": bool, "weight_bits": [...]}``."""
        return {
            "lambdas": list(self.lambdas),
            "centered_readout": self.centered_readout,
            "weight_bits": list(self.weight_bits),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Grid:
        """The grid of :meth:`to_dict`'s data (data written before the widths existed: 8 bits).

        :param data: the plain data
        """
        return cls(
            tuple(data["lambdas"]),
            bool(data.get("centered_readout", True)),
            data.get("weight_bits", DEFAULT_WEIGHT_BITS),
        )
