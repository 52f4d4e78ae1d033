"""What a fit to the chip found: the candidate programs, their held-out rewards, the chosen one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spiking_dqn.hardware.energy import EnergyEstimate
from spiking_dqn.hardware.program import ChipProgram
from spiking_dqn.semantics.levels import state_bits
from spiking_dqn.pipeline.settings import Seeds
from spiking_dqn.qat import QATReport
from spiking_dqn.grid import Grid
from spiking_dqn.quantization import QuantizationReport
from spiking_dqn.rollouts import EpisodeResult
from spiking_dqn.search.calibration import CalibrationResult
from spiking_dqn.search.results import ThresholdSearchResult


@dataclass
class Candidate:
    """One program a fit considered, evaluated on the held-out episodes.

    :param program: the chip program
    :param evaluation: its held-out episodes on the backend (``None``: not evaluated)
    :param multipliers: its hidden thresholds over the quantized program's, per layer
    """

    program: ChipProgram
    evaluation: EpisodeResult | None
    multipliers: list[float]

    @property
    def reward(self) -> float | None:
        """Mean held-out reward (``None``: not evaluated)."""
        return None if self.evaluation is None else self.evaluation.mean_reward

    @property
    def thresholds(self) -> list[float]:
        """Mean hidden threshold of each layer (chip units)."""
        return [float(np.mean(t)) for t in self.program.thresholds[:-1]]


@dataclass
class FitResult:
    """What :func:`fit_to_chip` did and found.

    :param env_id: environment
    :param backend: backend name
    :param grid: the grid the program was quantized on
    :param quantization: the quantization report (``None`` for a given program)
    :param seeds: the episode seeds
    :param eval_episodes: held-out episodes per evaluation
    :param float_evaluation: the float network before QAT on the held-out episodes (``None``: not evaluated)
    :param candidates: the evaluated programs by name: ``"naive"`` (as quantized, after QAT
        when QAT ran), ``"grid"``, ``"calibration"``
    :param chosen: the name of the best candidate (reward, then fewest synaptic events)
    :param energy: estimated energy per inference of the chosen program (``None``: not evaluated)
    :param qat: the QAT report, when QAT ran
    :param float_evaluation_after_qat: the float network after QAT, when QAT ran
    :param naive_before_qat: the program quantized before QAT, when QAT ran
    :param search: the grid search, when it ran
    :param calibration: the calibration, when it ran
    :param files: files written, by kind
    :param wall_time_s: wall time of the fit
    :param labels: plain values recorded first in the summary (e.g. a training stage's tag)
    """

    env_id: str
    backend: str
    grid: Grid
    quantization: QuantizationReport | None
    seeds: Seeds
    eval_episodes: int
    float_evaluation: EpisodeResult | None
    candidates: dict[str, Candidate]
    chosen: str
    energy: EnergyEstimate | None
    qat: QATReport | None = None
    float_evaluation_after_qat: EpisodeResult | None = None
    naive_before_qat: Candidate | None = None
    search: ThresholdSearchResult | None = None
    calibration: CalibrationResult | None = None
    files: dict[str, str] = field(default_factory=dict)
    wall_time_s: float = 0.0
    labels: dict[str, Any] = field(default_factory=dict)

    @property
    def program(self) -> ChipProgram:
        """The chosen program."""
        return self.candidates[self.chosen].program

    @property
    def best(self) -> Candidate:
        """The chosen candidate."""
        return self.candidates[self.chosen]

    def final(self) -> dict[str, dict[str, Any]]:
        """Held-out rewards and hidden thresholds (chip units) of the float network and every candidate."""
        out: dict[str, dict[str, Any]] = {
            "float": {"thresholds": None, "reward": _reward(self.float_evaluation)}
        }
        for name, candidate in self.candidates.items():
            out[name] = {"thresholds": candidate.thresholds, "reward": candidate.reward}
        return out

    def summary(self) -> dict[str, Any]:
        """Plain-data summary (what ``summary.json`` holds)."""
        naive = self.naive_before_qat or self.candidates["naive"]
        out: dict[str, Any] = {
            **self.labels,
            "env_id": self.env_id,
            "backend": self.backend,
            "lambdas": list(self.grid.lambdas),
            "centered_readout": self.grid.centered_readout,
            "weight_bits": list(self.grid.weight_bits),
            "state_bits": None if self.program.state_levels is None
            else [None if lv is None else state_bits(lv) for lv in self.program.state_levels],
            "quantization": self.quantization.to_dict() if self.quantization else None,
            "seeds": self.seeds.to_dict(),
            "eval_episodes": self.eval_episodes,
            "eval_seed": self.seeds.evaluation,
            "reward_float": _reward(self.float_evaluation),
            "reward_naive": naive.reward,
            "naive_thresholds": naive.thresholds,
        }
        if self.qat is not None:
            out["qat"] = self.qat.to_dict()
            out["reward_float_after_qat"] = _reward(self.float_evaluation_after_qat)
            out["reward_after_qat"] = self.candidates["naive"].reward
        if self.search is not None:
            out["grid_search"] = {
                "best_multipliers": self.search.best.multipliers,
                "best_search_reward": self.search.best.mean_reward,
                "backend_episodes": self.search.backend_episodes,
                "backend_inferences": self.search.backend_inferences,
                "wall_time_s": self.search.wall_time_s,
            }
        if self.calibration is not None:
            out["calibration"] = {
                "multipliers": self.calibration.multipliers,
                "agreement": self.calibration.agreement,
                "backend_inferences": self.calibration.backend_inferences,
                "wall_time_s": self.calibration.wall_time_s,
            }
        for name, candidate in self.candidates.items():
            out["reward_naive_final" if name == "naive" else f"reward_{name}"] = candidate.reward
        best = self.best
        out.update(
            final=self.final(),
            chosen=self.chosen,
            reward=best.reward,
            thresholds=best.thresholds,
            threshold_multipliers=[float(m) for m in best.multipliers],
            spikes_per_inference=None if best.evaluation is None else best.evaluation.hidden_spikes_per_inference,
            synaptic_events_per_inference=(
                None if best.evaluation is None else best.evaluation.synaptic_events_per_inference
            ),
            energy=None if self.energy is None else self.energy.to_dict(),
            wall_time_s=self.wall_time_s,
            files=dict(self.files),
        )
        return out


def _reward(evaluation: EpisodeResult | None) -> float | None:
    return None if evaluation is None else evaluation.mean_reward
