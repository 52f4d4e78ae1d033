"""The weight grid's formula in numpy: the chip integers of float weights, and the readout centring.

Projection ``k`` is scaled by ``lambda_k`` and rounded to the chip's integers,
``w_q = clip(rint(lambda_k * w), -L_k, L_k)`` with ``L_k`` the limit of its width
(:func:`spiking_dqn.semantics.widths.weight_limit`), rounding half to even. The torch
twin for quantization-aware training and the :class:`~spiking_dqn.grid.Grid` that applies
a network's lambdas are in :mod:`spiking_dqn.grid`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from spiking_dqn.semantics.checks import check_real
from spiking_dqn.semantics.widths import DEFAULT_WEIGHT_BITS, INT8_WEIGHT_LIMIT, weight_limit

#: Largest chip weight magnitude at the default 8 bits: integers in ``[-WEIGHT_LIMIT, WEIGHT_LIMIT]``.
#: A projection at ``k`` bits has ``weight_limit(k) = 2^(k-1) - 1`` instead (``Grid.limit``).
WEIGHT_LIMIT = INT8_WEIGHT_LIMIT


def quantize_array(w: np.ndarray, lam: float, limit: int = WEIGHT_LIMIT) -> np.ndarray:
    """The grid point of every weight, in grid units: ``clip(rint(lam * w), -limit, limit)``.

    Rounded half to even with ``np.rint``, in the dtype of ``w`` (cast the result to int8
    for a chip program).

    :param w: float weights
    :param lam: scale factor lambda (> 0)
    :param limit: largest magnitude
    """
    return np.clip(np.rint(lam * w), -limit, limit)


def quantize_weights(w: np.ndarray, lam: float, bits: int = DEFAULT_WEIGHT_BITS) -> np.ndarray:
    """Chip weights of float weights: :func:`quantize_array` at ``bits`` bits, as int8.

    :param w: float weights
    :param lam: scale factor lambda (> 0)
    :param bits: bits per weight, 2..8 (limit ``2^(bits-1) - 1``)
    """
    return quantize_array(np.asarray(w), lam, weight_limit(bits)).astype(np.int8)


def center_array(w: np.ndarray) -> np.ndarray:
    """Readout weights (or biases) minus their mean over the actions (axis 0).

    As the readout is linear in the arrived spikes, a readout so centred computes
    ``Q - mean over actions of Q``: the same greedy action, without the part of ``Q``
    shared by all actions, which would otherwise set the chip's readout lambda.

    :param w: ``(n_actions, ...)`` weights or ``(n_actions,)`` biases
    """
    return w - w.mean(axis=0, keepdims=True)


def check_lambda(value: Any, where: str) -> float:
    """A scale factor lambda as a float, checked.

    :param value: the lambda
    :param where: what the error message calls it
    :raises ValueError: not a finite positive number
    """
    lam = check_real(value, where, what="a positive number")
    if not math.isfinite(lam) or lam <= 0:
        raise ValueError(f"{where} must be finite and positive, got {value!r}")
    return lam
