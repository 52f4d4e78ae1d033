"""Energy and latency model of an inference on SpiNNaker2.

Nothing here is measured: every figure an :class:`EnergyEstimate` holds is an estimate
from the constants of :class:`EnergyModel`, and is labelled so. Measured figures (from a
power meter, or the wall clock of a chip run) can be attached in ``measured``; they are
kept apart and never mixed into the estimates.

The model splits the energy of one inference into

* a time-proportional part: ``chip_power_w * ticks * tick_s`` (the chip runs in real
  time, one tick per ``tick_s``, whatever the activity), and
* an activity part: ``synaptic_events * energy_per_synaptic_event_j + neuron_updates *
  energy_per_neuron_update_j``, with ``neuron_updates = (hidden + output neurons) * ticks``.

The chip power and the tick duration come from Arfa, Vogginger and Mayr,
"Hardware-Aware Fine-Tuning of Spiking Q-Networks on the SpiNNaker2 Neuromorphic
Platform", arXiv 2507.23562 (2025). No per-event energy of SpiNNaker2 was found in public
sources, so the two activity constants are placeholders (listed in
``EnergyModel.placeholders``); the power figure of the paper already includes the
dynamic power of the activity, so the activity part may count some energy twice. With
the placeholders it is three orders of magnitude below the time part for CartPole-sized
networks, below the model's own precision.

Latency is ``ticks * tick_s``: the chip advances one tick per ``tick_s``. Host overhead
(loading the network, transferring spikes and voltages) is not modelled; it can only be
measured with a chip attached.

Paper figure, and how it is read here: the paper reports 0.006 J on SpiNNaker2 against
0.145 J on a GTX 1650 GPU for CartPole-v0, about 0.34 W of chip power during inference,
and a latency on par with the GPU. The paper's abstract does not say what the 0.006 J
covers. We read it as the energy of one inference (one chip run of 10 ticks): 0.006 J at
0.34 W is about 18 ms, one 10 ms run plus overhead, while spread over a 200-step
CartPole-v0 episode it would leave 30 microjoules, i.e. under 0.1 ms of chip time, per
inference, which cannot hold 10 ticks of 1 ms. :func:`cartpole_reference_estimate` shows
that the model lands at the same order of magnitude (about 3.4 mJ, 0.6 times the paper's
figure, the rest being overhead the model leaves out).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spiking_dqn.hardware.backend import BackendResult
from spiking_dqn.hardware.program import ChipProgram


@dataclass(frozen=True)
class EnergyModel:
    """Constants of the energy and latency model (all in SI units).

    :param chip_power_w: power of the SpiNNaker2 chip while it runs an inference.
        Source: Arfa, Vogginger, Mayr, arXiv 2507.23562 (about 0.34 W during inference).
    :param tick_s: duration of one simulation tick. Source: same paper (1 ms ticks).
    :param energy_per_synaptic_event_j: energy of delivering one spike over one synapse.
        PLACEHOLDER: no public SpiNNaker2 figure was found; 1 nJ is an order-of-magnitude
        guess for an ARM Cortex-M4F core processing one event in software (tens of
        instructions at some tens of pJ each, plus memory access).
    :param energy_per_neuron_update_j: energy of one neuron's update in one tick.
        PLACEHOLDER: same caveat and order of magnitude, 1 nJ.
    :param reference_cartpole_chip_j: CartPole-v0 energy on SpiNNaker2 reported by the
        same paper (0.006 J), read as the energy of one inference (see module docstring)
    :param reference_cartpole_gpu_j: the paper's GTX 1650 figure for the same task (0.145 J)
    :param placeholders: names of the constants that are placeholders, not sourced values
    """

    chip_power_w: float = 0.34  # Arfa et al., arXiv 2507.23562
    tick_s: float = 1e-3  # Arfa et al., arXiv 2507.23562: 1 ms ticks
    energy_per_synaptic_event_j: float = 1e-9  # PLACEHOLDER, order of magnitude only
    energy_per_neuron_update_j: float = 1e-9  # PLACEHOLDER, order of magnitude only
    reference_cartpole_chip_j: float = 0.006  # Arfa et al., arXiv 2507.23562
    reference_cartpole_gpu_j: float = 0.145  # Arfa et al., arXiv 2507.23562
    placeholders: tuple[str, ...] = ("energy_per_synaptic_event_j", "energy_per_neuron_update_j")

    def __post_init__(self) -> None:
        for name in ("chip_power_w", "tick_s", "energy_per_synaptic_event_j", "energy_per_neuron_update_j"):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be finite and non-negative, got {value}")
        if self.tick_s <= 0:
            raise ValueError(f"tick_s must be positive, got {self.tick_s}")

    @property
    def placeholder(self) -> bool:
        """True while any constant of the model is a placeholder."""
        return len(self.placeholders) > 0


@dataclass
class EnergyEstimate:
    """Estimated energy and latency of one inference (mean over the batch it was made from).

    Every numeric field is an estimate from :class:`EnergyModel`; ``measured`` holds the
    figures that were measured (empty unless given), under their own names.

    :param time_energy_j: time-proportional part, ``chip_power_w * ticks * tick_s``
    :param activity_energy_j: activity part (synaptic events and neuron updates)
    :param total_energy_j: the sum of both parts
    :param latency_s: ``ticks * tick_s``
    :param synaptic_events: mean synaptic events per inference
    :param neuron_updates: neuron updates per inference
    :param ticks: ticks per inference
    :param tick_s: tick duration used
    :param n_inferences: observations the activity was averaged over
    :param placeholders: constants of the model that are placeholders
    :param measured: measured figures, e.g. ``{"energy_j": ..., "latency_s": ...}``
    """

    time_energy_j: float
    activity_energy_j: float
    total_energy_j: float
    latency_s: float
    synaptic_events: float
    neuron_updates: int
    ticks: int
    tick_s: float
    n_inferences: int
    placeholders: tuple[str, ...] = ()
    measured: dict[str, float] = field(default_factory=dict)

    ESTIMATED = (
        "time_energy_j",
        "activity_energy_j",
        "total_energy_j",
        "latency_s",
        "synaptic_events",
        "neuron_updates",
    )

    @property
    def labels(self) -> dict[str, str]:
        """``{figure: "estimated" | "measured"}`` for every figure of this estimate."""
        out = {name: "estimated" for name in self.ESTIMATED}
        out.update({f"measured.{name}": "measured" for name in self.measured})
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain data with ``estimated`` and ``measured`` figures kept apart."""
        return {
            "estimated": {name: getattr(self, name) for name in self.ESTIMATED},
            "measured": dict(self.measured),
            "ticks": self.ticks,
            "tick_s": self.tick_s,
            "n_inferences": self.n_inferences,
            "placeholders": list(self.placeholders),
        }

    def __str__(self) -> str:
        lines = [
            f"energy per inference: {self.total_energy_j:.3e} J (estimated; time part {self.time_energy_j:.3e} J, "
            f"activity part {self.activity_energy_j:.3e} J)",
            f"latency: {self.latency_s * 1e3:.3g} ms (estimated, {self.ticks} ticks x {self.tick_s * 1e3:g} ms)",
            f"activity: {self.synaptic_events:.4g} synaptic events, {self.neuron_updates} neuron updates "
            f"per inference (estimated from {self.n_inferences} inferences)",
        ]
        if self.placeholders:
            lines.append(f"placeholder constants: {', '.join(self.placeholders)}")
        for name, value in self.measured.items():
            lines.append(f"{name}: {value:.4g} (measured)")
        return "\n".join(lines)


