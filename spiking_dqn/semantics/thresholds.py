"""The threshold scaling: the one rule by which a factor on the hidden thresholds is applied.

A scaled threshold is ``float32(threshold) * float32(scale)``, a float32 product, and only
hidden populations are scaled: the output population is a non-spiking integrator whose
threshold is never touched. Deploying with ``threshold_scale``, the comparison and
``HardwarePolicy.threshold_scale``, the threshold search's multipliers and the float
network's ``threshold_scale`` all compute their thresholds here, so the same factor gives
the same thresholds bit for bit on every route.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def scale_threshold(threshold: Any, scale: float) -> np.ndarray:
    """``float32(threshold) * float32(scale)``: one population's (or one neuron's) scaled threshold.

    :param threshold: a threshold, or an array of them
    :param scale: the factor
    :return: the float32 product (a float32 scalar for a scalar ``threshold``)
    """
    return np.asarray(threshold, dtype=np.float32) * np.float32(scale)


def scale_thresholds(thresholds: Sequence[Any], scale: float | Sequence[float]) -> list[np.ndarray]:
    """Thresholds per population (hidden ones, then the output) with the hidden ones scaled.

    :param thresholds: one array per population, the output last (``ChipProgram.thresholds``)
    :param scale: one factor for every hidden population, or one per hidden population
    :return: :func:`scale_threshold` of each hidden population, then the output's unchanged
    :raises ValueError: a sequence of factors not one per hidden population
    """
    hidden = thresholds[:-1]
    if isinstance(scale, (Sequence, np.ndarray)):
        scales = list(scale)
        if len(scales) != len(hidden):
            raise ValueError(f"{len(scales)} threshold factors for {len(hidden)} hidden populations")
    else:
        scales = [scale] * len(hidden)
    return [scale_threshold(t, s) for t, s in zip(hidden, scales)] + [np.asarray(thresholds[-1])]
