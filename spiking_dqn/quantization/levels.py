"""Membrane state levels (SQUAT): uniform or threshold-centred, over the membrane range the network reaches.

A population with ``2^n`` state levels keeps, after each tick's update and reset, the
level nearest to its membrane (ties to the lower; ``ChipProgram.state_levels``, and
:meth:`SpikingQNetwork.set_state_levels <spiking_dqn.network.SpikingQNetwork.set_state_levels>`
in training). Two schemes, both spanning ``[v_min, v_max]``:

* ``"uniform"``: ``2^n`` equally spaced values, ``v_min`` and ``v_max`` included;
* ``"threshold_centered"`` (SQUAT's exponential scheme): dense near the threshold
  ``theta``, sparse far from it. With ``N = 2^n`` levels, ``N_b`` of them below ``theta``
  (``N_b = round(N (theta - v_min) / (v_max - v_min))``, kept in ``[1, N - 1]`` when
  ``theta`` is inside the range) and ``N_a = N - N_b`` from ``theta`` up, and
  ``f(x) = (e^(s x) - 1) / (e^s - 1)`` (``s``: ``sharpness``, default 4):
  below, ``theta - (theta - v_min) f(1 - i / N_b)`` for ``i = 0 .. N_b - 1`` (from
  ``v_min`` towards ``theta``); from theta up, ``theta + (v_max - theta) f(j / (N_a - 1))``
  for ``j = 0 .. N_a - 1`` (``theta`` to ``v_max``). The spacing next to ``theta`` is about
  ``s / (e^s - 1)`` (0.075 for ``s = 4``) of the uniform spacing of that side, and grows
  by ``e^s`` towards the ends. A ``theta`` outside the range is clipped to it.

The range is the one reached in full precision on recorded observations
(:meth:`EmulatorBackend.membrane_ranges <spiking_dqn.hardware.emulator.EmulatorBackend.membrane_ranges>`):
SQUAT found that clipping below it hurts.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import numpy as np

from spiking_dqn.hardware.emulator import EmulatorBackend
from spiking_dqn.hardware.program import ChipProgram
from spiking_dqn.semantics.checks import check_int
from spiking_dqn.semantics.levels import MAX_STATE_BITS

LevelScheme = Literal["uniform", "threshold_centered"]
LEVEL_SCHEMES: tuple[str, ...] = ("uniform", "threshold_centered")


def _check_range(v_min: float, v_max: float, bits: int) -> tuple[float, float, int]:
    check_int(bits, "state bits", 1, MAX_STATE_BITS)
    v_min, v_max = float(v_min), float(v_max)
    if not (np.isfinite(v_min) and np.isfinite(v_max)):
        raise ValueError(f"the membrane range must be finite, got [{v_min}, {v_max}]")
    if not v_min < v_max:
        raise ValueError(f"the membrane range needs v_min < v_max, got [{v_min}, {v_max}]")
    return v_min, v_max, int(bits)


def _strictly_increasing(levels: np.ndarray, what: str) -> np.ndarray:
    levels = levels.astype(np.float32)
    if not np.all(np.diff(levels) > 0):
        raise ValueError(f"{what}: the range is too narrow for this many float32 levels; use fewer bits")
    return levels


def uniform_levels(v_min: float, v_max: float, bits: int) -> np.ndarray:
    """``2^bits`` equally spaced float32 levels over ``[v_min, v_max]`` (both included).

    :param v_min: lowest level
    :param v_max: highest level
    :param bits: bits of state, 1 .. 16
    :raises ValueError: bits out of range, a non-finite or empty range
    """
    v_min, v_max, bits = _check_range(v_min, v_max, bits)
    return _strictly_increasing(np.linspace(v_min, v_max, 2**bits), "uniform levels")


def threshold_centered_levels(v_min: float, v_max: float, threshold: float, bits: int, sharpness: float = 4.0) -> np.ndarray:
    """``2^bits`` float32 levels over ``[v_min, v_max]``, dense near ``threshold`` (see the module docstring).

    :param v_min: lowest level
    :param v_max: highest level
    :param threshold: where the levels are densest (clipped into the range)
    :param bits: bits of state, 1 .. 16
    :param sharpness: ``s`` of ``f(x) = (e^(s x) - 1) / (e^s - 1)``, positive
    :raises ValueError: bits out of range, a non-finite or empty range, a bad threshold or sharpness
    """
    v_min, v_max, bits = _check_range(v_min, v_max, bits)
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold!r}")
    if not (np.isfinite(sharpness) and sharpness > 0):
        raise ValueError(f"sharpness must be positive and finite, got {sharpness!r}")
    theta = min(max(float(threshold), v_min), v_max)
    n = 2**bits
    n_below = int(round(n * (theta - v_min) / (v_max - v_min)))
    n_below = min(max(n_below, 1 if theta > v_min else 0), n - 1)
    n_above = n - n_below
    scale = np.expm1(sharpness)

    def f(x: np.ndarray) -> np.ndarray:
        return np.expm1(sharpness * x) / scale

    below = theta - (theta - v_min) * f(1.0 - np.arange(n_below) / max(n_below, 1))
    above = theta + (v_max - theta) * f(np.arange(n_above) / max(n_above - 1, 1))
    if n_above == 1:  # theta at v_max, or too few levels for both sides: the top level is v_max
        above = np.array([v_max])
    return _strictly_increasing(np.concatenate([below, above]), "threshold-centred levels")


def state_levels_for(
    program: ChipProgram,
    observations: Any,
    bits: int,
    scheme: LevelScheme = "uniform",
    output: bool = False,
    sharpness: float = 4.0,
) -> list[np.ndarray | None]:
    """``ChipProgram.state_levels`` for a program: each hidden population's levels over its recorded membrane range.

    The ranges are those the program itself (without state levels) reaches on the
    observations, in its voltage units; the threshold-centred scheme centres on each
    population's threshold (its first neuron's).

    :param program: the chip program (its own state levels are ignored for the ranges)
    :param observations: observations ``(n, d)``, e.g. :func:`spiking_dqn.rollouts.record_observations`
    :param bits: bits of state, 1 .. 16
    :param scheme: ``"uniform"`` or ``"threshold_centered"``
    :param output: quantize the output (integrator) population too (default: float32)
    :param sharpness: the threshold-centred scheme's ``s``
    :raises ValueError: an unknown scheme, bad bits, a population whose membrane never moved
    """
    if scheme not in LEVEL_SCHEMES:
        raise ValueError(f"state level scheme must be one of {LEVEL_SCHEMES}, got {scheme!r}")
    plain = dataclasses.replace(program, state_levels=None)
    ranges = EmulatorBackend(warn_saturation=False).membrane_ranges(plain, observations)
    levels: list[np.ndarray | None] = []
    for k, (v_min, v_max) in enumerate(ranges):
        if k == len(ranges) - 1 and not output:
            levels.append(None)
            continue
        if not v_min < v_max:
            raise ValueError(f"population {k}'s membrane stayed at {v_min} on these observations: no range for levels")
        if scheme == "uniform":
            levels.append(uniform_levels(v_min, v_max, bits))
        else:
            levels.append(threshold_centered_levels(v_min, v_max, float(program.thresholds[k][0]), bits, sharpness))
    return levels


def network_levels(program: ChipProgram, lambdas: Any) -> list[np.ndarray | None]:
    """A program's hidden state levels in the float network's units, for :meth:`SpikingQNetwork.set_state_levels`.

    The chip's levels are the network's times the projection's lambda (a population's
    membrane is in the units of the weights that feed it).

    :param program: a chip program with ``state_levels``
    :param lambdas: the grid's lambdas, one per projection
    :raises ValueError: the program has no state levels
    """
    if program.state_levels is None:
        raise ValueError("the program has no state levels")
    hidden = program.state_levels[:-1]
    return [None if lv is None else (lv / np.float32(lam)).astype(np.float32) for lv, lam in zip(hidden, lambdas)]