def _mean_events(result_or_counts: BackendResult | Mapping[str, Any] | np.ndarray | float) -> tuple[float, int]:
    if isinstance(result_or_counts, BackendResult):
        events = np.asarray(result_or_counts.synaptic_events)
    elif isinstance(result_or_counts, Mapping):
        if "synaptic_events" not in result_or_counts:
            raise ValueError("activity counts must have a 'synaptic_events' entry")
        events = np.asarray(result_or_counts["synaptic_events"])
    else:
        events = np.asarray(result_or_counts)
    if events.dtype == object or not np.issubdtype(events.dtype, np.number):
        raise ValueError(f"synaptic events must be numbers, got {result_or_counts!r}")
    events = events.ravel().astype(np.float64)
    if events.size == 0 or not np.all(np.isfinite(events)) or np.any(events < 0):
        raise ValueError("synaptic events must be a non-empty set of finite, non-negative counts")
    return float(events.mean()), int(events.size)


def estimate(
    result_or_counts: BackendResult | Mapping[str, Any] | np.ndarray | float,
    program: ChipProgram,
    tick_s: float | None = None,
    model: EnergyModel | None = None,
    measured: Mapping[str, float] | None = None,
) -> EnergyEstimate:
    """Estimate the energy and latency of one inference of ``program``.

    :param result_or_counts: a :class:`BackendResult`, a mapping with a
        ``"synaptic_events"`` entry, or the synaptic events themselves (per observation)
    :param program: the chip program that was run
    :param tick_s: tick duration; the model's (1 ms) when None
    :param model: the constants; :class:`EnergyModel` defaults when None
    :param measured: measured figures to attach, unchanged (never used in the estimates)
    :return: the estimate (means over the observations)
    """
    model = model or EnergyModel()
    tick_s = model.tick_s if tick_s is None else float(tick_s)
    if not np.isfinite(tick_s) or tick_s <= 0:
        raise ValueError(f"tick_s must be positive, got {tick_s}")
    events, n = _mean_events(result_or_counts)
    neuron_updates = int(sum(program.layer_sizes[1:])) * program.ticks
    time_j = model.chip_power_w * program.ticks * tick_s
    activity_j = events * model.energy_per_synaptic_event_j + neuron_updates * model.energy_per_neuron_update_j
    return EnergyEstimate(
        time_energy_j=time_j,
        activity_energy_j=activity_j,
        total_energy_j=time_j + activity_j,
        latency_s=program.ticks * tick_s,
        synaptic_events=events,
        neuron_updates=neuron_updates,
        ticks=program.ticks,
        tick_s=tick_s,
        n_inferences=n,
        placeholders=model.placeholders,
        measured={str(k): float(v) for k, v in (measured or {}).items()},
    )


