"""The option checks of ``spiking_dqn.semantics.checks``: what counts as an integer, a number and a flag."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from spiking_dqn.semantics.checks import check_bool, check_int, check_real, is_int, is_real


def test_an_integer_is_an_int_or_numpy_integer_never_a_bool():
    assert all(is_int(v) for v in (0, -3, np.int8(4), np.int64(2**40), np.uint16(7)))
    assert not any(is_int(v) for v in (True, np.bool_(False), 1.0, np.float32(2), "3", None, Fraction(1)))
    assert check_int(np.int32(5), "n") == 5 and type(check_int(np.int32(5), "n")) is int


def test_a_number_is_real_never_a_bool():
    assert all(is_real(v) for v in (0, 1.5, np.float32(0.25), np.int16(3), Fraction(1, 2)))
    assert not any(is_real(v) for v in (True, np.bool_(True), "0.5", None, 1j, np.array([1.0])))
    assert check_real(np.float32(0.5), "x") == 0.5 and type(check_real(3, "x")) is float


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "n must be an integer, got True"),
        ({"minimum": 1}, "n must be a positive integer, got True"),
        ({"minimum": 0}, "n must be a non-negative integer, got True"),
        ({"minimum": 2}, "n must be an integer >= 2, got True"),
        ({"maximum": 8}, "n must be an integer <= 8, got True"),
        ({"minimum": 1, "maximum": 8}, "n must be an integer in 1 .. 8, got True"),
        ({"what": "a count of bytes"}, "n must be a count of bytes, got True"),
    ],
)
def test_check_int_says_the_bounds_in_words(kwargs, message):
    with pytest.raises(ValueError) as info:
        check_int(True, "n", **kwargs)
    assert str(info.value) == message


def test_check_int_bounds_are_inclusive_and_the_error_class_is_the_callers():
    assert check_int(1, "n", 1, 8) == 1 and check_int(8, "n", 1, 8) == 8
    for bad in (0, 9, 2.0):
        with pytest.raises(ValueError, match="n must be an integer in 1 .. 8"):
            check_int(bad, "n", 1, 8)
    with pytest.raises(KeyError):
        check_int("1", "n", error=KeyError)


def test_check_real_and_check_bool_messages():
    with pytest.raises(ValueError, match=r"^alpha must be a number in \[0, 1\), got False$"):
        check_real(False, "alpha", what="a number in [0, 1)")
    assert check_bool(np.bool_(True), "flag") is True
    for bad in (0, 1, "yes", None):
        with pytest.raises(ValueError, match="flag must be True or False"):
            check_bool(bad, "flag", what="True or False")
