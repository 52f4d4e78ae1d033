"""Checks of the chip program's low-precision fields: membrane state levels (SQUAT) and per-tick gains (TaWQ).

``ChipProgram.state_levels`` is ``None`` (float32 membranes everywhere) or one entry per
population (hidden layers, then the output), each ``None`` or a sorted, strictly
increasing, finite float32 array of ``2^n`` values (``1 <= n <= MAX_STATE_BITS``): after
each tick's update, threshold comparison and reset, the membrane kept is the nearest
level (ties to the lower, :func:`spiking_dqn.semantics.lif.nearest_level`).

``ChipProgram.tick_gain`` is ``None`` or one entry per projection, each ``None`` or a
finite float32 array of shape ``(ticks,)``: ``g[t]`` multiplies the synaptic input of that
projection arriving at tick ``t``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from spiking_dqn.semantics.levels import check_levels_array


def _readonly(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def _per_entry(
    value: Any, count: int, field: str, unit: str, check: Callable[[Any, str], np.ndarray]
) -> list[np.ndarray | None] | None:
    """A field holding ``None`` or one entry (``None`` or an array) per population or projection, normalised.

    :param value: the field as given
    :param count: entries it needs
    :param field: the field's name, for the messages
    :param unit: ``population`` or ``projection``
    :param check: checks one entry (given it and its name, ``field[k]``) and returns the readonly array
    :return: ``None`` when the field is ``None`` or every entry is
    :raises ValueError: not a list of ``count`` entries, or what ``check`` raises
    """
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or len(value) != count:
        got = len(value) if isinstance(value, (list, tuple)) else type(value).__name__
        raise ValueError(f"{field} must be None or a list with one entry per {unit} ({count}), got {got}")
    out = [None if entry is None else check(entry, f"{field}[{k}]") for k, entry in enumerate(value)]
    return None if all(entry is None for entry in out) else out


def check_state_levels(value: Any, n_populations: int) -> list[np.ndarray | None] | None:
    """``ChipProgram.state_levels`` normalised: ``None``, or one readonly float32 array or ``None`` per population.

    :param value: the field as given
    :param n_populations: populations of the program (hidden layers and output)
    :raises ValueError: not one entry per population, or an entry that is not sorted,
        strictly increasing, finite float32 values of a power-of-two count (2 .. 2^16)
    """
    return _per_entry(value, n_populations, "state_levels", "population", check_levels_array)


def check_tick_gain(value: Any, n_projections: int, ticks: int) -> list[np.ndarray | None] | None:
    """``ChipProgram.tick_gain`` normalised: ``None``, or one readonly float32 ``(ticks,)`` array or ``None`` per projection.

    :param value: the field as given
    :param n_projections: projections of the program
    :param ticks: the program's ticks
    :raises ValueError: not one entry per projection, or a gain array of the wrong length or not finite
    """

    def check(entry: Any, where: str) -> np.ndarray:
        array = np.array(entry, dtype=np.float32)
        if array.shape != (ticks,):
            raise ValueError(f"{where} must have shape (ticks,) = ({ticks},), got {array.shape}")
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{where} must be finite")
        return _readonly(array)

    return _per_entry(value, n_projections, "tick_gain", "projection", check)


def optional_arrays_equal(a: Sequence[np.ndarray | None] | None, b: Sequence[np.ndarray | None] | None) -> bool:
    """Whether two optional per-population (or per-projection) array lists are equal, ``None`` entries included."""
    if a is None or b is None:
        return a is None and b is None
    return len(a) == len(b) and all(
        (x is None and y is None) or (x is not None and y is not None and np.array_equal(x, y)) for x, y in zip(a, b)
    )
