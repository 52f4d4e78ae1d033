"""The integer weight grid: the quantization formula, readout centring and :class:`Grid`."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch as th

from spiking_dqn.hardware.program import ChipProgram
from spiking_dqn.semantics.widths import DEFAULT_WEIGHT_BITS, INT8_WEIGHT_LIMIT, check_weight_bits, weight_limit

#: Largest chip weight magnitude at the default 8 bits: integers in ``[-WEIGHT_LIMIT, WEIGHT_LIMIT]``.
#: A projection at ``k`` bits has ``weight_limit(k) = 2^(k-1) - 1`` instead (:meth:`Grid.limit`).
WEIGHT_LIMIT = INT8_WEIGHT_LIMIT

Weights = TypeVar("Weights", np.ndarray, th.Tensor)


def quantize(w: Weights, lam: float, limit: int = WEIGHT_LIMIT) -> Weights:
    """The grid point of every weight, in grid units: ``clip(rint(lam * w), -limit, limit)``.

    Works on numpy arrays (rounded with ``np.rint``) and torch tensors (``th.round``), both
    half to even, in the dtype of ``w``; the result has the type and dtype of ``w`` (cast it
    to int8 for a chip program).

    :param w: float weights
    :param lam: scale factor lambda (> 0)
    :param limit: largest magnitude
    """
    if isinstance(w, th.Tensor):
        return th.clamp(th.round(w * lam), -limit, limit)
    return np.clip(np.rint(lam * w), -limit, limit)


def quantize_weights(w: np.ndarray, lam: float, bits: int = DEFAULT_WEIGHT_BITS) -> np.ndarray:
    """Chip weights of float weights: :func:`quantize` at ``bits`` bits, as int8.

    :param w: float weights
    :param lam: scale factor lambda (> 0)
    :param bits: bits per weight, 2..8 (limit ``2^(bits-1) - 1``)
    """
    return quantize(np.asarray(w), lam, weight_limit(bits)).astype(np.int8)


def center(w: Weights) -> Weights:
    """Readout weights (or biases) minus their mean over the actions (axis 0).

    As the readout is linear in the arrived spikes, a readout so centred computes
    ``Q - mean over actions of Q``: the same greedy action, without the part of ``Q``
    shared by all actions, which would otherwise set the chip's readout lambda (its
    integrator must stay below :data:`OUTPUT_THRESHOLD`).

    :param w: ``(n_actions, ...)`` weights or ``(n_actions,)`` biases, numpy or torch
    """
    if isinstance(w, th.Tensor):
        return w - w.mean(dim=0, keepdim=True)
    return w - w.mean(axis=0, keepdims=True)


def check_lambda(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{where} must be a positive number, got {value!r}")
    lam = float(value)
    if not math.isfinite(lam) or lam <= 0:
        raise ValueError(f"{where} must be finite and positive, got {value!r}")
    return lam


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
    def of_program(cls, program: ChipProgram) -> Grid:
        """The grid a chip program was quantized on: its lambdas, readout and weight widths.

        :param program: the chip program
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
            quantize(np.asarray(w), lam, self.limit(k)).astype(np.int8)
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
            out.append(float(np.mean(np.abs(lam * w64 - quantize(w64, lam, self.limit(k))))))
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
