"""The float versus chip comparison report: its figures, ``report.json`` and ``report.md``.

Every figure of :meth:`ComparisonReport.to_dict` is a :class:`Quantity` with a ``kind``:
``"measured"``, ``"estimated"``, or ``"not measured"`` (value ``None``).
:meth:`ComparisonReport.write` writes ``report.json``, ``report.md``, ``reward.png`` and
``spike_raster.png`` (the figures come from :mod:`spiking_dqn.plots`, which draws plain data).
:func:`spiking_dqn.compare.compare` builds the report.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from spiking_dqn.files import atomic_write_text
from spiking_dqn.hardware import ChipProgram
from spiking_dqn.hardware.energy import EnergyEstimate
from spiking_dqn.hardware.mapping import map_program
from spiking_dqn.plots import RasterData, plot_rewards, plot_spike_raster
from spiking_dqn.quantization import QuantizationReport

Kind = Literal["measured", "estimated", "not measured"]


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
        """Human-readable value, e.g. ``"1.23 ms (measured)"``; ``"not measured"`` when absent.

        :param scale: factor applied to the value (e.g. ``1e3`` for seconds shown in ms)
        :param unit: unit shown (the quantity's own by default; ``""`` for none)
        :param digits: significant digits
        """
        if self.value is None:
            return "not measured"
        unit = self.unit if unit is None else unit
        number = f"{self.value * scale:.{digits}g}"
        return f"{number} {unit} ({self.kind})" if unit else f"{number} ({self.kind})"


@dataclass
class ComparisonReport:
    """Float policy versus deployed policy on the same episodes (see :func:`spiking_dqn.compare.compare`).

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
    :param program_source: where the program came from (quantized with which lambda, or its file)
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

    @property
    def n_episodes(self) -> int:
        """Episodes run per policy."""
        return len(self.float_rewards)

    @property
    def chip_label(self) -> str:
        """``"chip"`` for SpiNNaker2, ``"chip (emulator)"`` for a backend that emulates it."""
        return "chip" if self.backend == "spinnaker2" else "chip (emulator)"

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
            "chip_resources": {**map_program(self.program).to_dict(), "kind": "estimated",
                               "note": "modelled placement, spiking_dqn.hardware.mapping"},
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
        chip_label = self.chip_label
        placeholders = ", ".join(self.chip_energy.placeholders)
        lines = [
            f"# Float vs {chip_label}: {self.env_id}",
            "",
            (
                f"{self.n_episodes} episodes per policy, env seeds {self.seed} .. {self.seed + self.n_episodes - 1} "
                f"(episode i uses seed {self.seed} + i for both). Float policy on `{self.float_device}`; "
                f"deployed policy on the `{self.backend}` backend."
            ),
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
            (
                f"- layer sizes: {self.program.layer_sizes}, ticks {self.program.ticks}, delay {self.program.delay}, "
                f"reset `{self.program.reset}`, encoding `{self.program.encoding}`"
            ),
            f"- lambdas: {[round(lam, 4) for lam in self.program.lambdas]}",
            f"- thresholds (chip units, mean per population): {[round(float(np.mean(t)), 4) for t in self.program.thresholds]}",
            "",
            "## Chip resources",
            "",
            "Estimated placement on one SpiNNaker2 (model and assumptions: `spiking_dqn.hardware.mapping`):",
            "",
            "```",
            str(map_program(self.program)),
            "```",
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
        atomic_write_text(paths["report.json"], json.dumps(self.to_dict(), indent=2) + "\n")
        atomic_write_text(paths["report.md"], self.to_markdown())
        plot_rewards(
            {f"float ({self.float_device})": self.float_rewards, self.chip_label: self.chip_rewards},
            f"{self.env_id}: {self.n_episodes} episodes each (agreement {self.agreement:.1%})",
            paths["reward.png"],
        )
        plot_spike_raster(self.raster, self.population_names, self.program.lambdas[-1], paths["spike_raster.png"])
        return paths
