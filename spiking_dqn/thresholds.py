"""Thresholds as an energy knob: stochastic thresholds in training (ASPEN), the runtime scale, adaptation.

A hidden neuron fires less when its threshold is higher, so the threshold trades reward
for activity (spikes, synaptic events) without retraining. Three pieces live here:

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
* :class:`AdaptiveThresholds` and :class:`ThresholdAdaptation`, NeuEdge's runtime
  adaptation (Eq. 11 of its summary): between inferences the host sets each hidden
  layer's thresholds to ``theta = theta_base * (1 + gain * (target_rate - rate))``, where
  ``rate`` is that layer's firing rate averaged over the last ``window`` inferences of the
  episode. It only rewrites thresholds between runs, so it works on every backend.

Example::

    from spiking_dqn.thresholds import ThresholdNoise

    noise = ThresholdNoise.from_spec((1.0, 1.5))              # U(1.0, 1.5)
    levels = ThresholdNoise.from_spec({"levels": [1.0, 1.25, 1.5]})
    noise.to_spec()                                           # {'low': 1.0, 'high': 1.5}
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch as th

from spiking_dqn.semantics.checks import check_int
from spiking_dqn.semantics.thresholds import scale_thresholds


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


def scaled_thresholds(
    thresholds: Sequence[np.ndarray], scale: float, factors: Sequence[float] | None = None
) -> list[np.ndarray]:
    """A chip program's thresholds with the hidden ones (all but the last, the output) times ``scale``.

    :func:`spiking_dqn.semantics.thresholds.scale_thresholds` (``float32(threshold) *
    float32(scale)``), then again with each layer's factor when ``factors`` are given
    (threshold adaptation).

    :param thresholds: per population, hidden layers then the output (``ChipProgram.thresholds``)
    :param scale: the factor (:func:`check_threshold_scale`)
    :param factors: one more factor per hidden layer, or ``None``
    """
    scaled = scale_thresholds(thresholds, check_threshold_scale(scale))
    return scaled if factors is None else scale_thresholds(scaled, factors)


@dataclass(frozen=True)
class AdaptiveThresholds:
    """NeuEdge's runtime threshold adaptation: ``theta = theta_base * (1 + gain * (target_rate - rate))``.

    ``rate`` is a hidden layer's firing rate (spikes / (neurons * ticks)) in one inference,
    averaged over the last ``window`` inferences of the same episode (all of them while
    fewer have run; before the first, ``rate = target_rate``, i.e. the base thresholds).
    The direction is NeuEdge's: a layer firing below the target gets a higher threshold
    (quiet inputs cost even fewer spikes), one firing above it a lower threshold (it stays
    sensitive when activity rises). That is positive feedback on the rate, so a large
    ``gain`` with a target below the layer's rate drives thresholds down to the floor: the
    factor is kept at or above ``min_factor`` so that a threshold never reaches zero.
    ``theta_base`` is the program's threshold times any ``threshold_scale``.

    :param target_rate: the firing rate aimed at, in (0, 1]
    :param gain: how strongly the thresholds follow the rate error, >= 0
    :param window: inferences in the moving average, >= 1
    :param min_factor: lower bound of the factor, in (0, 1]
    """

    target_rate: float
    gain: float
    window: int = 10
    min_factor: float = 0.1

    def __post_init__(self) -> None:
        target = _number(self.target_rate, "target_rate")
        if not 0.0 < target <= 1.0:
            raise ValueError(f"adaptive_thresholds target_rate must be in (0, 1], got {self.target_rate!r}")
        gain = _number(self.gain, "gain")
        if gain < 0.0:
            raise ValueError(f"adaptive_thresholds gain must be a non-negative finite number, got {self.gain!r}")
        window = check_int(self.window, "adaptive_thresholds window", minimum=1)
        low = _number(self.min_factor, "min_factor")
        if not 0.0 < low <= 1.0:
            raise ValueError(f"adaptive_thresholds min_factor must be in (0, 1], got {self.min_factor!r}")
        for name, value in (("target_rate", target), ("gain", gain), ("window", window), ("min_factor", low)):
            object.__setattr__(self, name, value)

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | AdaptiveThresholds | None) -> AdaptiveThresholds | None:
        """The rule of ``dict(target_rate=..., gain=..., window=...)``, or ``None`` when off.

        :param spec: the option
        :raises ValueError: unknown keys or bad values (naming ``adaptive_thresholds``)
        """
        if spec is None or isinstance(spec, AdaptiveThresholds):
            return spec
        if not isinstance(spec, Mapping):
            raise ValueError(f"adaptive_thresholds must be a dict(target_rate=..., gain=...), got {spec!r}")
        unknown = set(spec) - {"target_rate", "gain", "window", "min_factor"}
        missing = {"target_rate", "gain"} - set(spec)
        if unknown or missing:
            raise ValueError(
                f"adaptive_thresholds takes target_rate, gain and optionally window and min_factor; "
                f"unknown {sorted(unknown)}, missing {sorted(missing)}"
            )
        return cls(**spec)

    def factors(self, rates: np.ndarray) -> np.ndarray:
        """The threshold factor of each hidden layer for its averaged rate.

        :param rates: averaged firing rate per hidden layer
        """
        factor = 1.0 + self.gain * (self.target_rate - np.asarray(rates, dtype=np.float64))
        return np.maximum(factor, self.min_factor)


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"adaptive_thresholds {name} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"adaptive_thresholds {name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"adaptive_thresholds {name} must be finite, got {value!r}")
    return number


@dataclass
class ThresholdAdaptation:
    """The state of :class:`AdaptiveThresholds` for one episode: the last ``window`` per-layer rates.

    :param rule: the adaptation rule
    :param n_layers: hidden layers
    :param history: the recent rates, one ``(n_layers,)`` array per inference
    """

    rule: AdaptiveThresholds
    n_layers: int
    history: deque = field(default_factory=deque)

    def rates(self) -> np.ndarray:
        """Averaged firing rate per hidden layer (the target before any inference)."""
        if not self.history:
            return np.full(self.n_layers, self.rule.target_rate)
        return np.mean(np.stack(self.history), axis=0)

    def factors(self) -> np.ndarray:
        """Threshold factor per hidden layer for the next inference."""
        return self.rule.factors(self.rates())

    def record(self, rates: np.ndarray) -> None:
        """Add one inference's per-layer firing rates (the oldest dropped past ``window``).

        :param rates: firing rate per hidden layer
        """
        self.history.append(np.asarray(rates, dtype=np.float64))
        while len(self.history) > self.rule.window:
            self.history.popleft()
