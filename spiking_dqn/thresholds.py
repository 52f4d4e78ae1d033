"""Thresholds as an energy knob: stochastic thresholds in training (ASPEN) and the runtime scale.

A hidden neuron fires less when its threshold is higher, so the threshold trades reward
for activity (spikes, synaptic events) without retraining. Two pieces live here:

* :class:`ThresholdNoise`, ASPEN's stochastic thresholds: during training every gradient
  step multiplies the thresholds of all hidden layers by one factor drawn from
  ``U(low, high)`` or uniformly from a list of discrete levels, so that the network learns
  to work across thresholds and a threshold scale becomes a runtime knob. Acting and the
  target network use the nominal thresholds.
* :func:`check_threshold_scale`, the check of the runtime knob
  (``SpikingQNetwork.threshold_scale``, ``SpikingDQNPolicy.threshold_scale``,
  ``HardwarePolicy.threshold_scale``): every hidden threshold multiplied by one positive
  factor at run time, on the float model and on every backend alike. The output
  integrator's threshold is never scaled (it is not a spiking neuron).

Example::

    from spiking_dqn.thresholds import ThresholdNoise

    noise = ThresholdNoise.from_spec((1.0, 1.5))              # U(1.0, 1.5)
    levels = ThresholdNoise.from_spec({"levels": [1.0, 1.25, 1.5]})
    noise.to_spec()                                           # {'low': 1.0, 'high': 1.5}
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch as th

def _positive_finite(value: Any, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a positive finite number, got {value!r}") from None
    if not math.isfinite(number) or number <= 0.0:
        raise ValueError(f"{what} must be a positive finite number, got {value!r}")
    return number


def check_threshold_scale(value: Any) -> float:
    """The runtime threshold scale as a float, checked.

    :param value: the factor every hidden threshold is multiplied by
    :raises ValueError: not a positive finite number
    """
    if isinstance(value, bool):
        raise ValueError(f"threshold_scale must be a positive finite number, got {value!r}")
    return _positive_finite(value, "threshold_scale")


@dataclass(frozen=True)
class ThresholdNoise:
    """ASPEN's stochastic thresholds: one factor per gradient step, from ``U(low, high)`` or from ``levels``.

    :param low: lower end of the uniform distribution (``None`` with ``levels``)
    :param high: upper end of the uniform distribution (``None`` with ``levels``)
    :param levels: discrete factors, drawn with equal probability (``None`` for uniform)
    """

    low: float | None = None
    high: float | None = None
    levels: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.levels is not None:
            if self.low is not None or self.high is not None:
                raise ValueError("threshold_noise: give either low and high or levels, not both")
            levels = tuple(_positive_finite(v, "threshold_noise levels") for v in self.levels)
            if not levels:
                raise ValueError("threshold_noise levels must not be empty")
            object.__setattr__(self, "levels", levels)
            return
        if self.low is None or self.high is None:
            raise ValueError("threshold_noise needs low and high (uniform) or levels (discrete)")
        low = _positive_finite(self.low, "threshold_noise low")
        high = _positive_finite(self.high, "threshold_noise high")
        if low > high:
            raise ValueError(f"threshold_noise low must not exceed high, got low={low} > high={high}")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    @classmethod
    def from_spec(cls, spec: ThresholdNoiseSpec) -> ThresholdNoise | None:
        """The noise of a user's option (see :data:`ThresholdNoiseSpec`), or ``None`` when off.

        :param spec: the option
        :raises ValueError: a malformed option (naming ``threshold_noise``)
        """
        if spec is None or isinstance(spec, ThresholdNoise):
            return spec
        if isinstance(spec, str):
            text = spec.strip()
            discrete = text.startswith("levels:")
            parts = [p for p in text.removeprefix("levels:").split(",") if p.strip()]
            try:
                values = [float(p) for p in parts]
            except ValueError:
                raise ValueError(f"threshold_noise: cannot read {spec!r} (e.g. '1.0,1.5' or 'levels:1.0,1.5')") from None
            if discrete:
                return cls(levels=tuple(values))
            spec = values
        if isinstance(spec, Mapping):
            unknown = set(spec) - {"low", "high", "levels"}
            if unknown:
                raise ValueError(f"threshold_noise: unknown keys {sorted(unknown)} (use low/high or levels)")
            levels = spec.get("levels")
            return cls(spec.get("low"), spec.get("high"), None if levels is None else tuple(levels))
        values = list(spec)
        if len(values) != 2:
            raise ValueError(
                f"threshold_noise as a sequence is (low, high), got {values!r}; give discrete levels as {{'levels': [...]}}"
            )
        return cls(values[0], values[1])

    def to_spec(self) -> dict[str, Any]:
        """Plain data for ``policy_kwargs``, YAML and saved models (``from_spec`` reads it back)."""
        if self.levels is not None:
            return {"levels": list(self.levels)}
        return {"low": self.low, "high": self.high}

    def sample(self, generator: th.Generator) -> float:
        """One factor, drawn with ``generator``.

        :param generator: the network's noise generator (seeded, saved with the model)
        """
        if self.levels is not None:
            return self.levels[int(th.randint(len(self.levels), (1,), generator=generator))]
        u = float(th.rand((), generator=generator, dtype=th.float64))
        return self.low + (self.high - self.low) * u  # type: ignore[operator]

    def __str__(self) -> str:
        if self.levels is not None:
            return "levels " + ", ".join(f"{v:g}" for v in self.levels)
        return f"U({self.low:g}, {self.high:g})"


ThresholdNoiseSpec = Sequence[float] | Mapping[str, Any] | str | ThresholdNoise | None
"""A threshold-noise option as users give it: ``(low, high)``, ``{"low": .., "high": ..}``,
``{"levels": [...]}``, the CLI string ``"1.0,1.5"`` (uniform) or ``"levels:1.0,1.25,1.5"``,
a :class:`ThresholdNoise`, or ``None`` (off)."""


def scaled_thresholds(thresholds: Sequence[np.ndarray], scale: float) -> list[np.ndarray]:
    """A chip program's thresholds with the hidden ones (all but the last, the output) times ``scale``.

    ``float32(threshold) * float32(scale)``, as the float network's scaled thresholds.

    :param thresholds: per population, hidden layers then the output (``ChipProgram.thresholds``)
    :param scale: the factor (:func:`check_threshold_scale`)
    """
    factor = np.float32(check_threshold_scale(scale))
    return [np.asarray(t, dtype=np.float32) * factor for t in thresholds[:-1]] + [np.asarray(thresholds[-1])]
