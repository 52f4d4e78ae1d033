"""The steps of :func:`~spiking_dqn.pipeline.fit_to_chip`: quantize, fine-tune, choose thresholds, guard, rank.

Every step takes the :class:`Run` the fit shares (the model, its network, the episodes it
plays and where) and returns evaluated :class:`~spiking_dqn.pipeline.result.Candidate` programs.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch as th
from stable_baselines3 import DQN

from spiking_dqn.grid import Grid
from spiking_dqn.hardware.backend import Backend
from spiking_dqn.hardware.program import ChipProgram
from spiking_dqn.network import SpikingQNetwork
from spiking_dqn.pipeline.result import Candidate, paired_gap
from spiking_dqn.pipeline.settings import CalibrationSettings, QATSettings, SearchSettings, Seeds, StateSettings
from spiking_dqn.qat import QATReport, quantization_aware_finetune
from spiking_dqn.quantization import LambdaSpec, QuantizationReport, WeightBitsSpec, quantize_network
from spiking_dqn.quantization.digest import model_digest
from spiking_dqn.quantization.levels import network_levels, state_levels_for
from spiking_dqn.quantization.snap import snap_model_to_grid
from spiking_dqn.rollouts import EpisodeResult, backend_reward, float_reward, record_observations
from spiking_dqn.search.calibration import CalibrationResult, calibrate_thresholds
from spiking_dqn.search.grid import threshold_search
from spiking_dqn.search.results import ThresholdSearchResult
from spiking_dqn.semantics.thresholds import scale_thresholds


def scale_hidden_thresholds(
    program: ChipProgram, scale: float | Sequence[float] | None
) -> tuple[ChipProgram, list[float]]:
    """The program with its hidden thresholds multiplied by ``scale`` (one value, or one per hidden layer)."""
    n_hidden = len(program.thresholds) - 1
    if scale is None:
        return program, [1.0] * n_hidden
    scales = [float(s) for s in scale] if isinstance(scale, Sequence) else [float(scale)] * n_hidden
    if len(scales) != n_hidden or not all(np.isfinite(s) and s > 0 for s in scales):
        raise ValueError(f"threshold_scale needs one positive value or {n_hidden} (one per hidden layer), got {scale!r}")
    return program.with_thresholds(scale_thresholds(program.thresholds, scales)), scales


@dataclasses.dataclass(frozen=True)
class Run:
    """What every step of one fit shares: the model, its network, the episodes it plays and where."""

    model: DQN | SpikingQNetwork
    net: SpikingQNetwork
    env_id: str | None
    runner: Backend
    seeds: Seeds
    eval_episodes: int
    encoder_seed: int
    threshold_scale: float | Sequence[float] | None
    progress: bool

    def evaluate(self, program: ChipProgram) -> EpisodeResult | None:
        """``program`` on the held-out episodes (None when the fit plays none)."""
        if not self.eval_episodes:
            return None
        return backend_reward(program, self.env_id, self.eval_episodes, seed=self.seeds.evaluation, backend=self.runner)

    def evaluate_float(self) -> EpisodeResult | None:
        """The float network on the held-out episodes (None when the fit plays none)."""
        if not self.eval_episodes:
            return None
        return float_reward(self.net, self.env_id, self.eval_episodes, seed=self.seeds.evaluation)

    def candidate(self, program: ChipProgram, multipliers: list[float]) -> Candidate:
        """``program`` evaluated on the held-out episodes."""
        return Candidate(program, self.evaluate(program), multipliers)


def quantize_step(
    run: Run,
    program: ChipProgram | None,
    lam: LambdaSpec | Grid,
    weight_bits: WeightBitsSpec,
    state: StateSettings,
    squat: bool,
) -> tuple[ChipProgram, QuantizationReport | None, Grid, Candidate]:
    """Step 1: the naive program: quantized (unless given), thresholds scaled, state levels (and, for QAT, SQUAT's).

    :return: the program, the quantization report (None for a given program), its grid and the naive candidate
    """
    report: QuantizationReport | None = None
    if program is None:
        program, report = quantize_network(run.net, lam, seed=run.encoder_seed, weight_bits=weight_bits)
    grid = Grid.of_program(program)
    program, scales = scale_hidden_thresholds(program, run.threshold_scale)
    if state.bits is not None:
        observations = record_observations(run.net, run.env_id, state.observations, seed=run.seeds.calibration)
        levels = state_levels_for(program, observations, state.bits, scheme=state.scheme)
        program = dataclasses.replace(program, state_levels=levels)
        if squat:  # the same levels in the training forward of both networks
            for network in (run.net, run.model.policy.q_net_target.q_net):
                network.set_state_levels(network_levels(program, grid.lambdas))
    return program, report, grid, run.candidate(program, scales)


def finetune_step(
    run: Run, grid: Grid, qat: QATSettings
) -> tuple[QATReport, ChipProgram, QuantizationReport, Candidate, EpisodeResult | None]:
    """Step 2: QAT on ``grid`` (best checked weights kept and snapped to it, else its grid recorded), requantized.

    :return: the QAT report, the new naive program, its quantization report and candidate,
        and the float network's held-out reward after QAT
    """
    qat_report = quantization_aware_finetune(
        run.model, grid, qat.steps, mode=qat.mode, learning_rate=qat.learning_rate, grid_pull=qat.grid_pull,
        target_update_interval=qat.target_update_interval, env_id=run.env_id, seed=run.seeds.search,
        check_episodes=qat.check_episodes, check_seed=run.seeds.qat_checks, check_freq=qat.check_freq,
        backend=run.runner, progress_bar=run.progress, observation_seed=run.seeds.calibration,
    )
    if qat_report.kept:
        snap_model_to_grid(run.model, grid)  # the network QAT trained is the fake-quantized one
    else:  # QAT's checks put the weights before it back: fit to the grid all the same (lam=None deploys on it)
        for network in (run.net, run.model.policy.q_net_target.q_net):
            Twin(grid).apply(network)
    run.net.eval()
    program, report = quantize_network(run.net, grid, seed=run.encoder_seed)
    program, scales = scale_hidden_thresholds(program, run.threshold_scale)
    float_after = run.evaluate_float()
    return qat_report, program, report, run.candidate(program, scales), float_after


def threshold_candidates(
    run: Run,
    program: ChipProgram,
    naive: Candidate,
    method: str,
    search: SearchSettings,
    calibration: CalibrationSettings,
    folder: Path | None,
) -> tuple[dict[str, Candidate], ThresholdSearchResult | None, CalibrationResult | None]:
    """Step 3: the candidates: the naive program, the grid search's and the calibration's (by ``method``).

    :return: the candidates by name, the search result and the calibration result (None when not run)
    """
    candidates = {"naive": naive}
    search_result, calibration_result = None, None
    if method in ("grid", "both"):
        search_result = threshold_search(
            program, run.env_id, backend=run.runner, stage1_grid=search.stage1_grid,
            stage2_factors=search.stage2_factors, n_episodes=search.episodes, seed=run.seeds.search,
            storage=search.storage, study_name=search.study_name, heartbeat_interval=search.heartbeat_interval,
            progress_bar=run.progress, output_dir=folder,
        )
        candidates["grid"] = run.candidate(search_result.program, search_result.best.multipliers)
    if method in ("calibrate", "both"):
        calibration_result, candidates["calibration"] = calibrated(run, program, calibration)
    return candidates, search_result, calibration_result


def calibrate(run: Run, program: ChipProgram, calibration: CalibrationSettings) -> CalibrationResult:
    """``program`` with thresholds calibrated to the rates of the run's float network."""
    return calibrate_thresholds(
        run.net, program, calibration.observations, env_id=run.env_id, n_observations=calibration.n_observations,
        backend=run.runner, objective=calibration.objective, granularity=calibration.granularity,
        seed=run.seeds.calibration, progress_bar=run.progress,
    )


def calibrated(run: Run, program: ChipProgram, calibration: CalibrationSettings) -> tuple[CalibrationResult, Candidate]:
    """``program`` with thresholds calibrated to the rates of the run's float network, and its candidate."""
    result = calibrate(run, program, calibration)
    return result, run.candidate(result.program, result.multipliers)


@dataclasses.dataclass(frozen=True)
class Twin:
    """What a network needs to rebuild a program: the grid recorded on it and, when given, its hidden thresholds.

    :param grid: the program's grid (recorded as ``net.grid``: ``lam=None`` deploys on it)
    :param thresholds: the float threshold of each hidden layer (``None``: the network's own)
    """

    grid: Grid
    thresholds: tuple[float, ...] | None = None

    def apply(self, net: SpikingQNetwork) -> None:
        """Record the grid on ``net`` and set its hidden thresholds (in place)."""
        net.grid = self.grid
        if self.thresholds is not None:
            with th.no_grad():
                for lif, value in zip(net.lif, self.thresholds):
                    lif.threshold.fill_(value)

    def program(self, run: Run, program: ChipProgram) -> ChipProgram:
        """``program`` (quantized from ``run.net`` on the grid) as quantized from ``run.net`` with this applied."""
        twin = copy.deepcopy(run.net)
        self.apply(twin)
        if self.thresholds is None:  # the same weights and thresholds: only the model's digest changes
            return dataclasses.replace(program, model_digest=model_digest(twin))
        return quantize_network(twin, self.grid, seed=run.encoder_seed)[0]

    @classmethod
    def carrying(cls, run: Run, grid: Grid, calibrated: ChipProgram) -> Twin | None:
        """The twin that carries ``calibrated``'s hidden thresholds, if the float network can hold them.

        It can when they are one per hidden layer (``granularity="layer"``) and no threshold
        scale was applied: a float threshold ``t / lambda`` per layer (the program rebuilt
        from it has ``float32(lambda * (t / lambda))``, which may differ from ``t`` in the
        last bit: the candidate is that program).
        """
        hidden = calibrated.thresholds[:-1]
        if run.threshold_scale is not None or any(np.any(t != t.flat[0]) for t in hidden):
            return None
        thresholds = tuple(float(np.float32(float(t.flat[0]) / lam)) for t, lam in zip(hidden, grid.lambdas))
        return cls(grid, thresholds)


@dataclasses.dataclass
class Guard:
    """What a fine-tuning must beat: the plain post-training programs, and the weights they were quantized from.

    Taken before fine-tuning: ``"ptq_naive"`` (the program as quantized) and ``"ptq"`` (its
    thresholds calibrated, :func:`~spiking_dqn.search.calibrate_thresholds`), both evaluated on
    the held-out episodes (none when the fit plays none), and a copy of the policy's weights
    and optimizer state. When the fit chooses one of them, :meth:`restore` puts the weights
    back and applies the candidate's :class:`Twin` (its grid recorded on the networks; for
    ``"ptq"`` calibrated per layer, its thresholds in the float neurons), so that the saved
    model deploys (``lam=None``) to the program the fit returns. Per-neuron thresholds
    (the default calibration) have no place in the float network: the model then deploys
    to ``"ptq_naive"``'s program.

    :param candidates: the guard's candidates by name
    :param twins: what each candidate's model carries (see :class:`Twin`)
    :param policy_state: the policy's ``state_dict`` before fine-tuning
    :param optimizer_state: its optimizer's
    """

    candidates: dict[str, Candidate]
    twins: dict[str, Twin]
    policy_state: dict
    optimizer_state: dict

    @classmethod
    def take(cls, run: Run, program: ChipProgram, naive: Candidate, calibration: CalibrationSettings) -> Guard:
        """The guard of ``program`` (quantized before fine-tuning; ``naive`` its candidate)."""
        policy = run.model.policy
        candidates, twins = {}, {}
        if run.eval_episodes:
            grid = Grid.of_program(program)
            twins["ptq_naive"] = Twin(grid)
            candidates["ptq_naive"] = Candidate(twins["ptq_naive"].program(run, naive.program), naive.evaluation,
                                                naive.multipliers)
            result = calibrate(run, program, calibration)
            twin = Twin.carrying(run, grid, result.program)
            twins["ptq"] = twin or twins["ptq_naive"]
            ptq = result.program if twin is None else twin.program(run, program)
            candidates["ptq"] = run.candidate(ptq, result.multipliers)
        return cls(candidates, twins, copy.deepcopy(policy.state_dict()), copy.deepcopy(policy.optimizer.state_dict()))

    def restore(self, run: Run, qat: QATReport, chosen: str) -> QATReport:
        """Load the weights before fine-tuning, apply ``chosen``'s twin; the QAT report, saying that QAT's were not kept."""
        policy = run.model.policy
        policy.load_state_dict(self.policy_state)
        policy.optimizer.load_state_dict(self.optimizer_state)
        for net in (policy.q_net.q_net, policy.q_net_target.q_net):
            self.twins[chosen].apply(net)
        return dataclasses.replace(qat, kept=False)


def rank(candidate: Candidate) -> tuple[float, float]:
    """Step 4's order: the best held-out reward first, fewest synaptic events on ties (unevaluated: all equal)."""
    if candidate.evaluation is None:
        return (0.0, 0.0)
    return (-candidate.reward, candidate.evaluation.synaptic_events_per_inference)


def choose(candidates: dict[str, Candidate], selection: str) -> str:
    """Step 4: the name of the chosen candidate.

    ``"best"``: the first in :func:`rank`'s order. ``"significant"``: the network's own
    program (``"naive"``: the one its float twin deploys to) unless the best one beats it by
    more than the noise of their paired difference on the held-out episodes
    (:func:`~spiking_dqn.pipeline.result.paired_gap`: two standard errors), so that a
    candidate does not win on the luck of the episodes the fit chose on; and the best one
    whenever ``"naive"`` does worse than the guard's ``"ptq"`` (the fit's guarantee).

    :param candidates: the evaluated candidates by name
    :param selection: ``"best"`` or ``"significant"``
    """
    best = min(candidates, key=lambda k: rank(candidates[k]))
    own, ptq = candidates.get("naive"), candidates.get("ptq")
    if selection == "best" or best == "naive" or own is None or own.evaluation is None:
        return best
    if ptq is not None and ptq.reward is not None and ptq.reward > own.reward:
        return best
    lead, noise = paired_gap(candidates[best].evaluation.rewards, own.evaluation.rewards)
    return best if lead > noise else "naive"
