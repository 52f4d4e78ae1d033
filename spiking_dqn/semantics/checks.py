"""The checks of option values, once for every layer: an integer is an ``int`` or a numpy integer,
never a ``bool``; a number is a real number, never a ``bool``; a flag is a ``bool`` (or a numpy one).

Each check returns the plain Python value and raises ``error`` (``ValueError`` unless told)
with the message ``"<name> must be <what>, got <value!r>"``; ``what`` says the bounds in words
unless the caller gives its own. Standard library and numpy only, so that the floor, the
hardware layer and the torch side all import it.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

import numpy as np


def is_int(value: Any) -> bool:
    """Whether ``value`` is an integer (``int`` or a numpy integer), a ``bool`` not counted."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """Whether ``value`` is a real number (``int``, ``float`` or a numpy one), a ``bool`` not counted."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _int_words(minimum: int | None, maximum: int | None) -> str:
    if minimum is not None and maximum is not None:
        return f"an integer in {minimum} .. {maximum}"
    if minimum == 1:
        return "a positive integer"
    if minimum == 0:
        return "a non-negative integer"
    if minimum is not None:
        return f"an integer >= {minimum}"
    if maximum is not None:
        return f"an integer <= {maximum}"
    return "an integer"


def check_int(
    value: Any,
    name: str,
    minimum: int | None = None,
    maximum: int | None = None,
    *,
    what: str | None = None,
    error: type[Exception] = ValueError,
) -> int:
    """``value`` as an ``int``, checked to be an integer within ``minimum .. maximum`` (inclusive).

    :param value: the value given
    :param name: its name in the message
    :param minimum: the smallest value allowed (None: no bound)
    :param maximum: the largest value allowed (None: no bound)
    :param what: what the value must be, in the message (default: the bounds in words, e.g.
        ``"a positive integer"``, ``"an integer in 1 .. 8"``)
    :param error: the exception class raised
    :raises error: ``"<name> must be <what>, got <value!r>"``
    """
    if (
        not is_int(value)
        or (minimum is not None and value < minimum)
        or (maximum is not None and value > maximum)
    ):
        raise error(f"{name} must be {what or _int_words(minimum, maximum)}, got {value!r}")
    return int(value)


def check_real(value: Any, name: str, *, what: str = "a number", error: type[Exception] = ValueError) -> float:
    """``value`` as a ``float``, checked to be a real number (its range is the caller's to check).

    :param value: the value given
    :param name: its name in the message
    :param what: what the value must be, in the message
    :param error: the exception class raised
    :raises error: ``"<name> must be <what>, got <value!r>"``
    """
    if not is_real(value):
        raise error(f"{name} must be {what}, got {value!r}")
    return float(value)


def check_bool(value: Any, name: str, *, what: str = "a bool", error: type[Exception] = ValueError) -> bool:
    """``value`` as a ``bool``, checked to be one (Python or numpy; not 0 or 1).

    :param value: the value given
    :param name: its name in the message
    :param what: what the value must be, in the message
    :param error: the exception class raised
    :raises error: ``"<name> must be <what>, got <value!r>"``
    """
    if not isinstance(value, (bool, np.bool_)):
        raise error(f"{name} must be {what}, got {value!r}")
    return bool(value)


#: The ``"range"`` an options field may declare in its metadata, and what it allows: the
#: command line's argument types (:mod:`spiking_dqn.cli.arguments`) parse to the same bounds.
RANGES = {"positive": "positive", "non_negative": "0 or positive"}


def check_field_ranges(options: Any, error: type[Exception] = ValueError) -> None:
    """Check every field of the dataclass ``options`` that declares a ``"range"`` in its metadata.

    A value of ``None`` (an override not given) passes; a list is checked item by item.

    :param options: a dataclass instance (e.g. :class:`spiking_dqn.recipes.recipe.TrainOptions`)
    :param error: the exception class raised
    :raises error: ``"<field> must be positive, got <value!r>"`` (or ``"0 or positive"``), also for
        a value that is not a finite number
    """
    for field in dataclasses.fields(options):
        kind, value = field.metadata.get("range"), getattr(options, field.name)
        if kind is None or value is None:
            continue
        for item in value if isinstance(value, (list, tuple)) else [value]:
            ok = is_real(item) and math.isfinite(item) and (item > 0 if kind == "positive" else item >= 0)
            if not ok:
                raise error(f"{field.name} must be {RANGES[kind]}, got {value!r}")
