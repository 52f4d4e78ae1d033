"""THE episode loop: greedy episodes of a float spiking Q-network or of a chip program on a backend.

Every reward and every cost figure of an evaluation, a threshold search, a calibration
recording, a QAT check, a recipe or a benchmark comes from here: :func:`run_episodes`
plays ``n_episodes`` episodes at once, one environment per episode, and asks the policy
for the actions of all running episodes in one batch per environment step, so an
evaluation of 10 episodes on a backend costs one backend call per step of the longest
episode, not one per step of every episode. Episode ``i`` is seeded with ``seed + i``, so
two policies evaluated with the same ``seed`` face the same episodes (common random
numbers), and the result does not depend on how the episodes are batched.

:func:`backend_reward` and :func:`float_reward` wrap it for a chip program and for the
float network; :class:`~spiking_dqn.hardware.backend.InferenceStats` adds up what a backend
spent: inferences (observations run), backend calls (batches), episodes, spikes,
synaptic events and wall time. :func:`collect_transitions` fills a replay buffer with the
model's own epsilon-greedy steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3 import DQN
from stable_baselines3.common.policies import BasePolicy
from torch import nn

from envs import make_vec
from spiking_dqn.hardware import ChipProgram
from spiking_dqn.hardware.backend import Backend, InferenceStats, get_backend
from spiking_dqn.hardware_policy import HardwarePolicy
from spiking_dqn.network import SpikingQNetwork
from spiking_dqn.semantics.checks import check_int

ActFn = Callable[[np.ndarray], np.ndarray]


@dataclass
class EpisodeResult:
    """Rewards of a set of episodes, and what they cost on the backend (if any).

    :param rewards: total reward of each episode
    :param lengths: steps of each episode
    :param cost: backend cost of these episodes (zeros for a float policy)
    """

    rewards: list[float]
    lengths: list[int]
    cost: InferenceStats = field(default_factory=InferenceStats)

    @property
    def mean_reward(self) -> float:
        """Mean episode reward."""
        return float(np.mean(self.rewards))

    @property
    def std_reward(self) -> float:
        """Standard deviation of the episode rewards."""
        return float(np.std(self.rewards))

    @property
    def synaptic_events_per_inference(self) -> float:
        """Mean synaptic events per backend inference (0 when none ran)."""
        return self.cost.synaptic_events / self.cost.inferences if self.cost.inferences else 0.0

    @property
    def hidden_spikes_per_inference(self) -> float:
        """Mean hidden-layer spikes per backend inference (0 when none ran)."""
        return self.cost.hidden_spikes / self.cost.inferences if self.cost.inferences else 0.0

    def summary(self) -> dict[str, Any]:
        """Plain-data summary (means and costs, not the per-episode lists)."""
        return {
            "mean_reward": self.mean_reward,
            "std_reward": self.std_reward,
            "min_reward": float(np.min(self.rewards)),
            "episodes": len(self.rewards),
            "synaptic_events_per_inference": self.synaptic_events_per_inference,
            "hidden_spikes_per_inference": self.hidden_spikes_per_inference,
            **{f"cost_{k}": v for k, v in self.cost.to_dict().items()},
        }


def run_episodes(
    act: ActFn,
    env_id: str,
    n_episodes: int,
    seed: int = 0,
    max_parallel: int | None = None,
    env_kwargs: dict[str, Any] | None = None,
    with_episodes: bool = False,
) -> tuple[list[float], list[int]]:
    """Play ``n_episodes`` episodes with a batched greedy policy.

    :param act: maps a batch of observations ``(n, d)`` (float32) to actions ``(n,)``; with
        ``with_episodes``, ``act(obs, episodes)`` also gets the index of each row's episode
    :param env_id: Gymnasium id (the registered ``TimeLimit`` applies)
    :param n_episodes: number of episodes; episode ``i`` is reset with ``seed + i``
    :param seed: seed of the first episode
    :param max_parallel: at most this many episodes run at once (all of them by default)
    :param env_kwargs: passed to ``gymnasium.make``
    :param with_episodes: pass the episode indices to ``act`` (for policies that keep state
        per episode, such as adaptive thresholds)
    :return: the reward and the length of every episode, in episode order
    """
    n_episodes = check_int(n_episodes, "n_episodes", minimum=1)
    width = n_episodes if max_parallel is None else max(1, min(int(max_parallel), n_episodes))
    rewards = [0.0] * n_episodes
    lengths = [0] * n_episodes
    for start in range(0, n_episodes, width):
        idx = list(range(start, min(start + width, n_episodes)))
        envs = [gym.make(env_id, **(env_kwargs or {})) for _ in idx]
        try:
            obs = [env.reset(seed=seed + i)[0] for env, i in zip(envs, idx)]
            active = list(range(len(idx)))
            while active:
                batch = np.stack([np.asarray(obs[j], dtype=np.float32).ravel() for j in active])
                if with_episodes:
                    actions = np.asarray(act(batch, [idx[j] for j in active])).reshape(-1)  # type: ignore[call-arg]
                else:
                    actions = np.asarray(act(batch)).reshape(-1)
                still = []
                for j, a in zip(active, actions):
                    obs[j], r, terminated, truncated, _ = envs[j].step(int(a))
                    rewards[idx[j]] += float(r)
                    lengths[idx[j]] += 1
                    if not (terminated or truncated):
                        still.append(j)
                active = still
        finally:
            for env in envs:
                env.close()
    return rewards, lengths


def backend_reward(
    program: ChipProgram | HardwarePolicy,
    env_id: str,
    n_episodes: int = 10,
    seed: int = 0,
    backend: str | Backend = "emulator",
    max_parallel: int | None = None,
    counter: InferenceStats | None = None,
) -> EpisodeResult:
    """Reward of a chip program on a backend over ``n_episodes`` greedy episodes.

    The episodes run side by side; each environment step of the running episodes is one
    backend call on their observations. The cost (inferences, backend calls, episodes,
    synaptic events, wall time) is returned in ``result.cost`` and, when ``counter`` is
    given, added to it.

    :param program: the chip program, or a :class:`~spiking_dqn.hardware_policy.HardwarePolicy`
        (run with its backend, threshold scale and threshold adaptation, each episode with
        its own adaptation state; ``backend`` is then ignored)
    :param env_id: Gymnasium id
    :param n_episodes: episodes; episode ``i`` is reset with ``seed + i``
    :param seed: seed of the first episode
    :param backend: backend name or backend object (``run(program, obs) -> BackendResult``)
    :param max_parallel: at most this many episodes per backend batch
    :param counter: a counter to add the cost to
    """
    cost = InferenceStats()
    if isinstance(program, HardwarePolicy):
        policy = program

        def act(obs: np.ndarray, episodes: list[int] | None = None) -> np.ndarray:
            result = policy.run(obs, episodes=episodes)
            cost.add_result(result)
            return result.actions

    else:
        runner = get_backend(backend)

        def act(obs: np.ndarray, episodes: list[int] | None = None) -> np.ndarray:
            result = runner.run(program, obs)
            cost.add_result(result)
            return result.actions

    start = time.perf_counter()
    rewards, lengths = run_episodes(
        act, env_id, n_episodes, seed=seed, max_parallel=max_parallel, with_episodes=isinstance(program, HardwarePolicy)
    )
    cost.wall_time_s = time.perf_counter() - start
    cost.episodes = len(rewards)
    if counter is not None:
        counter.add(cost)
    return EpisodeResult(rewards, lengths, cost)


def q_network(model: DQN | BasePolicy | nn.Module) -> SpikingQNetwork:
    """The :class:`~spiking_dqn.network.SpikingQNetwork` inside an SB3 ``DQN``, its policy, its Q-net, or the network.

    :param model: an SB3 ``DQN`` with ``SpikingDQNPolicy``, its policy, its ``q_net``, or the network itself
    :raises TypeError: there is no spiking Q-network in it
    """
    obj = model
    for attr in ("policy", "q_net", "q_net"):
        if isinstance(obj, SpikingQNetwork):
            return obj
        obj = getattr(obj, attr, obj)
    if not isinstance(obj, SpikingQNetwork):
        raise TypeError(
            "expected an SB3 DQN with spiking_dqn.SpikingDQNPolicy, its policy, or a SpikingQNetwork; "
            f"got {type(model).__name__}"
        )
    return obj


def float_reward(model: DQN | SpikingQNetwork, env_id: str, n_episodes: int = 100, seed: int = 0) -> EpisodeResult:
    """Reward of the float spiking Q-network (greedy) over the same episodes as :func:`backend_reward`.

    :param model: an SB3 ``DQN`` with ``SpikingDQNPolicy``, its policy, or a ``SpikingQNetwork``
    :param env_id: Gymnasium id
    :param n_episodes: episodes; episode ``i`` is reset with ``seed + i``
    :param seed: seed of the first episode
    """
    net = q_network(model)
    device = next(net.parameters()).device

    def act(obs: np.ndarray) -> np.ndarray:
        with th.no_grad():
            return net(th.as_tensor(obs, device=device)).argmax(1).cpu().numpy()

    start = time.perf_counter()
    rewards, lengths = run_episodes(act, env_id, n_episodes, seed=seed)
    cost = InferenceStats(episodes=len(rewards), wall_time_s=time.perf_counter() - start)
    return EpisodeResult(rewards, lengths, cost)


def record_observations(
    model: DQN | SpikingQNetwork, env_id: str, n_observations: int = 256, seed: int = 10_000, n_episodes: int = 4
) -> np.ndarray:
    """Observations visited by the float policy (greedy), for calibration.

    Plays episodes of the float network on the host (no backend), ``n_episodes`` at a time
    until at least ``n_observations`` states were visited (at most 100 rounds), and draws
    ``n_observations`` of the visited states evenly over all of them.

    :param model: an SB3 ``DQN`` with ``SpikingDQNPolicy``, its policy, or a ``SpikingQNetwork``
    :param env_id: Gymnasium id
    :param n_observations: observations to return
    :param seed: seed of the first episode
    :param n_episodes: episodes per round
    :return: ``(n_observations, d)`` float32
    """
    if n_observations < 1:
        raise ValueError(f"n_observations must be positive, got {n_observations}")
    net = q_network(model)
    device = next(net.parameters()).device
    seen: list[np.ndarray] = []

    def act(obs: np.ndarray) -> np.ndarray:
        seen.append(obs.copy())
        with th.no_grad():
            return net(th.as_tensor(obs, device=device)).argmax(1).cpu().numpy()

    n_episodes = check_int(n_episodes, "n_episodes", minimum=1)
    for round_ in range(100):
        run_episodes(act, env_id, n_episodes, seed=seed + round_ * n_episodes)
        if sum(len(o) for o in seen) >= n_observations:
            break
    all_obs = np.concatenate(seen).astype(np.float32)
    if len(all_obs) <= n_observations:
        return all_obs
    pick = np.linspace(0, len(all_obs) - 1, n_observations).round().astype(int)
    return all_obs[pick]


def collect_transitions(model: DQN, env_id: str, n_steps: int, seed: int = 0) -> int:
    """Fill a DQN's replay buffer with ``n_steps`` epsilon-greedy transitions of its own policy.

    Used when a loaded model has an empty replay buffer. The model's current
    ``exploration_rate`` (the final epsilon of training for a loaded model) applies.

    :param model: an SB3 ``DQN``
    :param env_id: Gymnasium id (a vectorised env with the model's ``n_envs``)
    :param n_steps: transitions to add (rounded up to whole vectorised steps)
    :param seed: seed of the environments
    :return: transitions added
    """
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
