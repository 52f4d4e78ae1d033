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
        when QAT ran), ``"grid"``, ``"calibration"``; when QAT ran (and the fit evaluates),
        the guard's ``"ptq_naive"`` and ``"ptq"``: quantized from the weights before QAT, as
        they are and with calibrated thresholds
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

    @property
    def reward_float(self) -> float | None:
        """The float network before fine-tuning on the held-out episodes (``None``: not evaluated)."""
        return _reward(self.float_evaluation)

    @property
    def reward_chip(self) -> float | None:
        """The chosen program on the same held-out episodes (``None``: not evaluated)."""
        return self.best.reward

    @property
    def gap(self) -> float | None:
        """``reward_float - reward_chip``: the reward the chip loses on the same episodes (``None``: not evaluated)."""
        return self._paired_gap()[0]

    @property
    def gap_noise(self) -> float | None:
        """The noise of :attr:`gap`: twice the standard error of the paired per-episode difference.

        With ``d_i = float_i - chip_i`` on held-out episode ``i`` (the same env seed for both)
        over ``n`` episodes, ``2 * std(d, ddof=1) / sqrt(n)``: about a 95% confidence half-width
        of the gap (0 for one episode; ``None``: not evaluated).
        """
        return self._paired_gap()[1]

    @property
    def gap_exceeds_noise(self) -> bool:
        """Whether the chip loses more reward than :attr:`gap_noise` explains (False when not evaluated)."""
        gap, noise = self._paired_gap()
        return bool(gap is not None and noise is not None and gap > noise)

    def gap_line(self) -> str:
        """One line: the float and chip rewards, their gap and its noise, and whether the gap exceeds it."""
        gap, noise = self._paired_gap()
        if gap is None or noise is None:
            return "float and chip rewards: not evaluated (no held-out episodes)"
        line = (f"float {self.reward_float:.2f}, chip {self.reward_chip:.2f} ({self.chosen}) on the same "
                f"{self.eval_episodes} held-out episodes (seeds {self.seeds.evaluation}..): gap {gap:.2f} "
                f"+- {noise:.2f} (2 standard errors)")
        if gap > noise:
            return f"{line}; the chip loses more than the episodes' noise: more fine-tuning or another recipe may help"
        return line

    def gap_record(self) -> dict[str, Any]:
        """Plain data: the chosen program, float and chip rewards, their gap and its noise, each candidate's reward."""
        return {
            "chosen": self.chosen,
            "eval_episodes": self.eval_episodes,
            "eval_seed": self.seeds.evaluation,
            "reward_float": self.reward_float,
            "reward_chip": self.reward_chip,
            "gap": self.gap,
            "gap_noise": self.gap_noise,
            "gap_exceeds_noise": self.gap_exceeds_noise,
            "candidates": {name: candidate.reward for name, candidate in self.candidates.items()},
        }

    def _paired_gap(self) -> tuple[float | None, float | None]:
        chip = self.best.evaluation
        if self.float_evaluation is None or chip is None:
            return None, None
        return paired_gap(self.float_evaluation.rewards, chip.rewards)

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
            "reward_chip": self.reward_chip,
            "gap": self.gap,
            "gap_noise": self.gap_noise,
            "gap_exceeds_noise": self.gap_exceeds_noise,
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


def paired_gap(float_rewards: list[float], chip_rewards: list[float]) -> tuple[float, float]:
    """The mean of ``float_i - chip_i`` over the same episodes and its noise, ``2 * std(ddof=1) / sqrt(n)``.

    :raises ValueError: not one chip reward per float reward
    """
    if len(float_rewards) != len(chip_rewards) or not float_rewards:
        raise ValueError(f"paired rewards of the same episodes needed, got {len(float_rewards)} and {len(chip_rewards)}"
                         )
    diff = np.asarray(float_rewards, dtype=float) - np.asarray(chip_rewards, dtype=float)
    noise = 2.0 * float(np.std(diff, ddof=1)) / float(np.sqrt(len(diff))) if len(diff) > 1 else 0.0
    return float(np.mean(diff)), noise


def _reward(evaluation: EpisodeResult | None) -> float | None:
    return None if evaluation is None else evaluation.mean_reward
