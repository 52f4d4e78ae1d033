"""What a fit to the chip does: its episode seeds and the settings of its QAT, search and calibration."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TypeVar

import numpy as np
from stable_baselines3 import DQN

from spiking_dqn.hardware.program import ChipProgram
from spiking_dqn.network import SpikingQNetwork
from spiking_dqn.rollouts import q_network
from spiking_dqn.semantics.checks import check_int
from spiking_dqn.semantics.levels import MAX_STATE_BITS
from spiking_dqn.qat import Mode, check_qat_values
from spiking_dqn.quantization.levels import LEVEL_SCHEMES, LevelScheme
from spiking_dqn.search.grid import DEFAULT_STAGE1_GRID, DEFAULT_STAGE2_FACTORS, check_grid
from spiking_dqn.search.storage import HEARTBEAT_INTERVAL

Method = Literal["grid", "calibrate", "both", "none"]
Selection = Literal["best", "significant"]
#: How :func:`~spiking_dqn.pipeline.fit_to_chip` chooses among its candidates (see :func:`~spiking_dqn.pipeline.steps.choose`).
SELECTIONS: tuple[str, ...] = ("best", "significant")
#: Threshold methods of :func:`~spiking_dqn.pipeline.fit_to_chip`.
METHODS: tuple[str, ...] = ("grid", "calibrate", "both", "none")
#: Held-out episodes of each evaluation of a fit, by default. The fit chooses its program on
#: them (and guards a fine-tuning with the plain post-training program on them), so they must
#: tell programs apart: a best-of-20 overrates a program that was lucky on 20 episodes (the
#: shipped CartPole seed report found 20-episode choices 10 to 40 reward off on 100), while
#: 100 episodes give a paired float-chip gap with a noise (two standard errors) of about a
#: reward point on the classic-control tasks, for a few seconds of emulator time.
EVAL_EPISODES = 100


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

    :param steps: online environment steps, or replay or distill gradient steps (0: no QAT)
    :param mode: ``"distill"`` (the default: the quantized network learns the float network's
        answers, :mod:`spiking_dqn.distill`; it cannot unlearn the policy as DQN's noisy TD
        updates can), ``"online"`` or ``"replay"`` (DQN's TD updates: today's QAT, which the
        shipped agents were fine-tuned with)
    :param learning_rate: learning rate (default: the model's final one, a tenth of it in replay mode; a
        schedule that ends at 0 stands in with a tenth of its first rate)
    :param grid_pull: pull toward the grid per gradient step
    :param target_update_interval: replay mode: gradient steps between target updates
    :param check_episodes: episodes of each backend check; the best checked weights are kept
        (0: keep the weights QAT ends with)
    :param check_freq: steps between checks (default a quarter of ``steps``)
    """

    steps: int = 0
    mode: Mode = "distill"
    learning_rate: float | None = None
    grid_pull: float = 0.002
    target_update_interval: int = 100
    check_episodes: int = 10
    check_freq: int | None = None

    def __post_init__(self) -> None:
        check_qat_values(self.steps, self.mode, self.grid_pull, self.target_update_interval, self.learning_rate)


#: The fine-tuning a fit runs when it is given none and the model needs one (:func:`default_qat`):
#: 2000 gradient steps of distillation from the float network, the variant that kept the float
#: agent's reward on every measured training seed (``benchmarks/results/robustness.md``).
ROBUST_QAT = QATSettings(steps=2000, mode="distill")


def default_qat(model: DQN | SpikingQNetwork, program: ChipProgram | None, eval_episodes: int) -> QATSettings:
    """The fine-tuning of a fit that names none (``qat=None``: ``fit_to_chip``, the callback, ``deploy``).

    :data:`ROBUST_QAT` when the fit can fine-tune and guard it: an SB3 ``DQN`` whose network is
    not on a grid yet (not fit to the chip yet), no ``program`` given, and held-out episodes
    to choose on. Else none (``QATSettings()``): a bare network, a model that carries its grid
    (a fit's ``model.zip``, the shipped agents), a given program, a fit that plays no episode.
    An explicit ``QATSettings()`` always means none.

    :param model: the model of the fit
    :param program: the fit's given program, if any
    :param eval_episodes: its held-out episodes
    """
    fits = isinstance(model, DQN) and program is None and eval_episodes > 0
    return ROBUST_QAT if fits and q_network(model).grid is None else QATSettings()


@dataclass(frozen=True)
class StateSettings:
    """Quantized membrane state of a fit (SQUAT; see :mod:`spiking_dqn.quantization.levels`).

    The hidden populations get ``2^bits`` levels over the membrane range the program
    reaches (before any state quantization) on observations the float policy visits; with
    QAT the same levels (in the network's units) are in the training forward, so QAT is
    SQUAT. The output integrator keeps float32 state.

    :param bits: bits of membrane state, 1 .. 16 (``None``: float32 state, the default)
    :param scheme: ``"threshold_centered"`` (dense near the threshold) or ``"uniform"``
    :param observations: observations recorded (from the calibration seeds) for the ranges
    :raises ValueError: bad bits, an unknown scheme, fewer than one observation
    """

    bits: int | None = None
    scheme: LevelScheme = "threshold_centered"
    observations: int = 512

    def __post_init__(self) -> None:
        if self.bits is not None:
            check_int(self.bits, "state bits", 1, MAX_STATE_BITS, what=f"an integer in 1 .. {MAX_STATE_BITS} or None")
        if self.scheme not in LEVEL_SCHEMES:
            raise ValueError(f"state level scheme must be one of {LEVEL_SCHEMES}, got {self.scheme!r}")
        check_int(self.observations, "state observations", minimum=1)


@dataclass(frozen=True)
class SearchSettings:
    """The two-stage threshold grid search of a fit (see :func:`~spiking_dqn.search.threshold_search`).

    :param stage1_grid: global threshold multipliers of stage 1
    :param stage2_factors: per-layer factors of stage 2
    :param episodes: episodes per evaluated point
    :param storage: Optuna storage URL (``None``: in memory)
    :param study_name: prefix of the study names (the search adds the program's key, so a
        shared storage keeps one study per program)
    :param heartbeat_interval: seconds between heartbeats of a running trial (shared storages)
    """

    stage1_grid: tuple[float, ...] = tuple(DEFAULT_STAGE1_GRID)
    stage2_factors: tuple[float, ...] = tuple(DEFAULT_STAGE2_FACTORS)
    episodes: int = 10
    storage: str | None = None
    study_name: str = "threshold-search"
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




S = TypeVar("S", QATSettings, StateSettings, SearchSettings, CalibrationSettings)


def as_settings(value: S | Mapping[str, Any] | None, kind: type[S]) -> S:
    """``value`` as settings of ``kind``: a mapping (from an rl-zoo YAML file, say) becomes one, None the defaults.

    :param value: settings, a mapping of their fields, or None
    :param kind: the settings class
    :raises TypeError: another type, or a key that is no field of ``kind``
    :raises ValueError: what ``kind`` refuses
    """
    if value is None:
        return kind()
    if isinstance(value, kind):
        return value
    if isinstance(value, Mapping):
        return kind(**value)
    raise TypeError(f"expected {kind.__name__} or a mapping of its fields, got {type(value).__name__}")
