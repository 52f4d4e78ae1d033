"""Membrane state levels (SQUAT): the sorted values a quantized membrane may hold after each tick.

A population's levels are a strictly increasing, finite float32 array; a chip program's
hold ``2^n`` of them (``1 <= n <= MAX_STATE_BITS``). After each tick's update, threshold
comparison and reset, the membrane kept is the nearest level (ties to the lower).
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Most bits of membrane state: 2^16 levels.
MAX_STATE_BITS = 16


def readonly(array: np.ndarray) -> np.ndarray:
    """``array`` itself, made read-only (the arrays of a program and its levels are never written)."""
    array.flags.writeable = False
    return array


def state_bits(levels: np.ndarray) -> int:
    """Bits of a population's state levels (``log2`` of their count).

    :param levels: the levels of one population
    """
    return int(levels.size).bit_length() - 1


def check_levels_array(entry: Any, where: str, power_of_two: bool = True) -> np.ndarray:
    """One population's state levels as a readonly float32 array, checked.

    :param entry: the levels as given
    :param where: what the error messages call them (e.g. ``state_levels[0]``)
    :param power_of_two: require ``2^n`` levels, ``1 <= n <= MAX_STATE_BITS`` (a chip
        program's); otherwise at least two (a float network's)
    :raises ValueError: not 1-D, the wrong count, not finite, or not strictly increasing
    """
    array = np.array(entry, dtype=np.float32)
    if array.ndim != 1:
        raise ValueError(f"{where} must be a 1-D array, got shape {array.shape}")
    size = array.size
    if power_of_two and (size < 2 or size & (size - 1) or size > 2**MAX_STATE_BITS):
        raise ValueError(f"{where} must hold 2^n levels (1 <= n <= {MAX_STATE_BITS}), got {size} values")
    if size < 2:
        raise ValueError(f"{where} must hold at least two levels, got {size}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{where} must be finite")
    if not np.all(np.diff(array) > 0):
        raise ValueError(f"{where} must be sorted and strictly increasing")
    return readonly(array)
