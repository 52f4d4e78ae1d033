"""Quantization-aware fine-tuning (QAT) of a spiking DQN for the int8 chip.

:func:`quantization_aware_finetune` continues DQN training of a model with its Q-network
(and target network) in fake-quantized mode
(:meth:`~spiking_dqn.network.SpikingQNetwork.set_fake_quantization`): the forward pass
computes with the chip's weights ``clip(rint(lambda * w), -127, 127) / lambda`` and the
gradient reaches the float weights through a straight-through estimator, so the float
weights adapt to what the int8 grid can express. The DQN updates are SB3's own: either
more ``model.learn`` steps in which the fake-quantized network acts in the environment
(``mode="online"``), or ``DQN.train`` gradient steps on the replay buffer
(``mode="replay"``). With ``check_episodes`` the quantized network is evaluated on the
backend before, during and after QAT, and the best weights are kept, so QAT never leaves
the deployed reward on those episodes lower than it found it (DQN fine-tuning is noisy).

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

import copy
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.utils import polyak_update

from spiking_dqn.network import SpikingQNetwork
from spiking_dqn.quantization import LambdaSpec, center_readout, network_lambdas


def _weights(net: SpikingQNetwork, centered_readout: bool = True) -> list[np.ndarray]:
    """The weights the chip gets, in float units: the readout centered over the actions by default."""
    weights = [layer.weight.detach().cpu().numpy().astype(np.float32) for layer in net.linear_layers()]
    if centered_readout and net.n_actions > 1:
        weights[-1] = weights[-1] - weights[-1].mean(axis=0, keepdims=True)
    return weights


def grid_distance(net: SpikingQNetwork, lambdas: list[float], centered_readout: bool = True) -> list[float]:
    """Mean distance of each projection's float weights to the int8 grid, in grid steps.

    For projection ``k``: ``mean |lambda_k * w - clip(rint(lambda_k * w), -127, 127)|``;
    0 when every weight sits on the grid, about 0.25 for weights spread evenly over the
    rounding bins (clipped weights count with their distance to +-127). The readout's
    weights are taken centered over the actions, as the chip gets them (by default).
    """
    out = []
    for w, lam in zip(_weights(net, centered_readout), lambdas):
        scaled = lam * w.astype(np.float64)
        out.append(float(np.mean(np.abs(scaled - np.clip(np.rint(scaled), -127, 127)))))
    return out


def pull_to_grid(net: SpikingQNetwork, lambdas: list[float], fraction: float, centered_readout: bool = True) -> None:
    """Move every weight a ``fraction`` of the way to its grid point (in place).

    The readout moves its centered weights (its mean over the actions stays as it is).
    """
    if fraction <= 0:
        return
    layers = net.linear_layers()
    with th.no_grad():
        for k, (layer, lam) in enumerate(zip(layers, lambdas)):
            w = layer.weight
            common = (
                w.mean(dim=0, keepdim=True)
                if centered_readout and k == len(layers) - 1 and net.n_actions > 1
                else th.zeros_like(w[:1])
            )
            centered = w - common
            q = th.clamp(th.round(centered * lam), -127, 127) / lam
            w.add_(fraction * (q - centered))


@dataclass
class QATReport:
    """What :func:`quantization_aware_finetune` did.

    :param lambdas: the lambdas of the fake quantization (fixed during QAT)
    :param steps: gradient steps made
    :param learning_rate: learning rate used
    :param batch_size: minibatch size
    :param grid_pull: pull toward the grid per gradient step
    :param grid_distance_before: :func:`grid_distance` per projection before QAT
    :param grid_distance_after: the same after QAT
    :param mean_abs_weight_change: mean ``|w_after - w_before|`` per projection
    :param int8_weights_changed: fraction of int8 weights that QAT changed, per projection
    :param collected_transitions: transitions collected to fill an empty replay buffer
    :param wall_time_s: wall time
    :param reward_before: backend reward of the quantized network before QAT (when checked)
    :param reward_after: the same after QAT (when checked)
    :param kept: False when the checks found the weights before QAT best (they were restored)
    :param mode: ``"online"`` or ``"replay"``
    """

    lambdas: list[float]
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

    def to_dict(self) -> dict[str, Any]:
        """Plain data."""
        return asdict(self)


def _ensure_logger(model: Any) -> None:
    try:
        model.logger  # noqa: B018 - raises when learn() never ran
    except AttributeError:
        from stable_baselines3.common.logger import configure

        model.set_logger(configure(folder=None, format_strings=[]))


def collect_transitions(model: Any, env_id: str, n_steps: int, seed: int = 0) -> int:
    """Fill the replay buffer with ``n_steps`` epsilon-greedy transitions of the model's own policy.

    Used when a loaded model has an empty replay buffer. The model's current
    ``exploration_rate`` (the final epsilon of training for a loaded model) applies.

    :return: transitions added
    """
    from envs import make_vec

    env = make_vec(env_id, n_envs=model.n_envs, seed=seed)
    try:
        obs = env.reset()
        added = 0
        while added < n_steps:
            actions, _ = model.predict(obs, deterministic=False)
            new_obs, rewards, dones, infos = env.step(actions)
            next_obs = np.array(new_obs, copy=True)
            for i, done in enumerate(dones):
                if done and infos[i].get("terminal_observation") is not None:
                    next_obs[i] = infos[i]["terminal_observation"]
            model.replay_buffer.add(obs, next_obs, np.asarray(actions), rewards, dones, infos)
            obs = new_obs
            added += env.num_envs
        return added
    finally:
        env.close()


class _HookCallback(BaseCallback):
    """Calls ``on_step(num_timesteps)`` every step and ``on_rollout_end()`` after every rollout."""

    def __init__(self, on_step: Any, on_rollout_end: Any) -> None:
        super().__init__(0)
        self._step_hook = on_step
        self._rollout_hook = on_rollout_end

    def _on_step(self) -> bool:
        self._step_hook(self.num_timesteps)
        return True

    def _on_rollout_end(self) -> None:
        self._rollout_hook()


def quantization_aware_finetune(
    model: Any,
    lam: LambdaSpec = "auto",
    steps: int = 1000,
    *,
    mode: Literal["online", "replay"] = "online",
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
    backend: Any = "emulator",
    centered_readout: bool = True,
) -> QATReport:
    """Quantization-aware DQN fine-tuning of a model (see module docstring). Changes the model in place.

    Two modes:

    * ``"online"`` (default): ``steps`` more environment steps of ``model.learn`` with the
      fake-quantized network acting and learning (the model's own ``train_freq``,
      ``gradient_steps`` and target updates, at its final exploration rate), so the int8
      network itself gathers its experience;
    * ``"replay"``: ``steps`` gradient steps (``DQN.train``) on the replay buffer, with a hard
      target update every ``target_update_interval`` of them; no environment interaction.

    :param model: an SB3 ``DQN`` with ``SpikingDQNPolicy``
    :param lam: lambda specification (as in :func:`~spiking_dqn.quantization.resolve_lambdas`),
        resolved once from the current weights and kept fixed; quantize with the returned
        ``report.lambdas`` afterwards
    :param steps: environment steps (online) or gradient steps (replay)
    :param mode: ``"online"`` or ``"replay"``
    :param learning_rate: learning rate; default the model's final one (online) or a tenth
        of it (replay)
    :param batch_size: minibatch size of the replay mode; default the model's
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
        exploration and minibatch sampling)
    :param check_episodes: when > 0 (needs ``env_id``), the quantized network is evaluated
        on ``backend`` over these many episodes (seeds from ``check_seed``) before QAT, every
        ``check_freq`` steps and at the end, and the best weights are kept: QAT never leaves
        that reward lower than before (``report.kept`` is False when the weights before QAT
        were the best)
    :param check_seed: seed of the first check episode
    :param check_freq: steps between checks (default ``steps // 4``)
    :param backend: backend of the checks (name or object)
    :param centered_readout: fake-quantize the readout as :func:`quantize_network` deploys
        it by default (centered over the actions); quantize with the same setting afterwards
    :raises ValueError: bad arguments; no environment where one is needed
    """
    from spiking_dqn.policies import SpikingDQNPolicy
    from spiking_dqn.quantization import quantize_network
    from spiking_dqn.search.episodes import backend_reward

    start = time.perf_counter()
    policy = getattr(model, "policy", None)
    if not isinstance(policy, SpikingDQNPolicy):
        raise TypeError(f"quantization_aware_finetune needs a DQN with SpikingDQNPolicy, got {type(model).__name__}")
    if mode not in ("online", "replay"):
        raise ValueError(f"mode must be 'online' or 'replay', got {mode!r}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    if not 0.0 <= float(grid_pull) <= 1.0:
        raise ValueError(f"grid_pull must be in [0, 1], got {grid_pull}")
    if target_update_interval < 1 or chunk < 1:
        raise ValueError("target_update_interval and chunk must be positive")
    if check_episodes and env_id is None:
        raise ValueError("check_episodes needs env_id")
    net: SpikingQNetwork = policy.q_net.q_net
    target: SpikingQNetwork = policy.q_net_target.q_net
    deployed = center_readout(net) if centered_readout and net.n_actions > 1 else net
    lambdas = network_lambdas(deployed, lam)  # what quantize_network will use
    batch_size = int(batch_size or model.batch_size)
    final_lr = float(model.lr_schedule(0.0))
    lr = float(learning_rate) if learning_rate is not None else (final_lr if mode == "online" else 0.1 * final_lr)
    if not lr > 0:
        raise ValueError(f"learning_rate must be positive, got {lr}")

    collected = 0
    if mode == "replay":
        buffer = getattr(model, "replay_buffer", None)
        if buffer is None or buffer.size() < batch_size:
            if env_id is None:
                raise ValueError(
                    "the model's replay buffer holds fewer transitions than a batch; pass env_id to collect some "
                    "(or run QAT from the HardwareAwareFineTuning callback at the end of training)"
                )
            collected = collect_transitions(model, env_id, collect_steps or max(2000, 10 * batch_size), seed=seed)
    elif model.get_env() is None:
        if env_id is None:
            raise ValueError("online QAT needs an environment: the model has none, pass env_id")
        from envs import make_vec

        model.set_env(make_vec(env_id, n_envs=model.n_envs, seed=seed))
        model.set_random_seed(seed)  # exploration and minibatches of a loaded model: reproducible
    _ensure_logger(model)

    def check() -> float:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program, _ = quantize_network(net, lambdas, centered=centered_readout)  # = the fake-quantized forward
        return backend_reward(program, env_id, check_episodes, seed=check_seed, backend=backend).mean_reward

    reward_before = check() if check_episodes else None
    best = {"reward": reward_before, "state": None, "qat": False}
    if check_episodes:
        best["state"] = (copy.deepcopy(policy.state_dict()), copy.deepcopy(policy.optimizer.state_dict()))

    def consider() -> None:
        reward = check()
        if best["reward"] is None or reward >= best["reward"]:
            best.update(reward=reward, qat=True,
                        state=(copy.deepcopy(policy.state_dict()), copy.deepcopy(policy.optimizer.state_dict())))

    every = max(1, int(check_freq or max(1, steps // 4)))
    before = grid_distance(net, lambdas, centered_readout)
    w_before = [w.copy() for w in _weights(net, centered_readout)]
    saved_schedule = model.lr_schedule
    model.lr_schedule = lambda _progress: lr
    net.set_fake_quantization(lambdas, centered_readout=centered_readout)
    target.set_fake_quantization(lambdas, centered_readout=centered_readout)
    try:
        polyak_update(policy.q_net.parameters(), policy.q_net_target.parameters(), 1.0)
        if mode == "replay":
            done = 0
            while done < steps:
                n = min(chunk, steps - done)
                model.train(gradient_steps=n, batch_size=batch_size)
                pull_to_grid(net, lambdas, 1.0 - (1.0 - float(grid_pull)) ** n, centered_readout)
                if (done + n) // target_update_interval > done // target_update_interval:
                    polyak_update(policy.q_net.parameters(), policy.q_net_target.parameters(), 1.0)
                if check_episodes and (done + n) // every > done // every and done + n < steps:
                    consider()
                done += n
            polyak_update(policy.q_net.parameters(), policy.q_net_target.parameters(), 1.0)
        elif steps > 0:
            first = model.num_timesteps
            per_rollout = model.gradient_steps if model.gradient_steps > 0 else model.train_freq.frequency
            saved_learning_starts = model.learning_starts
            buffer = getattr(model, "replay_buffer", None)
            if buffer is None or buffer.size() < batch_size:  # a loaded model: gather some experience first
                model.learning_starts = first + min(1000, max(batch_size, steps // 4))

            def on_step(num_timesteps: int) -> None:
                done = num_timesteps - first
                if check_episodes and done % every == 0 and done < steps:
                    consider()

            hooks = _HookCallback(
                on_step, lambda: pull_to_grid(net, lambdas, 1.0 - (1.0 - grid_pull) ** per_rollout, centered_readout)
            )
            try:
                model.learn(steps, callback=hooks, reset_num_timesteps=False, progress_bar=False)
            finally:
                model.learning_starts = saved_learning_starts
    finally:
        net.set_fake_quantization(None)
        target.set_fake_quantization(None)
        model.lr_schedule = saved_schedule
    reward_after = None
    kept = True
    if check_episodes:
        consider()
        reward_after = best["reward"]
        state, optimizer_state = best["state"]
        policy.load_state_dict(state)
        policy.optimizer.load_state_dict(optimizer_state)
        kept = bool(best["qat"])
    w_after = _weights(net, centered_readout)
    changed = [
        float(np.mean(np.clip(np.rint(lam * a), -127, 127) != np.clip(np.rint(lam * b), -127, 127)))
        for a, b, lam in zip(w_after, w_before, lambdas)
    ]
    return QATReport(
        lambdas=list(lambdas),
        steps=int(steps),
        learning_rate=lr,
        batch_size=batch_size,
        grid_pull=float(grid_pull),
        grid_distance_before=before,
        grid_distance_after=grid_distance(net, lambdas, centered_readout),
        mean_abs_weight_change=[float(np.mean(np.abs(a - b))) for a, b in zip(w_after, w_before)],
        int8_weights_changed=changed,
        collected_transitions=collected,
        wall_time_s=time.perf_counter() - start,
        reward_before=reward_before,
        reward_after=reward_after,
        kept=kept,
        mode=mode,
    )


def fake_quantized_copy(net: SpikingQNetwork, lambdas: list[float], centered_readout: bool = True) -> SpikingQNetwork:
    """A copy of ``net`` with fake quantization switched on (for checks)."""
    twin = copy.deepcopy(net)
    twin.set_fake_quantization(lambdas, centered_readout=centered_readout)
    return twin


def snap_to_grid(net: SpikingQNetwork, lambdas: list[float], centered_readout: bool = True) -> None:
    """Set the float weights to the fake-quantized ones (in place).

    After QAT the float weights sit near, not on, the int8 grid; the network that was
    trained is the fake-quantized one. Snapping makes the plain float network compute
    exactly that network, so it is the float twin of the chip program quantized from it
    with the same ``lambdas`` (a two-action centered readout snaps exactly). The lambdas
    are recorded in the network (``net.grid_lambdas``, saved with the model), and
    ``lam="auto"`` quantizes it with them from then on.

    :param net: the network to change
    :param lambdas: one lambda per projection (e.g. ``QATReport.lambdas``)
    :param centered_readout: as in :meth:`SpikingQNetwork.set_fake_quantization`
    """
    twin = fake_quantized_copy(net, lambdas, centered_readout=centered_readout)
    with th.no_grad():
        for layer, weight in zip(net.linear_layers(), twin._layer_weights()):
            layer.weight.copy_(weight.detach())
    net.record_grid(lambdas)


def snap_model_to_grid(model: Any, lambdas: list[float], centered_readout: bool = True) -> None:
    """:func:`snap_to_grid` for an SB3 ``DQN``: snap the Q-network and make the target network a copy of it.

    What the recipes, the callback and the CLI do with the weights QAT kept: the saved
    model is then the float twin of the chip program, target network included.

    :param model: an SB3 ``DQN`` with ``SpikingDQNPolicy``
    :param lambdas: one lambda per projection (e.g. ``QATReport.lambdas``)
    :param centered_readout: as in :func:`snap_to_grid`
    """
    policy = model.policy
    snap_to_grid(policy.q_net.q_net, lambdas, centered_readout=centered_readout)
    policy.q_net_target.load_state_dict(policy.q_net.state_dict())