def cartpole_reference_estimate(
    model: EnergyModel | None = None,
    net_arch: tuple[int, ...] = (64, 64),
    input_rate: float = 0.25,
    hidden_rate: float = 0.2,
) -> EnergyEstimate:
    """Estimate for a CartPole-like inference, to compare with the paper's 0.006 J.

    The network is assumed to be 4 observations -> 8 input neurons -> ``net_arch`` -> 2
    actions, dense, 10 ticks of 1 ms, delay 1, with mean spike probabilities per neuron and
    tick of ``input_rate`` (the signed code leaves half the inputs silent) and
    ``hidden_rate``. With the default constants the time part dominates: 0.34 W x 10 ms
    = 3.4 mJ, plus about 10 microjoules of activity, i.e. about 0.6 times the paper's
    0.006 J per inference: the same order of magnitude (the gap is host and setup overhead
    the model does not include).

    :param model: the constants; :class:`EnergyModel` defaults when None
    :param net_arch: hidden layer sizes assumed
    :param input_rate: mean input spike probability per tick
    :param hidden_rate: mean hidden spike probability per tick
    """
    model = model or EnergyModel()
    ticks, delay = 10, 1
    sizes = [8, *net_arch, 2]
    rates = [input_rate] + [hidden_rate] * len(net_arch)
    # Dense projections: every arriving spike reaches every neuron of the next population.
    events = sum(n_pre * rate * (ticks - delay) * n_post for n_pre, rate, n_post in zip(sizes[:-1], rates, sizes[1:]))
    program = ChipProgram(
        weights=[np.ones((n_post, n_pre), dtype=np.int8) for n_pre, n_post in zip(sizes[:-1], sizes[1:])],
        thresholds=[np.ones(n, dtype=np.float32) for n in sizes[1:]],
        alpha_decay=[np.ones(n, dtype=np.float32) for n in sizes[1:]],
        i_offset=[np.zeros(n, dtype=np.float32) for n in sizes[1:]],
        obs_bound=np.ones(4, dtype=np.float32),
        ticks=ticks,
        delay=delay,
    )
    return estimate({"synaptic_events": events}, program, model=model)
