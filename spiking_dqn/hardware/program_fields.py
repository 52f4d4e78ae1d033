"""Checks of the chip program's low-precision fields: membrane state levels (SQUAT) and per-tick gains (TaWQ).

``ChipProgram.state_levels`` is ``None`` (float32 membranes everywhere) or one entry per
population (hidden layers, then the output), each ``None`` or a sorted, strictly
increasing, finite float32 array of ``2^n`` values (``1 <= n <= MAX_STATE_BITS``): after
each tick's update, threshold comparison and reset, the membrane kept is the nearest
level (ties to the lower, :func:`spiking_dqn.kernels.nearest_level`).

``ChipProgram.tick_gain`` is ``None`` or one entry per projection, each ``None`` or a
finite float32 array of shape ``(ticks,)``: ``g[t]`` multiplies the synaptic input of that
projection arriving at tick ``t``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

#: Most bits of membrane state: 2^16 levels.
MAX_STATE_BITS = 16


def _readonly(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def state_bits(levels: np.ndarray) -> int:
    """Bits of a population's state levels (``log2`` of their count).

    :param levels: the levels of one population
    """
    return int(levels.size).bit_length() - 1


def check_state_levels(value: Any, n_populations: int) -> list[np.ndarray | None] | None:
    """``ChipProgram.state_levels`` normalised: ``None``, or one readonly float32 array or ``None`` per population.

    :param value: the field as given
    :param n_populations: populations of the program (hidden layers and output)
    :raises ValueError: not one entry per population, or an entry that is not sorted,
        strictly increasing, finite float32 values of a power-of-two count (2 .. 2^16)
    """
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or len(value) != n_populations:
        got = len(value) if isinstance(value, (list, tuple)) else type(value).__name__
        raise ValueError(f"state_levels must be None or a list with one entry per population ({n_populations}), got {got}")
    out: list[np.ndarray | None] = []
    for k, entry in enumerate(value):
        if entry is None:
            out.append(None)
            continue
        array = np.array(entry, dtype=np.float32)
        if array.ndim != 1:
            raise ValueError(f"state_levels[{k}] must be a 1-D array, got shape {array.shape}")
        size = array.size
        if size < 2 or size & (size - 1) or size > 2**MAX_STATE_BITS:
            raise ValueError(
                f"state_levels[{k}] must hold 2^n levels (1 <= n <= {MAX_STATE_BITS}), got {size} values"
            )
        if not np.all(np.isfinite(array)):
            raise ValueError(f"state_levels[{k}] must be finite")
        if not np.all(np.diff(array) > 0):
            raise ValueError(f"state_levels[{k}] must be sorted and strictly increasing")
        out.append(_readonly(array))
    return None if all(entry is None for entry in out) else out


def check_tick_gain(value: Any, n_projections: int, ticks: int) -> list[np.ndarray | None] | None:
    """``ChipProgram.tick_gain`` normalised: ``None``, or one readonly float32 ``(ticks,)`` array or ``None`` per projection.

    :param value: the field as given
    :param n_projections: projections of the program
    :param ticks: the program's ticks
    :raises ValueError: not one entry per projection, or a gain array of the wrong length or not finite
    """
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or len(value) != n_projections:
        got = len(value) if isinstance(value, (list, tuple)) else type(value).__name__
        raise ValueError(f"tick_gain must be None or a list with one entry per projection ({n_projections}), got {got}")
    out: list[np.ndarray | None] = []
    for k, entry in enumerate(value):
        if entry is None:
            out.append(None)
            continue
        array = np.array(entry, dtype=np.float32)
        if array.shape != (ticks,):
            raise ValueError(f"tick_gain[{k}] must have shape (ticks,) = ({ticks},), got {array.shape}")
        if not np.all(np.isfinite(array)):
            raise ValueError(f"tick_gain[{k}] must be finite")
        out.append(_readonly(array))
    return None if all(entry is None for entry in out) else out


def optional_arrays_equal(a: Sequence[np.ndarray | None] | None, b: Sequence[np.ndarray | None] | None) -> bool:
    """Whether two optional per-population (or per-projection) array lists are equal, ``None`` entries included."""
    if a is None or b is None:
        return a is None and b is None
    return len(a) == len(b) and all(
        (x is None and y is None) or (x is not None and y is not None and np.array_equal(x, y)) for x, y in zip(a, b)
    )
