"""Quantization-aware fine-tuning (QAT) of a spiking DQN for the chip's integer weights (2 to 8 bits).

:func:`quantization_aware_finetune` continues DQN training of a model with its Q-network
(and target network) in fake-quantized mode
(:meth:`~spiking_dqn.network.SpikingQNetwork.set_fake_quantization`): the forward pass
computes with the chip's weights (:meth:`~spiking_dqn.grid.Grid.fake_quantize`) and the
gradient reaches the float weights through a straight-through estimator, so the float
weights adapt to what the grid can express, at the grid's weight widths (``weight_bits``:
int8 by default, 4 bits, ternary, ...). The DQN updates are SB3's own: either
more ``model.learn`` steps in which the fake-quantized network acts in the environment
(``mode="online"``), or ``DQN.train`` gradient steps on the replay buffer
(``mode="replay"``). With ``check_episodes`` the quantized network is evaluated on the
backend before, during and after QAT, and the best weights are kept, so QAT never leaves
the deployed reward on those episodes lower than it found it (DQN fine-tuning is noisy).
The third mode, ``mode="distill"``, is no DQN update: the fake-quantized network learns
the Q-values and greedy actions of the float network as it was before fine-tuning, on the
states the float policy visits and on the replay buffer (:mod:`spiking_dqn.distill`).

Straight-through updates alone do not bring the float weights closer to the grid: a
weight drifts inside its rounding bin, and one near a bin edge flips between two int8
values from update to update. After every chunk of gradient steps the weights are
therefore pulled toward their grid point, ``w += rho * (q(w) - w)`` (``grid_pull`` per
gradient step), as in the oscillation dampening of Nagel et al., "Overcoming Oscillations
in Quantization-Aware Training" (ICML 2022). The pull never moves a weight out of its
rounding bin, so it does not change the quantized network; it makes the float weights
settle on the grid, and the float and chip networks converge.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from stable_baselines3 import DQN
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import configure
from stable_baselines3.common.utils import polyak_update
from tqdm.auto import tqdm

from envs import make_vec
from spiking_dqn.distill import DISTILL_OBSERVATIONS, distill_steps, distillation_set, quantized_loss
from spiking_dqn.best_weights import best_weights
from spiking_dqn.hardware.backend import Backend, InferenceStats, get_backend
from spiking_dqn.network import SpikingQNetwork
from spiking_dqn.policies import SpikingDQNPolicy
from spiking_dqn.grid import Grid
from spiking_dqn.quantization import LambdaSpec, WeightBitsSpec, float_weights, resolve_grid
from spiking_dqn.rollouts import collect_transitions
from spiking_dqn.semantics.checks import check_int

Mode = Literal["distill", "online", "replay"]
#: The fine-tuning modes (``QATSettings.mode``, the CLI's ``--qat-mode``).
MODES: tuple[str, ...] = ("distill", "online", "replay")


@dataclass
class QATReport:
    """What :func:`quantization_aware_finetune` did.

    :param lambdas: the lambdas of the fake quantization (fixed during QAT)
    :param centered_readout: whether the readout was fake-quantized centred over the actions
    :param steps: gradient steps made
    :param learning_rate: learning rate used
    :param batch_size: minibatch size
    :param grid_pull: pull toward the grid per gradient step
    :param grid_distance_before: :meth:`Grid.distance <spiking_dqn.grid.Grid.distance>` per projection before QAT
    :param grid_distance_after: the same after QAT
    :param mean_abs_weight_change: mean ``|w_after - w_before|`` per projection
    :param int8_weights_changed: fraction of chip weights (integers at the grid's widths) that
        QAT changed, per projection
    :param collected_transitions: transitions collected to fill an empty replay buffer
    :param wall_time_s: wall time
    :param reward_before: backend reward of the quantized network before QAT (when checked)
    :param reward_after: the same after QAT (when checked)
    :param kept: False when the weights before QAT were restored: the checks found them best,
        or :func:`~spiking_dqn.pipeline.fit_to_chip` chose a program quantized from them
    :param check_inferences: backend inferences the checks ran
    :param mode: ``"distill"``, ``"online"`` or ``"replay"``
    :param weight_bits: bits per weight of each projection of the grid (``None``: 8 for every one)
    :param distill_loss_before: distill mode: the distillation loss of the quantized network before
    :param distill_loss_after: the same with the weights kept
    :param distill_states: distill mode: the states distilled on
    """

    lambdas: list[float]
    centered_readout: bool
    steps: int
    learning_rate: float
    batch_size: int
    grid_pull: float
    grid_distance_before: list[float]
    grid_distance_after: list[float]
    mean_abs_weight_change: list[float]
    int8_weights_changed: list[float]
    collected_transitions: int
    wall_time_s: float
    reward_before: float | None = None
    reward_after: float | None = None
    kept: bool = True
    mode: str = "online"
    check_inferences: int = 0
    weight_bits: list[int] | None = None
    distill_loss_before: float | None = None
    distill_loss_after: float | None = None
    distill_states: int = 0

    @property
    def grid(self) -> Grid:
        """The grid QAT trained for (deploy and snap with it)."""
        if self.weight_bits is None:
            return Grid(tuple(self.lambdas), centered_readout=self.centered_readout)
        return Grid(tuple(self.lambdas), centered_readout=self.centered_readout, weight_bits=tuple(self.weight_bits))

    def to_dict(self) -> dict[str, Any]:
        """Plain data."""
        return asdict(self)


class _HookCallback(BaseCallback):
    """Calls ``on_step(num_timesteps)`` every step and ``on_rollout_end()`` after every rollout."""

    def __init__(self, on_step: Callable[[int], None], on_rollout_end: Callable[[], None]) -> None:
        super().__init__(0)
        self._step_hook = on_step
        self._rollout_hook = on_rollout_end

    def _on_step(self) -> bool:
        self._step_hook(self.num_timesteps)
        return True

    def _on_rollout_end(self) -> None:
        self._rollout_hook()


def _ensure_logger(model: DQN) -> None:
    try:
        model.logger  # noqa: B018 - raises when learn() never ran
    except AttributeError:
        model.set_logger(configure(folder=None, format_strings=[]))


def _sync_target(policy: SpikingDQNPolicy) -> None:
    polyak_update(policy.q_net.parameters(), policy.q_net_target.parameters(), 1.0)


def _replay_steps(
    model: DQN,
    grid: Grid,
    steps: int,
    batch_size: int,
    grid_pull: float,
    target_update_interval: int,
    chunk: int,
    on_progress: Callable[[int], None],
) -> None:
    """``steps`` gradient steps on the replay buffer, pulled to the grid and target-synced between chunks."""
    policy = model.policy
    weights = [layer.weight for layer in policy.q_net.q_net.linear_layers()]
    done = 0
    while done < steps:
        n = min(chunk, steps - done)
        model.train(gradient_steps=n, batch_size=batch_size)
        grid.pull(weights, 1.0 - (1.0 - grid_pull) ** n)
        if (done + n) // target_update_interval > done // target_update_interval:
            _sync_target(policy)
        done += n
        on_progress(done)
    _sync_target(policy)


def _online_steps(
    model: DQN, grid: Grid, steps: int, batch_size: int, grid_pull: float, on_progress: Callable[[int], None]
) -> None:
    """``steps`` more environment steps of ``model.learn`` with the grid pull after every rollout."""
    if steps == 0:
        return
    weights = [layer.weight for layer in model.policy.q_net.q_net.linear_layers()]
    first = model.num_timesteps
    per_rollout = model.gradient_steps if model.gradient_steps > 0 else model.train_freq.frequency
    saved_learning_starts = model.learning_starts
    buffer = model.replay_buffer
    if buffer is None or buffer.size() < batch_size:  # a loaded model: gather some experience first
        model.learning_starts = first + min(1000, max(batch_size, steps // 4))
    hooks = _HookCallback(
        lambda num_timesteps: on_progress(num_timesteps - first),
        lambda: grid.pull(weights, 1.0 - (1.0 - grid_pull) ** per_rollout),
    )
    try:
        model.learn(steps, callback=hooks, reset_num_timesteps=False, progress_bar=False)
    finally:
        model.learning_starts = saved_learning_starts


def quantization_aware_finetune(
    model: DQN,
    lam: LambdaSpec | Grid = None,
    steps: int = 1000,
    *,
    mode: Mode = "online",
    learning_rate: float | None = None,
    batch_size: int | None = None,
    grid_pull: float = 0.002,
    target_update_interval: int = 100,
    chunk: int = 10,
    env_id: str | None = None,
    collect_steps: int | None = None,
    seed: int = 0,
    check_episodes: int = 0,
    check_seed: int = 50_000,
    check_freq: int | None = None,
    backend: str | Backend = "emulator",
    centered_readout: bool = True,
    progress_bar: bool = False,
    weight_bits: WeightBitsSpec = None,
    n_observations: int = DISTILL_OBSERVATIONS,
    observation_seed: int = 10_000,
) -> QATReport:
    """Quantization-aware DQN fine-tuning of a model (see module docstring). Changes the model in place.

    Three modes:

    * ``"online"`` (default): ``steps`` more environment steps of ``model.learn`` with the
      fake-quantized network acting and learning (the model's own ``train_freq``,
      ``gradient_steps`` and target updates, at its final exploration rate), so the
      quantized network itself gathers its experience;
    * ``"replay"``: ``steps`` gradient steps (``DQN.train``) on the replay buffer, with a hard
      target update every ``target_update_interval`` of them; no environment interaction;
    * ``"distill"``: ``steps`` Adam steps of distillation from the float network before
      fine-tuning (:mod:`spiking_dqn.distill`) on minibatches of the float policy's states
      and the replay buffer's; no DQN update, no exploration.

    :param model: an SB3 ``DQN`` with ``SpikingDQNPolicy``
    :param lam: the grid, or a lambda specification resolved once from the current weights
        (:func:`~spiking_dqn.quantization.resolve_grid`) and kept fixed; deploy and snap
        with the returned ``report.grid`` afterwards
    :param steps: environment steps (online) or gradient steps (replay, distill)
    :param mode: ``"online"``, ``"replay"`` or ``"distill"``
    :param learning_rate: learning rate; default the model's final one (online, distill) or
        a tenth of it (replay); for a schedule that ends at 0, a tenth of its first rate stands for the final one
    :param batch_size: minibatch size of the replay and distill modes; default the model's
    :param grid_pull: fraction of the way to its grid point each weight moves per gradient
        step (0 disables the pull: plain straight-through QAT)
    :param target_update_interval: replay mode: gradient steps between hard target updates
    :param chunk: replay mode: gradient steps per ``DQN.train`` call (the pull and target
        update happen between chunks)
    :param env_id: environment of the online mode when the model has none, of the
        transitions collected when a replay buffer is too small, and of the checks
    :param collect_steps: replay mode: transitions to collect into a too small buffer
        (default ``max(2000, 10 * batch_size)``)
    :param seed: seed of the environment made here (and, for a model without one, of its
        exploration and minibatch sampling; of the distill mode's minibatches)
    :param check_episodes: when > 0 (needs ``env_id``), the quantized network is evaluated
        on ``backend`` over these many episodes (seeds from ``check_seed``) before QAT, every
        ``check_freq`` steps and at the end, and the best weights are kept: QAT never leaves
        that reward lower than before (``report.kept`` is False when the weights before QAT
        were the best)
    :param check_seed: seed of the first check episode
    :param check_freq: steps between checks (default ``steps // 4``)
    :param backend: backend of the checks (name or object)
    :param centered_readout: fake-quantize the readout centred over the actions, as
        :func:`~spiking_dqn.quantization.quantize_network` deploys it by default (ignored
        when ``lam`` is a :class:`Grid`)
    :param progress_bar: show a progress bar over the steps
    :param weight_bits: bits per weight to train for, 2..8, one for every projection or one
        per projection (e.g. 4; 2 is ternary), used when ``lam`` is resolved here
        (:func:`~spiking_dqn.quantization.resolve_grid`: ``"auto"`` then maps its percentile
        to the width's largest weight); ``None``: the network's own grid's widths, else 8.
        With a :class:`Grid`, the grid's widths are used and a different value is an error
    :param n_observations: distill mode: states of the float policy's greedy episodes (with ``env_id``)
    :param observation_seed: distill mode: seed of the first of those episodes
    :raises TypeError: the model's policy is not a ``SpikingDQNPolicy``
    :raises ValueError: bad arguments; no environment where one is needed
    """
    start = time.perf_counter()
    policy = getattr(model, "policy", None)
    if not isinstance(policy, SpikingDQNPolicy):
        raise TypeError(f"quantization_aware_finetune needs a DQN with SpikingDQNPolicy, got {type(model).__name__}")
    check_qat_values(steps, mode, grid_pull, target_update_interval, learning_rate)
    check_int(chunk, "chunk", minimum=1)
    if check_episodes and env_id is None:
        raise ValueError("check_episodes needs env_id")
    net: SpikingQNetwork = policy.q_net.q_net
    target: SpikingQNetwork = policy.q_net_target.q_net
    grid = resolve_grid(net, lam, centered_readout, weight_bits=weight_bits)  # what deployment will use
    batch_size = int(batch_size or model.batch_size)
    lr = _learning_rate(model, mode, learning_rate)
    collected = _prepare_experience(model, mode, env_id, batch_size, collect_steps, seed)
    data = distillation_set(model, net, env_id, n_observations, observation_seed) if mode == "distill" else None
    loss_before = None if data is None else quantized_loss(net, grid, data)
    _ensure_logger(model)
    check_cost = InferenceStats()
    best = best_weights(policy, grid, env_id, check_episodes, check_seed, get_backend(backend), check_cost)
    every = max(1, int(check_freq or max(1, steps // 4)))
    bar = tqdm(total=steps, desc=f"QAT ({mode})", unit="step", disable=not progress_bar)
    checked = {"last": 0}

    def on_progress(done: int) -> None:
        bar.update(done - bar.n)
        if best is not None and done // every > checked["last"] // every and done < steps:
            best.consider()
        checked["last"] = done

    w_before = float_weights(net)
    before = grid.distance(w_before)
    saved_schedule = model.lr_schedule
    model.lr_schedule = lambda _progress: lr
    net.set_fake_quantization(grid)
    target.set_fake_quantization(grid)
    try:
        _sync_target(policy)
        if mode == "replay":
            _replay_steps(model, grid, steps, batch_size, float(grid_pull), target_update_interval, chunk, on_progress)
        elif data is not None:
            distill_steps(net, grid, data, steps, lr, batch_size, float(grid_pull), chunk, seed, on_progress)
            _sync_target(policy)
        else:
            _online_steps(model, grid, steps, batch_size, float(grid_pull), on_progress)
    finally:
        bar.close()
        net.set_fake_quantization(None)
        target.set_fake_quantization(None)
        model.lr_schedule = saved_schedule
    if best is not None:
        best.consider()
        best.restore()
    w_after = float_weights(net)
    return QATReport(
        lambdas=list(grid.lambdas),
        centered_readout=grid.centered_readout,
        steps=int(steps),
        learning_rate=lr,
        batch_size=batch_size,
        grid_pull=float(grid_pull),
        grid_distance_before=before,
        grid_distance_after=grid.distance(w_after),
        mean_abs_weight_change=[float(np.mean(np.abs(a - b))) for a, b in zip(grid.deployed(w_after), grid.deployed(w_before))],
        int8_weights_changed=grid.changed(w_before, w_after),
        collected_transitions=collected,
        wall_time_s=time.perf_counter() - start,
        reward_before=best.reward_before if best else None,
        reward_after=best.reward if best else None,
        kept=best.from_qat if best else True,
        mode=mode,
        check_inferences=check_cost.inferences,
        weight_bits=list(grid.weight_bits),
        distill_loss_before=loss_before,
        distill_loss_after=None if data is None else quantized_loss(net, grid, data),
        distill_states=0 if data is None else len(data.states),
    )


def _learning_rate(model: DQN, mode: Mode, learning_rate: float | None) -> float:
    """The given learning rate, else the model's final one (a tenth of it in replay mode).

    A schedule that ends at 0 (rl-zoo's ``lin_<value>``) has no final rate to fine-tune with:
    a tenth of its initial one stands for it.

    :raises ValueError: not positive
    """
    final_lr = float(model.lr_schedule(0.0))
    if not final_lr > 0:
        final_lr = 0.1 * float(model.lr_schedule(1.0))
    lr = float(learning_rate) if learning_rate is not None else (0.1 * final_lr if mode == "replay" else final_lr)
    if not lr > 0:
        raise ValueError(f"learning_rate must be positive, got {lr}")
    return lr


def check_qat_values(
    steps: int,
    mode: str,
    grid_pull: float,
    target_update_interval: int,
    learning_rate: float | None = None,
) -> None:
    """Refuse QAT values out of range (:func:`quantization_aware_finetune` and ``QATSettings`` check with it).

    :raises ValueError: a mode other than ``"distill"``/``"online"``/``"replay"``, negative steps, a pull
        outside [0, 1], a target update interval below 1, a learning rate that is not positive
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    check_int(steps, "steps", minimum=0)
    if not 0.0 <= float(grid_pull) <= 1.0:
        raise ValueError(f"grid_pull must be in [0, 1], got {grid_pull}")
    check_int(target_update_interval, "target_update_interval", minimum=1)
    if learning_rate is not None and not float(learning_rate) > 0:
        raise ValueError(f"learning_rate must be positive, got {learning_rate}")


def _prepare_experience(
    model: DQN, mode: Mode, env_id: str | None, batch_size: int, collect_steps: int | None, seed: int
) -> int:
    """Replay mode: fill a too small buffer from ``env_id``; online mode: give a model without an env one.

    :return: the transitions collected
    """
    if mode == "replay":
        buffer = model.replay_buffer
        if buffer is None or buffer.size() < batch_size:
            if env_id is None:
                raise ValueError(
                    "the model's replay buffer holds fewer transitions than a batch; pass env_id to collect some "
                    "(or run QAT from the HardwareAwareFineTuning callback at the end of training)"
                )
            return collect_transitions(model, env_id, collect_steps or max(2000, 10 * batch_size), seed=seed)
    elif mode == "online" and model.get_env() is None:
        if env_id is None:
            raise ValueError("online QAT needs an environment: the model has none, pass env_id")
        model.set_env(make_vec(env_id, n_envs=model.n_envs, seed=seed))
        model.set_random_seed(seed)  # exploration and minibatches of a loaded model: reproducible
    return 0
