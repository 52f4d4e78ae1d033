"""Fitting a trained spiking DQN to the chip: quantize -> (QAT) -> thresholds -> evaluate -> save.

:func:`fit_to_chip` is the one implementation of that pipeline; the
:class:`~spiking_dqn.callbacks.HardwareAwareFineTuning` callback, the ``search``,
``calibrate`` and ``deploy`` commands, the recipes' deployment and the threshold
benchmark all call it. Every block of episodes it plays starts at a seed named in one
:class:`Seeds` value, so that the search, the QAT checks, the calibration recording and
the held-out evaluation never share episodes, and two fits with the same seeds face the
same episodes.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from stable_baselines3 import DQN

from spiking_dqn.hardware.backend import Backend, get_backend
from spiking_dqn.hardware.energy import EnergyEstimate, estimate
from spiking_dqn.hardware.program import ChipProgram
from spiking_dqn.qat import Mode, QATReport, quantization_aware_finetune, snap_model_to_grid
from spiking_dqn.quantization import Grid, LambdaSpec, QuantizationReport, quantize_network
from spiking_dqn.rollouts import EpisodeResult, backend_reward, float_reward, q_network
from spiking_dqn.search.calibration import CalibrationResult, calibrate_thresholds
from spiking_dqn.search.grid import (
    DEFAULT_STAGE1_GRID,
    DEFAULT_STAGE2_FACTORS,
    ThresholdSearchResult,
    check_grid,
    program_fingerprint,
    threshold_search,
)
from spiking_dqn.search.studies import HEARTBEAT_INTERVAL

Method = Literal["grid", "calibrate", "both", "none"]
#: Threshold methods of :func:`fit_to_chip`.
METHODS: tuple[str, ...] = ("grid", "calibrate", "both", "none")


@dataclass(frozen=True)
class Seeds:
    """The first environment seed of every block of episodes a fit plays (episode ``i`` of a block: ``start + i``).

    :param search: threshold-search episodes
    :param calibration: episodes that record the calibration observations
    :param qat_checks: episodes that check the quantized network during QAT
    :param evaluation: held-out episodes of the final evaluation (float, naive and fitted programs)
    """

    search: int = 0
    calibration: int = 10_000
    qat_checks: int = 50_000
    evaluation: int = 100_000

    @classmethod
    def from_base(cls, base: int) -> Seeds:
        """The default ranges shifted by ``base``."""
        return cls(base, base + 10_000, base + 50_000, base + 100_000)

    def to_dict(self) -> dict[str, int]:
        """Plain data."""
        return asdict(self)


@dataclass(frozen=True)
class QATSettings:
    """Quantization-aware fine-tuning of a fit (see :func:`~spiking_dqn.qat.quantization_aware_finetune`).

    :param steps: online environment steps or replay gradient steps (0: no QAT)
    :param mode: ``"online"`` or ``"replay"``
    :param learning_rate: learning rate (default: the model's final one, a tenth of it in replay mode)
    :param grid_pull: pull toward the grid per gradient step
    :param target_update_interval: replay mode: gradient steps between target updates
    :param check_episodes: episodes of each backend check; the best checked weights are kept
        (0: keep the weights QAT ends with)
    :param check_freq: steps between checks (default a quarter of ``steps``)
    """

    steps: int = 0
    mode: Mode = "online"
    learning_rate: float | None = None
    grid_pull: float = 0.002
    target_update_interval: int = 100
    check_episodes: int = 10
    check_freq: int | None = None


@dataclass(frozen=True)
class SearchSettings:
    """The two-stage threshold grid search of a fit (see :func:`~spiking_dqn.search.threshold_search`).

    :param stage1_grid: global threshold multipliers of stage 1
    :param stage2_factors: per-layer factors of stage 2
    :param episodes: episodes per evaluated point
    :param storage: Optuna storage URL (``None``: in memory)
    :param study_name: study name
    :param name_per_program: append the program's fingerprint to the study name, so a
        shared storage keeps one study per program
    :param heartbeat_interval: seconds between heartbeats of a running trial (shared storages)
    """

    stage1_grid: tuple[float, ...] = tuple(DEFAULT_STAGE1_GRID)
    stage2_factors: tuple[float, ...] = tuple(DEFAULT_STAGE2_FACTORS)
    episodes: int = 10
    storage: str | None = None
    study_name: str = "threshold-search"
    name_per_program: bool = False
    heartbeat_interval: int = HEARTBEAT_INTERVAL

    def __post_init__(self) -> None:
        object.__setattr__(self, "stage1_grid", tuple(check_grid(self.stage1_grid, "stage1_grid")))
        object.__setattr__(self, "stage2_factors", tuple(check_grid(self.stage2_factors, "stage2_factors")))


@dataclass(frozen=True)
class CalibrationSettings:
    """The threshold calibration of a fit (see :func:`~spiking_dqn.search.calibrate_thresholds`).

    :param n_observations: observations to calibrate on
    :param objective: ``"rates"`` or ``"agreement"``
    :param granularity: ``"neuron"`` or ``"layer"``
    :param observations: observations to use instead of recording the float policy's
    """

    n_observations: int = 128
    objective: Literal["rates", "agreement"] = "rates"
    granularity: Literal["neuron", "layer"] = "neuron"
    observations: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass
class Candidate:
    """One program a fit considered, evaluated on the held-out episodes.

    :param program: the chip program
    :param evaluation: its held-out episodes on the backend
    :param multipliers: its hidden thresholds over the quantized program's, per layer
    """

    program: ChipProgram
    evaluation: EpisodeResult
    multipliers: list[float]

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
    :param float_evaluation: the float network before QAT on the held-out episodes
    :param candidates: the evaluated programs by name: ``"naive"`` (as quantized, after QAT
        when QAT ran), ``"grid"``, ``"calibration"``
    :param chosen: the name of the best candidate (reward, then fewest synaptic events)
    :param energy: estimated energy per inference of the chosen program
    :param qat: the QAT report, when QAT ran
    :param float_evaluation_after_qat: the float network after QAT, when QAT ran
    :param naive_before_qat: the program quantized before QAT, when QAT ran
    :param search: the grid search, when it ran
    :param calibration: the calibration, when it ran
    :param files: files written, by kind
    :param wall_time_s: wall time of the fit
    """

    env_id: str
    backend: str
    grid: Grid
    quantization: QuantizationReport | None
    seeds: Seeds
    eval_episodes: int
    float_evaluation: EpisodeResult
    candidates: dict[str, Candidate]
    chosen: str
    energy: EnergyEstimate
    qat: QATReport | None = None
    float_evaluation_after_qat: EpisodeResult | None = None
    naive_before_qat: Candidate | None = None
    search: ThresholdSearchResult | None = None
    calibration: CalibrationResult | None = None
    files: dict[str, str] = field(default_factory=dict)
    wall_time_s: float = 0.0

    @property
    def program(self) -> ChipProgram:
        """The chosen program."""
        return self.candidates[self.chosen].program

    @property
    def best(self) -> Candidate:
        """The chosen candidate."""
        return self.candidates[self.chosen]

    def summary(self) -> dict[str, Any]:
        """Plain-data summary (what ``summary.json`` holds)."""
        naive = self.naive_before_qat or self.candidates["naive"]
        out: dict[str, Any] = {
            "env_id": self.env_id,
            "backend": self.backend,
            "lambdas": list(self.grid.lambdas),
            "centered_readout": self.grid.centered_readout,
            "quantization": self.quantization.to_dict() if self.quantization else None,
            "seeds": self.seeds.to_dict(),
            "eval_episodes": self.eval_episodes,
            "eval_seed": self.seeds.evaluation,
            "reward_float": self.float_evaluation.mean_reward,
            "reward_naive": naive.evaluation.mean_reward,
            "naive_thresholds": naive.thresholds,
        }
        if self.qat is not None:
            out["qat"] = self.qat.to_dict()
            out["reward_float_after_qat"] = self.float_evaluation_after_qat.mean_reward
            out["reward_after_qat"] = self.candidates["naive"].evaluation.mean_reward
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
            out["reward_naive_final" if name == "naive" else f"reward_{name}"] = candidate.evaluation.mean_reward
        best = self.best
        out.update(
            chosen=self.chosen,
            reward=best.evaluation.mean_reward,
            thresholds=best.thresholds,
            threshold_multipliers=[float(m) for m in best.multipliers],
            spikes_per_inference=best.evaluation.hidden_spikes_per_inference,
            synaptic_events_per_inference=best.evaluation.synaptic_events_per_inference,
            energy=self.energy.to_dict(),
            wall_time_s=self.wall_time_s,
            files=dict(self.files),
        )
        return out


def _check_count(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def fit_to_chip(
    model: DQN,
    env_id: str,
    *,
    lam: LambdaSpec | Grid = None,
    program: ChipProgram | None = None,
    qat: QATSettings = QATSettings(),
    method: Method = "grid",
    search: SearchSettings = SearchSettings(),
    calibration: CalibrationSettings = CalibrationSettings(),
    backend: str | Backend = "emulator",
    seeds: Seeds = Seeds(),
    eval_episodes: int = 20,
    out: str | Path | None = None,
    save_model: bool = False,
    progress: bool = False,
) -> FitResult:
    """Fit a trained spiking DQN to the chip: quantize, (QAT), choose thresholds, evaluate, save.

    1. Evaluate the float network on ``eval_episodes`` held-out episodes (``seeds.evaluation``).
    2. Quantize it on the grid of ``lam`` (or take ``program`` as given).
    3. With ``qat.steps > 0``: quantization-aware fine-tuning on that grid (checked on the
       backend over ``seeds.qat_checks`` episodes, the best weights kept), then the kept
       weights are snapped to the grid (:func:`~spiking_dqn.qat.snap_model_to_grid`: the
       model is changed in place and becomes the float twin of its program) and requantized.
    4. Thresholds: ``"grid"`` (two-stage search on ``seeds.search`` episodes), ``"calibrate"``
       (rates of the float network on observations it visits from ``seeds.calibration``),
       ``"both"`` or ``"none"``.
    5. Evaluate every candidate program on the held-out episodes and choose the best reward
       (fewest synaptic events on ties).
    6. With ``out``: write the search and calibration files, ``best_program.npz``,
       ``summary.json`` and, with ``save_model`` after QAT, ``model_qat.zip``.

    :param model: an SB3 ``DQN`` with ``SpikingDQNPolicy``
    :param env_id: Gymnasium id
    :param lam: the grid or lambda specification (see :func:`~spiking_dqn.quantization.resolve_grid`;
        ``None``: the network's own grid, else ``"auto"``)
    :param program: a ready chip program to fit instead of quantizing the model (no QAT then)
    :param qat: quantization-aware fine-tuning settings
    :param method: threshold method: ``"grid"``, ``"calibrate"``, ``"both"`` or ``"none"``
    :param search: grid-search settings
    :param calibration: calibration settings
    :param backend: backend name or object
    :param seeds: the episode seeds
    :param eval_episodes: held-out episodes per evaluation
    :param out: folder for the files (``None``: nothing is written)
    :param save_model: with ``out``, save the snapped model as ``model_qat.zip`` when QAT kept its weights
    :param progress: show progress bars
    :raises ValueError: bad arguments (before any work)
    """
    start = time.perf_counter()
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    _check_count(qat.steps, "qat steps", 0)
    _check_count(eval_episodes, "eval_episodes", 1)
    if program is not None and qat.steps:
        raise ValueError("QAT trains the model, so it cannot start from a given program")
    net = q_network(model)
    runner = get_backend(backend)
    folder = Path(out) if out is not None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)

    def evaluate(candidate: ChipProgram) -> EpisodeResult:
        return backend_reward(candidate, env_id, eval_episodes, seed=seeds.evaluation, backend=runner)

    was_training = net.training
    net.eval()
    try:
        float_before = float_reward(net, env_id, eval_episodes, seed=seeds.evaluation)
        report: QuantizationReport | None = None
        if program is None:
            program, report = quantize_network(net, lam)
        grid = Grid(tuple(program.lambdas), centered_readout=program.centered_readout)
        n_hidden = len(program.thresholds) - 1
        naive = Candidate(program, evaluate(program), [1.0] * n_hidden)
        qat_report, float_after, naive_before = None, None, None
        if qat.steps:
            qat_report = quantization_aware_finetune(
                model, grid, qat.steps, mode=qat.mode, learning_rate=qat.learning_rate, grid_pull=qat.grid_pull,
                target_update_interval=qat.target_update_interval, env_id=env_id, seed=seeds.search,
                check_episodes=qat.check_episodes, check_seed=seeds.qat_checks, check_freq=qat.check_freq,
                backend=runner, progress_bar=progress,
            )
            if qat_report.kept:
                snap_model_to_grid(model, grid)  # the network QAT trained is the fake-quantized one
                if folder is not None and save_model:
                    model.save(folder / "model_qat.zip")
            net.eval()
            program, report = quantize_network(net, grid)
            float_after = float_reward(net, env_id, eval_episodes, seed=seeds.evaluation)
            naive_before, naive = naive, Candidate(program, evaluate(program), [1.0] * n_hidden)
        candidates = {"naive": naive}
        search_result, calibration_result = None, None
        if method in ("grid", "both"):
            study = search.study_name
            if search.name_per_program:
                study = f"{study}-{program_fingerprint(program)[:12]}"
            search_result = threshold_search(
                program, env_id, backend=runner, stage1_grid=search.stage1_grid,
                stage2_factors=search.stage2_factors, n_episodes=search.episodes, seed=seeds.search,
                storage=search.storage, study_name=study, heartbeat_interval=search.heartbeat_interval,
                progress_bar=progress, output_dir=folder,
            )
            candidates["grid"] = Candidate(
                search_result.program, evaluate(search_result.program), search_result.best.multipliers
            )
        if method in ("calibrate", "both"):
            calibration_result = calibrate_thresholds(
                net, program, calibration.observations, env_id=env_id, n_observations=calibration.n_observations,
                backend=runner, objective=calibration.objective, granularity=calibration.granularity,
                seed=seeds.calibration, progress_bar=progress,
            )
            candidates["calibration"] = Candidate(
                calibration_result.program, evaluate(calibration_result.program), calibration_result.multipliers
            )
    finally:
        if was_training:
            net.train()
    chosen = min(
        candidates,
        key=lambda k: (-candidates[k].evaluation.mean_reward, candidates[k].evaluation.synaptic_events_per_inference),
    )
    best = candidates[chosen]
    result = FitResult(
        env_id=env_id,
        backend=getattr(runner, "name", type(runner).__name__),
        grid=grid,
        quantization=report,
        seeds=seeds,
        eval_episodes=eval_episodes,
        float_evaluation=float_before,
        candidates=candidates,
        chosen=chosen,
        energy=estimate(np.asarray([best.evaluation.synaptic_events_per_inference]), best.program),
        qat=qat_report,
        float_evaluation_after_qat=float_after,
        naive_before_qat=naive_before,
        search=search_result,
        calibration=calibration_result,
    )
    result.wall_time_s = time.perf_counter() - start
    if folder is not None:
        _save(result, folder, save_model)
    return result


def _save(result: FitResult, folder: Path, save_model: bool) -> None:
    """Write a fit's files into ``folder`` (see :func:`fit_to_chip`) and record them in ``result.files``."""
    if result.search is not None:
        result.files.update({f"search_{k}": v for k, v in result.search.files.items() if k != "program"})
    if result.calibration is not None:
        result.files.update({f"calibration_{k}": v for k, v in result.calibration.save(folder).items()})
    if save_model and result.qat is not None and result.qat.kept:
        result.files["model"] = str(folder / "model_qat.zip")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result.program.save(folder / "best_program.npz")
    result.files["program"] = str(folder / "best_program.npz")
    result.files["summary"] = str(folder / "summary.json")
    (folder / "summary.json").write_text(json.dumps(result.summary(), indent=2, default=float) + "\n")


__all__ = [
    "METHODS",
    "Candidate",
    "CalibrationSettings",
    "FitResult",
    "QATSettings",
    "SearchSettings",
    "Seeds",
    "fit_to_chip",
]
