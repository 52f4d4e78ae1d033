"""The integer weight grid: the quantization formula, readout centring and :class:`Grid`."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch as th

from spiking_dqn.hardware.program import INT8_WEIGHT_LIMIT

#: Largest chip weight magnitude: weights are integers in ``[-WEIGHT_LIMIT, WEIGHT_LIMIT]``.
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


def quantize_weights(w: np.ndarray, lam: float) -> np.ndarray:
    """Chip weights of float weights: :func:`quantize` as int8.

    :param w: float weights
    :param lam: scale factor lambda (> 0)
    """
    return quantize(np.asarray(w), lam).astype(np.int8)


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
    ``n / lambdas[k]`` for the integers ``|n| <= WEIGHT_LIMIT``. With ``centered_readout``
    (and at least two actions) the readout's weights are taken centred over the actions
    (:func:`center`) before they meet the grid, as the chip program deploys them.

    :param lambdas: one positive scale factor per projection
    :param centered_readout: quantize the readout centred over the actions
    """

    lambdas: tuple[float, ...]
    centered_readout: bool = True

    def __post_init__(self) -> None:
        values = tuple(check_lambda(lam, f"lambdas[{k}]") for k, lam in enumerate(self.lambdas))
        if not values:
            raise ValueError("a grid needs at least one lambda")
        object.__setattr__(self, "lambdas", values)
        object.__setattr__(self, "centered_readout", bool(self.centered_readout))

    def __len__(self) -> int:
        return len(self.lambdas)

    def limit(self, k: int) -> int:
        """Largest weight magnitude of projection ``k``."""
        return WEIGHT_LIMIT

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
        """The chip's int8 weights of each projection (of :meth:`deployed` weights)."""
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
        """Plain data: ``{"lambdas": [...], "centered_readout": bool}``."""
        return {"lambdas": list(self.lambdas), "centered_readout": self.centered_readout}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Grid:
        """The grid of :meth:`to_dict`'s data."""
        return cls(tuple(data["lambdas"]), bool(data.get("centered_readout", True)))
