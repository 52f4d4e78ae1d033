"""On-chip versus float comparison of a trained spiking DQN.

:func:`compare` runs the same episodes (episode ``i`` uses env seed ``seed + i``) with the
float policy (the SB3 model's greedy ``predict`` on the torch device) and with the deployed
policy (:class:`~spiking_dqn.hardware_policy.HardwarePolicy` on the emulator or a
SpiNNaker2 chip), and collects into a :class:`ComparisonReport`:

* reward of each policy (mean and standard deviation over the episodes);
* action agreement: the fraction of the float policy's own observations on which the
  deployed policy picks the float policy's action;
* latency per inference: the float forward pass timed on its device, the backend's wall
  time per single-observation call, and the chip latency (``ticks x tick``, an estimate,
  for the emulator; the measured wall time of a chip run for ``spinnaker2``);
* spikes per population and synaptic events per inference;
* energy per inference: on the chip from :mod:`spiking_dqn.hardware.energy` (estimated);
  on the float device only where its power can be read (CUDA through
  ``torch.cuda.power_draw``), otherwise "not measured". No power figure is ever assumed.

Every figure of :meth:`ComparisonReport.to_dict` is a :class:`Quantity` with a ``kind``:
``"measured"``, ``"estimated"``, or ``"not measured"`` (value ``None``).
:meth:`ComparisonReport.write` writes ``report.json``, ``report.md``, ``reward.png`` and
``spike_raster.png``.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch as th

from spiking_dqn.hardware import ChipProgram, EmulatorBackend
from spiking_dqn.hardware.energy import EnergyEstimate, estimate_energy
from spiking_dqn.hardware_policy import HardwarePolicy
from spiking_dqn.quantization import LambdaSpec, QuantizationReport

Kind = Literal["measured", "estimated", "not measured"]

#: Single-observation calls timed for each latency figure.
LATENCY_CALLS = 200
#: Minimum duration of the loop over which the float device's power is sampled.
POWER_SAMPLE_S = 1.0


@dataclass(frozen=True)
class Quantity:
    """One figure of a report, with its unit and whether it was measured or estimated.

    :param value: the number (None when ``kind == "not measured"``)
    :param unit: its unit (``"s"``, ``"J"``, ``"fraction"``, ``"spikes"``, ...)
    :param kind: ``"measured"``, ``"estimated"`` or ``"not measured"``
    :param note: how it was obtained
    """

    value: float | None
    unit: str
    kind: Kind
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """``{"value", "unit", "kind"}`` plus ``"note"`` when there is one."""
        out: dict[str, Any] = {"value": self.value, "unit": self.unit, "kind": self.kind}
        if self.note:
            out["note"] = self.note
        return out

    def format(self, scale: float = 1.0, unit: str | None = None, digits: int = 4) -> str:
        """Human-readable value, e.g. ``"1.23 ms (measured)"``; ``"not measured"`` when absent."""
        if self.value is None:
            return "not measured"
        unit = self.unit if unit is None else unit
        number = f"{self.value * scale:.{digits}g}"
        return f"{number} {unit} ({self.kind})" if unit else f"{number} ({self.kind})"


@dataclass
class RasterData:
    """Per-tick activity of one inference, for the spike raster.

    :param observation: the observation ``(d,)``
    :param spike_trains: one ``(ticks, n)`` bool array per population (input, hidden..., output)
    :param voltage_trace: output voltages after every tick ``(ticks, n_actions)``, chip units
    :param source: the backend that produced it
    """

    observation: np.ndarray
    spike_trains: list[np.ndarray]
    voltage_trace: np.ndarray | None
    source: str = "emulator"


@dataclass
class ComparisonReport:
    """Float policy versus deployed policy on the same episodes (see :func:`compare`).

    :param env_id: Gymnasium id
    :param backend: backend of the deployed policy
    :param float_device: torch device of the float policy
    :param seed: env seed of the first episode (episode ``i`` uses ``seed + i``)
    :param float_rewards: episode rewards of the float policy
    :param chip_rewards: episode rewards of the deployed policy
    :param agreement: fraction of the float policy's observations where both act the same
    :param n_agreement_obs: number of those observations
    :param q_value_mae: mean absolute difference of the Q-values on those observations
    :param float_latency_s: times of single-observation float forward passes
    :param backend_latency_s: wall times of single-observation backend calls
    :param tick_s: tick duration of the chip
    :param population_names: names of the populations (input, hidden..., output)
    :param spikes_per_population: mean spikes per inference of each population
    :param synaptic_events: mean synaptic events per inference
    :param saturated_fraction: fraction of inferences where an output neuron hit its threshold
    :param chip_energy: estimated energy and latency of one chip inference
    :param float_energy_j: measured energy per float inference, None when not measured
    :param float_energy_note: how the float energy was (or why it was not) measured
    :param program: the chip program
    :param quantization: quantization report (None when a ready program was given)
    :param program_source: ``"quantized (lam=...)"`` or the program file
    :param raster: per-tick activity of one inference
    """

    env_id: str
    backend: str
    float_device: str
    seed: int
    float_rewards: list[float]
    chip_rewards: list[float]
    agreement: float
    n_agreement_obs: int
    q_value_mae: float
    float_latency_s: np.ndarray
    backend_latency_s: np.ndarray
    tick_s: float
    population_names: list[str]
    spikes_per_population: list[float]
    synaptic_events: float
    saturated_fraction: float
    chip_energy: EnergyEstimate
    float_energy_j: float | None
    float_energy_note: str
    program: ChipProgram
    quantization: QuantizationReport | None = None
    program_source: str = ""
    raster: RasterData | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_episodes(self) -> int:
        """Episodes run per policy."""
        return len(self.float_rewards)

    # ------------------------------------------------------------------ figures

    def rewards(self) -> dict[str, dict[str, Quantity]]:
        """Mean and std of the episode rewards, ``{"float": {...}, "chip": {...}}``."""
        out = {}
        for name, values in (("float", self.float_rewards), ("chip", self.chip_rewards)):
            arr = np.asarray(values, dtype=np.float64)
            out[name] = {
                "mean": Quantity(float(arr.mean()), "reward", "measured", f"over {arr.size} episodes"),
                "std": Quantity(float(arr.std()), "reward", "measured", f"over {arr.size} episodes"),
            }
        return out

    def latency(self) -> dict[str, dict[str, Quantity]]:
        """Latency per inference: float device, backend wall time, chip."""
        fl, bk = np.asarray(self.float_latency_s), np.asarray(self.backend_latency_s)
        float_note = f"single-observation forward passes on {self.float_device} (torch.no_grad), {fl.size} calls"
        out = {
            "float": {
                "median": Quantity(float(np.median(fl)), "s", "measured", float_note),
                "mean": Quantity(float(np.mean(fl)), "s", "measured", float_note),
            },
        }
        ticks_s = self.program.ticks * self.tick_s
        nominal = Quantity(
            ticks_s,
            "s",
            "estimated",
            f"{self.program.ticks} ticks x {self.tick_s * 1e3:g} ms (the chip runs in real time)",
        )
        if self.backend == "spinnaker2":
            note = f"wall time of one chip run per observation (ticks x tick + overhead), {bk.size} calls"
            measured = float(np.median(bk))
            out["chip"] = {
                "median": Quantity(measured, "s", "measured", note),
                "mean": Quantity(float(np.mean(bk)), "s", "measured", note),
                "ticks_x_tick": nominal,
                "overhead": Quantity(
                    measured - ticks_s, "s", "measured", "median measured wall time minus ticks x tick"
                ),
            }
        else:
            note = f"wall time of one single-observation emulator call on the host CPU, {bk.size} calls"
            out["emulator"] = {
                "median": Quantity(float(np.median(bk)), "s", "measured", note),
                "mean": Quantity(float(np.mean(bk)), "s", "measured", note),
            }
            out["chip"] = {
                "median": Quantity(ticks_s, "s", "estimated", nominal.note + "; host overhead not included"),
            }
        return out

    def activity(self) -> dict[str, Any]:
        """Spikes per population and synaptic events per inference of the deployed policy."""
        kind: Kind = "measured" if self.backend == "spinnaker2" else "estimated"
        note = (
            "recorded on the chip"
            if kind == "measured"
            else "counted by the emulator of the chip's neuron model (the chip's expected activity)"
        )
        return {
            "spikes_per_population": {
                name: Quantity(float(v), "spikes", kind, note)
                for name, v in zip(self.population_names, self.spikes_per_population)
            },
            "hidden_spikes": Quantity(float(sum(self.spikes_per_population[1:-1])), "spikes", kind, note),
            "synaptic_events": Quantity(float(self.synaptic_events), "events", kind, note),
            "output_saturated": Quantity(float(self.saturated_fraction), "fraction", kind, note),
        }

    def energy(self) -> dict[str, Any]:
        """Energy per inference: chip (estimated), float device (measured or not), their ratio."""
        est = self.chip_energy
        model_note = "energy model of spiking_dqn.hardware.energy"
        if est.placeholders:
            model_note += f" (placeholder constants: {', '.join(est.placeholders)})"
        chip = {
            "total": Quantity(est.total_energy_j, "J", "estimated", model_note),
            "time_part": Quantity(est.time_energy_j, "J", "estimated", "chip power x ticks x tick"),
            "activity_part": Quantity(est.activity_energy_j, "J", "estimated", "synaptic events and neuron updates"),
        }
        if self.float_energy_j is None:
            float_q = Quantity(None, "J", "not measured", self.float_energy_note)
            ratio = Quantity(None, "x", "not measured", "needs a measured float energy")
        else:
            float_q = Quantity(self.float_energy_j, "J", "measured", self.float_energy_note)
            ratio = Quantity(
                self.float_energy_j / est.total_energy_j,
                "x",
                "estimated",
                "measured float energy / estimated chip energy",
            )
        return {"chip": chip, "float": float_q, "float_over_chip": ratio}

    def agreement_quantities(self) -> dict[str, Quantity]:
        """Action agreement and Q-value difference."""
        note = f"on the float policy's {self.n_agreement_obs} observations"
        return {
            "action_agreement": Quantity(float(self.agreement), "fraction", "measured", note),
            "q_value_mean_abs_diff": Quantity(float(self.q_value_mae), "Q", "measured", note),
        }

    # ------------------------------------------------------------------ output

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``report.json``; every figure is ``{"value", "unit", "kind", ...}``."""

        def plain(obj: Any) -> Any:
            if isinstance(obj, Quantity):
                return obj.to_dict()
            if isinstance(obj, dict):
                return {k: plain(v) for k, v in obj.items()}
            return obj

        agreement = self.agreement_quantities()
        return {
            "env_id": self.env_id,
            "backend": self.backend,
            "float_device": self.float_device,
            "n_episodes": self.n_episodes,
            "seed": self.seed,
            "episode_seeds": [self.seed + i for i in range(self.n_episodes)],
            "program": {
                "source": self.program_source,
                "layer_sizes": self.program.layer_sizes,
                "ticks": self.program.ticks,
                "delay": self.program.delay,
                "reset": self.program.reset,
                "encoding": self.program.encoding,
                "lambdas": self.program.lambdas,
                "thresholds": [float(np.mean(t)) for t in self.program.thresholds],
                "tick_s": self.tick_s,
            },
            "quantization": self.quantization.to_dict() if self.quantization is not None else None,
            "reward": {
                **plain(self.rewards()),
                "episodes": {
                    name: {"value": list(values), "unit": "reward", "kind": "measured", "note": "per episode, in order"}
                    for name, values in (("float", self.float_rewards), ("chip", self.chip_rewards))
                },
            },
            "action_agreement": plain(agreement["action_agreement"]),
            "q_value_mean_abs_diff": plain(agreement["q_value_mean_abs_diff"]),
            "latency": plain(self.latency()),
            "activity": plain(self.activity()),
            "energy": {**plain(self.energy()), "placeholders": list(self.chip_energy.placeholders)},
            **({"extra": self.extra} if self.extra else {}),
        }

    def summary_rows(self) -> list[tuple[str, str, str]]:
        """``(figure, float, chip)`` rows of the summary table."""
        rew = self.rewards()
        lat = self.latency()
        act = self.activity()
        en = self.energy()
        agree = self.agreement_quantities()["action_agreement"]

        def reward(name: str) -> str:
            return f"{rew[name]['mean'].value:.2f} ± {rew[name]['std'].value:.2f} (measured)"

        chip_latency = lat["chip"]["median"].format(1e3, "ms")
        if "emulator" in lat:
            chip_latency += f"; emulator wall time {lat['emulator']['median'].format(1e3, 'ms')}"
        rows = [
            ("reward (mean ± std)", reward("float"), reward("chip")),
            ("action agreement with float", "-", f"{agree.value:.1%} ({agree.kind})"),
            ("latency per inference (median)", lat["float"]["median"].format(1e3, "ms"), chip_latency),
            ("spikes per inference (hidden)", "-", act["hidden_spikes"].format(1.0, "")),
            ("synaptic events per inference", "-", act["synaptic_events"].format(1.0, "")),
            ("energy per inference", en["float"].format(1.0, "J"), en["chip"]["total"].format(1.0, "J")),
        ]
        if en["float_over_chip"].value is not None:
            rows.append(("energy ratio float / chip", en["float_over_chip"].format(1.0, "x"), "-"))
        return rows

    def to_markdown(self) -> str:
        """The human-readable ``report.md``."""
        chip_label = "chip" if self.backend == "spinnaker2" else "chip (emulator)"
        placeholders = ", ".join(self.chip_energy.placeholders)
        lines = [
            f"# Float vs {chip_label}: {self.env_id}",
            "",
            f"{self.n_episodes} episodes per policy, env seeds {self.seed} .. {self.seed + self.n_episodes - 1} "
            f"(episode i uses seed {self.seed} + i for both). Float policy on `{self.float_device}`; "
            f"deployed policy on the `{self.backend}` backend.",
            "",
            f"| figure | float ({self.float_device}) | {chip_label} |",
            "|---|---|---|",
        ]
        lines += [f"| {a} | {b} | {c} |" for a, b, c in self.summary_rows()]
        act = self.activity()["spikes_per_population"]
        lines += [
            "",
            "Spikes per inference by population: "
            + ", ".join(f"{name} {q.value:.4g}" for name, q in act.items())
            + f" ({next(iter(act.values())).kind}).",
            "",
            "## Measured and estimated",
            "",
            "- measured: episode rewards, action agreement, Q-value difference, float latency "
            f"(single-observation forward passes on {self.float_device}), "
            + (
                "the chip's wall time per inference, spikes and synaptic events recorded on the chip"
                if self.backend == "spinnaker2"
                else "the emulator's wall time per call on the host CPU"
            )
            + ("" if self.float_energy_j is None else ", float energy per inference"),
            "- estimated: chip energy per inference (energy model of `spiking_dqn.hardware.energy`"
            + (f"; placeholder constants: {placeholders}" if placeholders else "")
            + ")"
            + (
                ""
                if self.backend == "spinnaker2"
                else f", chip latency ({self.program.ticks} ticks x {self.tick_s * 1e3:g} ms, no host overhead), "
                "spikes and synaptic events (counted by the emulator of the chip's neuron model)"
            ),
            f"- float energy: {self.float_energy_note}",
            "",
            "## Chip program",
            "",
            f"- source: {self.program_source}",
            f"- layer sizes: {self.program.layer_sizes}, ticks {self.program.ticks}, delay {self.program.delay}, "
            f"reset `{self.program.reset}`, encoding `{self.program.encoding}`",
            f"- lambdas: {[round(lam, 4) for lam in self.program.lambdas]}",
            f"- thresholds (chip units, mean per population): "
            f"{[round(float(np.mean(t)), 4) for t in self.program.thresholds]}",
            "",
        ]
        if self.quantization is not None:
            lines += ["Quantization report:", "", "```", str(self.quantization), "```", ""]
        lines += [
            "## Plots",
            "",
            "- [reward per episode](reward.png)",
            "- [spike raster of one inference](spike_raster.png)",
            "",
            "![reward](reward.png)",
            "",
            "![spike raster](spike_raster.png)",
            "",
        ]
        return "\n".join(lines)

    def write(self, out_dir: str | os.PathLike) -> dict[str, Path]:
        """Write ``report.json``, ``report.md``, ``reward.png`` and ``spike_raster.png``.

        :param out_dir: folder (created if needed)
        :return: ``{name: path}`` of the files written
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {
            "report.json": out / "report.json",
            "report.md": out / "report.md",
            "reward.png": out / "reward.png",
            "spike_raster.png": out / "spike_raster.png",
        }
        paths["report.json"].write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        paths["report.md"].write_text(self.to_markdown())
        plot_rewards(self, paths["reward.png"])
        plot_spike_raster(self, paths["spike_raster.png"])
        return paths


# ---------------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_rewards(report: ComparisonReport, path: str | os.PathLike) -> None:
    """Episode rewards of both policies side by side: box plot, episodes as points, mean ± std."""
    plt = _pyplot()
    chip_label = "chip" if report.backend == "spinnaker2" else "chip (emulator)"
    data = [np.asarray(report.float_rewards, float), np.asarray(report.chip_rewards, float)]
    labels = [f"float ({report.float_device})", chip_label]
    fig, ax = plt.subplots(figsize=(5.5, 4.0))
    ax.boxplot(data, positions=[1, 2], widths=0.5, showfliers=False)
    rng = np.random.default_rng(0)
    for x, values, color in zip((1, 2), data, ("tab:blue", "tab:orange")):
        ax.scatter(x + rng.uniform(-0.12, 0.12, values.size), values, s=12, alpha=0.6, color=color, zorder=3)
        ax.errorbar(x + 0.33, values.mean(), yerr=values.std(), fmt="o", color="black", capsize=4, zorder=4)
    ax.set_xticks([1, 2], labels)
    ax.set_ylabel("episode reward")
    ax.set_title(
        f"{report.env_id}: {report.n_episodes} episodes each (agreement {report.agreement:.1%})", fontsize=10
    )
    ax.set_xlabel("points: episodes; black: mean ± std", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_spike_raster(report: ComparisonReport, path: str | os.PathLike) -> None:
    """Spike raster of one inference: input, every hidden layer, and the output voltages over ticks."""
    plt = _pyplot()
    raster = report.raster
    if raster is None:
        fig, ax = plt.subplots(figsize=(5, 2))
        ax.text(0.5, 0.5, "no spike trains recorded", ha="center", va="center")
        ax.axis("off")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return
    trains = raster.spike_trains
    names = report.population_names
    panels = len(trains) - 1 + 1  # input and hidden rasters, then the output voltage (or spikes)
    heights = [max(1.0, min(3.0, t.shape[1] / 24)) for t in trains[:-1]] + [1.6]
    fig, axes = plt.subplots(panels, 1, figsize=(7, 1.2 + 1.1 * sum(heights)), sharex=True,
                             gridspec_kw={"height_ratios": heights})
    ticks = trains[0].shape[0]
    for ax, train, name in zip(axes[:-1], trains[:-1], names[:-1]):
        t_idx, n_idx = np.nonzero(train)
        ax.scatter(t_idx, n_idx, marker="|", s=40, color="black", linewidths=1.0)
        ax.set_ylim(-0.5, train.shape[1] - 0.5)
        ax.set_ylabel(f"{name}\n({train.shape[1]})", fontsize=8)
        ax.text(1.0, 1.0, f"{int(train.sum())} spikes", transform=ax.transAxes, ha="right", va="bottom", fontsize=7)
    out_ax = axes[-1]
    if raster.voltage_trace is not None:
        for a in range(raster.voltage_trace.shape[1]):
            out_ax.plot(np.arange(ticks), raster.voltage_trace[:, a], marker="o", ms=3, label=f"action {a}")
        out_ax.set_ylabel(f"output voltage\n(Q x {report.program.lambdas[-1]:.3g})", fontsize=8)
        out_ax.legend(fontsize=7, loc="upper left")
    else:
        t_idx, n_idx = np.nonzero(trains[-1])
        out_ax.scatter(t_idx, n_idx, marker="|", s=40, color="black")
        out_ax.set_ylabel("output\nspikes", fontsize=8)
    out_ax.set_xlabel("tick")
    out_ax.set_xlim(-0.5, ticks - 0.5)
    obs = ", ".join(f"{x:.3g}" for x in np.asarray(raster.observation).ravel())
    fig.suptitle(f"one inference on the {raster.source} (observation [{obs}])", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------- measurement


def resolve_device(device: str | th.device = "auto") -> th.device:
    """``"auto"``: CUDA when available, else CPU; otherwise the device given.

    :raises ValueError: an unknown device name, or CUDA asked for where it is not available
    """
    if isinstance(device, str) and device == "auto":
        return th.device("cuda" if th.cuda.is_available() else "cpu")
    try:
        dev = th.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"invalid torch device {device!r}: {exc}") from None
    if dev.type == "cuda" and not th.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available here (use 'cpu' or 'auto')")
    return dev


def _sync(device: th.device) -> None:
    if device.type == "cuda":
        th.cuda.synchronize(device)


def time_calls(fn: Callable[[int], Any], n_calls: int, device: th.device | None = None, warmup: int = 5) -> np.ndarray:
    """Wall time of ``n_calls`` calls ``fn(i)``, each timed alone (synchronising CUDA).

    :param fn: the call, given the call index
    :param n_calls: number of timed calls
    :param device: synchronise this CUDA device around every call
    :param warmup: untimed calls first
    :return: seconds per call, ``(n_calls,)``
    """
    sync = device is not None and device.type == "cuda"
    for i in range(warmup):
        fn(i)
    if sync:
        _sync(device)
    times = np.empty(n_calls)
    for i in range(n_calls):
        start = time.perf_counter()
        fn(i)
        if sync:
            _sync(device)
        times[i] = time.perf_counter() - start
    return times


def measure_float_energy(fn: Callable[[int], Any], device: th.device) -> tuple[float | None, str]:
    """Energy per call of ``fn`` on ``device``, where the device's power can be read.

    Only CUDA devices whose power NVML reports (``torch.cuda.power_draw``, which needs the
    ``pynvml`` package) are measured: the calls run for at least ``POWER_SAMPLE_S`` while
    the board power is sampled, and the energy per call is the mean board power times the
    wall time per call (board power includes the idle power of the GPU). Any other device
    is "not measured": no power figure is assumed.

    :return: ``(joules per call or None, how it was measured or why not)``
    """
    if device.type != "cuda":
        return None, (
            f"not measured: no power reading for the {device.type} device here "
            "(only CUDA power via NVML is read; no CPU/GPU power figure is assumed)"
        )
    try:
        th.cuda.power_draw(device)
    except Exception as exc:  # pynvml missing, NVML unsupported, ...
        return None, f"not measured: the GPU's power could not be read ({type(exc).__name__}: {exc})"
    samples: list[float] = []
    calls = 0
    _sync(device)
    start = time.perf_counter()
    while time.perf_counter() - start < POWER_SAMPLE_S or len(samples) < 3:
        fn(calls)
        calls += 1
        if calls % 10 == 0:
            _sync(device)
            samples.append(th.cuda.power_draw(device) / 1e3)  # mW -> W
    _sync(device)
    elapsed = time.perf_counter() - start
    power = float(np.mean(samples))
    return power * elapsed / calls, (
        f"measured: mean GPU board power {power:.1f} W (NVML, {len(samples)} samples, idle power included) "
        f"x wall time per inference over {calls} single-observation calls"
    )


def population_names(program: ChipProgram) -> list[str]:
    """``["input", "hidden1", ..., "output"]``."""
    return ["input"] + [f"hidden{k + 1}" for k in range(len(program.weights) - 1)] + ["output"]


def _load_model(model: Any, device: th.device) -> Any:
    if isinstance(model, (str, os.PathLike)):
        from stable_baselines3 import DQN

        path = Path(model)
        if not path.is_file():
            raise FileNotFoundError(f"no model file at {path}")
        return DQN.load(path, device=device)
    return model


def _load_program(program: ChipProgram | str | os.PathLike) -> tuple[ChipProgram, str]:
    if isinstance(program, ChipProgram):
        return program, "given ChipProgram"
    return ChipProgram.load(program), f"loaded from {program}"


def _check_env_fits(env: Any, program: ChipProgram, env_id: str) -> None:
    obs_shape = getattr(env.observation_space, "shape", None)
    if obs_shape is None or len(obs_shape) != 1 or obs_shape[0] != program.obs_dim:
        raise ValueError(
            f"{env_id} has observations of shape {obs_shape}, but the chip program takes {program.obs_dim}-D "
            "observations: is this the environment the model was trained on?"
        )
    n = getattr(env.action_space, "n", None)
    if n is None or int(n) != program.n_actions:
        raise ValueError(
            f"{env_id} has action space {env.action_space}, but the chip program has {program.n_actions} outputs"
        )


def _run_episode(env: Any, act: Callable[[np.ndarray], int], seed: int, on_step: Callable | None = None) -> float:
    obs, _ = env.reset(seed=seed)
    total, done = 0.0, False
    while not done:
        action = act(obs)
        if on_step is not None:
            on_step(obs, action)
        obs, reward, terminated, truncated, _ = env.step(action)
        total += float(reward)
        done = terminated or truncated
    return total


def compare(
    model: Any,
    env_id: str,
    backend: str = "emulator",
    lam: LambdaSpec = "auto",
    program: ChipProgram | str | os.PathLike | None = None,
    n_episodes: int = 100,
    seed: int = 0,
    device: str | th.device = "auto",
    tick_s: float = 1e-3,
    progress: bool = True,
    backend_options: dict[str, Any] | None = None,
) -> ComparisonReport:
    """Run the float policy and the deployed policy on the same episodes and compare them.

    :param model: a trained SB3 ``DQN`` with a ``SpikingDQNPolicy`` (or the path of its
        ``.zip``); its policy is moved to ``device`` for the float runs and moved back after
    :param env_id: Gymnasium id of the environment
    :param backend: ``"emulator"`` (default) or ``"spinnaker2"``
    :param lam: lambda specification used to quantize the model (ignored with ``program``)
    :param program: a ready chip program (or the path of one) to deploy instead of
        quantizing the model
    :param n_episodes: episodes per policy; episode ``i`` uses env seed ``seed + i`` for both
    :param seed: env seed of the first episode
    :param device: torch device of the float policy; ``"auto"``: CUDA when available, else CPU
    :param tick_s: chip tick duration, for the latency and energy estimates
    :param progress: show a progress bar over the episodes
    :param backend_options: options of the backend (e.g. ``{"eth_ip": ...}`` for ``"spinnaker2"``)
    :return: the report (write it with :meth:`ComparisonReport.write`)
    :raises TypeError: no ``program`` given and the model's policy is not a ``SpikingDQNPolicy``
    :raises ValueError: the environment does not fit the program, bad ``n_episodes``
    :raises ImportError: ``backend="spinnaker2"`` without py-spinnaker2 (raised before any episode)

    With ``backend="spinnaker2"`` every inference is one chip run: the episodes and the
    agreement batch (one run per recorded observation) take ``ticks x tick`` plus overhead
    each, and the chip latency reported is the measured wall time of the episode steps.
    """
    if isinstance(n_episodes, bool) or not isinstance(n_episodes, (int, np.integer)) or n_episodes < 1:
        raise ValueError(f"n_episodes must be a positive integer, got {n_episodes!r}")
    if not np.isfinite(tick_s) or tick_s <= 0:
        raise ValueError(f"tick_s must be positive, got {tick_s}")
    dev = resolve_device(device)
    options = dict(backend_options or {})
    if backend == "spinnaker2":  # fail before any episode runs when py-spinnaker2 is missing
        from spiking_dqn.hardware.spinnaker2 import import_spinnaker2

        import_spinnaker2()
    model = _load_model(model, dev)
    if program is None:
        hardware = HardwarePolicy.from_model(model, backend=backend, lam=lam, **options)
        source = f"quantized from the float model (lam={lam!r})"
    else:
        chip_program, source = _load_program(program)
        hardware = HardwarePolicy(chip_program, backend=backend, **options)
    policy = model.policy
    original_device = policy.device
    policy.to(dev)
    try:
        return _compare(model, env_id, hardware, source, n_episodes, seed, dev, tick_s, progress)
    finally:
        policy.to(original_device)


def _compare(
    model: Any,
    env_id: str,
    hardware: HardwarePolicy,
    source: str,
    n_episodes: int,
    seed: int,
    dev: th.device,
    tick_s: float,
    progress: bool,
) -> ComparisonReport:
    """:func:`compare` once the policies are set up (the float policy already on ``dev``)."""
    import gymnasium as gym
    from tqdm.auto import tqdm

    backend = hardware.backend_name
    chip_program = hardware.program
    policy = model.policy
    env = gym.make(env_id)
    try:
        _check_env_fits(env, chip_program, env_id)
        bar = tqdm(total=2 * n_episodes, desc=f"compare {env_id}", unit="episode", disable=not progress)

        # Float policy: record every observation it sees and its action there.
        observations: list[np.ndarray] = []
        float_actions: list[int] = []

        def float_act(obs: np.ndarray) -> int:
            action, _ = model.predict(obs, deterministic=True)
            return int(action)

        def record(obs: np.ndarray, action: int) -> None:
            observations.append(np.asarray(obs, dtype=np.float32).copy())
            float_actions.append(action)

        float_rewards = []
        bar.set_postfix_str("float")
        for i in range(n_episodes):
            float_rewards.append(_run_episode(env, float_act, seed + i, record))
            bar.update()

        # Deployed policy, same seeds; per-step activity and wall times.
        step_events: list[int] = []
        step_walls: list[float] = []

        def chip_act(obs: np.ndarray) -> int:
            action, _ = hardware.predict(obs)
            result = hardware.last_result
            step_events.append(int(result.synaptic_events[0]))
            step_walls.append(float(result.wall_time_s or 0.0))
            return int(action)

        chip_rewards = []
        bar.set_postfix_str(backend)
        for i in range(n_episodes):
            chip_rewards.append(_run_episode(env, chip_act, seed + i))
            bar.update()
        bar.close()
    finally:
        env.close()
    stats = hardware.stats.per_inference()

    # Agreement: one batched backend call over the float policy's observations.
    obs_batch = np.stack(observations)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # saturation was already warned about during the episodes
        batch_result = hardware.backend.run(chip_program, obs_batch)
    agreement = float(np.mean(batch_result.actions == np.asarray(float_actions)))
    with th.no_grad():
        q_float = policy.q_net(th.as_tensor(obs_batch, device=dev)).cpu().numpy()
    q_mae = float(np.mean(np.abs(q_float - batch_result.q_values(chip_program))))

    # Latency: float forward passes on the device; single-observation backend calls.
    timing_obs = [observations[i % len(observations)] for i in range(LATENCY_CALLS)]
    float_inputs = [th.as_tensor(o[None], device=dev) for o in timing_obs]

    def float_call(i: int) -> Any:  # greedy action of the float policy: argmax of its Q-values
        return policy.q_net(float_inputs[i % len(float_inputs)]).argmax(dim=1)

    with th.no_grad():
        float_latency = time_calls(float_call, LATENCY_CALLS, device=dev)
        float_energy, float_energy_note = measure_float_energy(float_call, dev)
    if backend == "emulator":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            backend_latency = time_calls(lambda i: hardware.backend.run(chip_program, timing_obs[i]), LATENCY_CALLS)
    else:  # a chip: no extra runs, use the wall times of the episode steps
        backend_latency = np.asarray(step_walls)

    # Spike raster of a typical observation (median hidden activity), from the emulator.
    hidden = sum(c.sum(1) for c in batch_result.spike_counts[1:-1])
    typical = int(np.argmin(np.abs(hidden - np.median(hidden))))
    raster_result = EmulatorBackend(warn_saturation=False).run(
        chip_program, observations[typical], record_trains=True, record_voltages=True
    )
    raster = RasterData(
        observation=observations[typical],
        spike_trains=[t[:, 0] for t in raster_result.spike_trains],
        voltage_trace=raster_result.voltage_trace[:, 0],
        source="emulator",
    )
    energy = estimate_energy(np.asarray(step_events), chip_program, tick_s=tick_s)
    return ComparisonReport(
        env_id=env_id,
        backend=backend,
        float_device=str(dev),
        seed=int(seed),
        float_rewards=float_rewards,
        chip_rewards=chip_rewards,
        agreement=agreement,
        n_agreement_obs=int(obs_batch.shape[0]),
        q_value_mae=q_mae,
        float_latency_s=float_latency,
        backend_latency_s=backend_latency,
        tick_s=float(tick_s),
        population_names=population_names(chip_program),
        spikes_per_population=[float(s) for s in stats["spikes_per_population"]],
        synaptic_events=float(stats["synaptic_events"]),
        saturated_fraction=float(stats["saturated_fraction"]),
        chip_energy=energy,
        float_energy_j=float_energy,
        float_energy_note=float_energy_note,
        program=chip_program,
        quantization=hardware.quantization_report,
        program_source=source,
        raster=raster,
    )
